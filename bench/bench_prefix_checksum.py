"""The prefix store's per-row checksums (issue 20, item 6): what they add to a trial's write and first read.

One entry the size of a demo-vit input group (1,347 probe samples × 65 tokens × width 64, float32, in batches of 32)
is written (`PrefixWriter.write` + `commit`, which computes the checksums), read the first time in a process (which
verifies them) and read again (already verified: no checksum), and the checksums alone are timed on the same rows.
Medians over `--repeats`. Prints a table.

    python bench/bench_prefix_checksum.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from toast.capture._prefix import PrefixStore, _row_checksums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1347)
    parser.add_argument("--tokens", type=int, default=65)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    batches = [
        torch.randn(min(args.batch, args.samples - s), args.tokens, args.width)
        for s in range(0, args.samples, args.batch)
    ]
    times: dict[str, list[float]] = {
        "write + commit": [],
        "first read (verified)": [],
        "read again": [],
        "checksums alone": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            name = f"eval-{r:024x}-o"
            store = PrefixStore(Path(tmp) / "prefix" / "key", cap_bytes=10**10)
            start = time.perf_counter()
            writer = store.writer(name, torch.float32, batches=len(batches))
            for b in batches:
                writer.write(b)
            writer.commit()
            times["write + commit"].append(time.perf_counter() - start)
            fresh = PrefixStore(store.directory, 10**10)
            start = time.perf_counter()
            fresh.read(name, torch.float32, args.width)
            times["first read (verified)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            fresh.read(name, torch.float32, args.width)
            times["read again"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for b in batches:
                _row_checksums(b.numpy().reshape(-1), b.shape[0])
            times["checksums alone"].append(time.perf_counter() - start)
    size = sum(b.numel() * 4 for b in batches) / 2**20
    print(f"one entry: {args.samples} samples x {args.tokens} tokens x {args.width} float32 = {size:.1f} MiB")
    print(f"{'step':<24}{'median ms':>10}")
    for step, values in times.items():
        print(f"{step:<24}{1000 * statistics.median(values):>10.1f}")


if __name__ == "__main__":
    main()
