"""Engine benchmark: activation capture + fitting every span, at full size, on this machine.

A model with DINOv2-base's config (random weights), 224×224 inputs, N calibration samples (default
500). Reports, side by side in one run:
  - capture (forward + shards + statistics) vs a plain forward pass over the same batches;
  - a second run with the same key (cache hit: verification only, no forward pass);
  - fitting all L(L+1)/2 linear spans from the statistics vs `torch.linalg.lstsq` per span on the
    stacked activations read from the shards;
  - peak resident memory after each phase.

`--max-removed N` captures only the pairs of states a space removing at most N blocks reads (issue 22) and fits
its spans; `--stats-memory-gb` bounds the statistics' accumulators (the all-pairs Gram when it fits, else the
space's pairs in as many passes as needed); `--no-shards` writes no state shards (a search of closed-form kinds
only), and times no lstsq.

    python bench/bench_engine.py --samples 500
    python bench/bench_engine.py --samples 16 --max-removed 3 --stats-memory-gb 0.4 --no-shards
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def make_model(directory: Path, image_size: int) -> None:
    import transformers as T

    torch.manual_seed(0)
    config = T.Dinov2Config(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, patch_size=14, image_size=518
    )
    T.Dinov2Model(config).save_pretrained(directory)
    T.BitImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(directory)


def make_data(directory: Path, n: int, image_size: int) -> None:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(n)]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"img": imgs, "label": [i % 10 for i in range(n)]})}
    ).save_to_disk(str(directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dtype", default="float16", help="activation shard dtype")
    parser.add_argument(
        "--lstsq-spans", type=int, default=0, help="time lstsq on only this many spans (0: all) and extrapolate"
    )
    parser.add_argument(
        "--no-branches", action="store_true", help="capture without the MLP-branch statistics (a run without folded)"
    )
    parser.add_argument(
        "--max-removed", type=int, default=None, help="capture and fit only the pairs a space of this limit reads"
    )
    parser.add_argument("--stats-memory-gb", type=float, default=None, help="memory of the statistics' accumulators")
    parser.add_argument("--no-shards", action="store_true", help="write no state shards (closed-form kinds only)")
    args = parser.parse_args()

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from toast.capture import ActivationCache, CalibrationSettings, calibrate
    from toast.data import iter_batches, load_split, sample_ids
    from toast.models import load_model
    from toast.spaces import Span, fit_span, space_pairs

    work = Path(tempfile.mkdtemp(prefix="toast-bench-"))
    make_model(work / "model", args.image_size)
    make_data(work / "data", args.samples, args.image_size)
    loaded = load_model(str(work / "model"))
    split = load_split(str(work / "data"), "train")
    L = 12
    pairs = None if args.max_removed is None else space_pairs(L, args.max_removed)
    settings = CalibrationSettings(
        samples=args.samples,
        batch_size=args.batch_size,
        activation_dtype=args.dtype,
        branches=not args.no_branches,
        pairs=pairs,
        states=frozenset() if args.no_shards else None,
        stats_memory_gb=args.stats_memory_gb,
    )
    ids = sample_ids(len(split), args.samples, settings.seed)
    rows: list[tuple[str, str]] = []
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; DINOv2-base config, {args.samples} samples at {args.image_size}px, batch {args.batch_size}",
        flush=True,
    )

    t = time.perf_counter()
    with torch.inference_mode():
        for _, inputs in iter_batches(split, ids, loaded.processor, args.batch_size):
            loaded.model(**inputs)
    t_forward = time.perf_counter() - t
    rows.append(("plain forward (same batches, preprocessing included)", f"{t_forward:.1f} s"))
    rows.append(("peak RSS after forward", f"{peak_rss_gb():.2f} GB"))
    print(rows[-2], flush=True)

    cache = ActivationCache(work / "cache")
    t = time.perf_counter()
    captured = calibrate(loaded, split, settings, cache, progress=False)
    t_capture = time.perf_counter() - t
    shard_bytes = sum(f.stat().st_size for f in captured.files)
    rows.append(("capture (forward + Arrow shards + statistics)", f"{t_capture:.1f} s"))
    rows.append(("capture / plain forward", f"{t_capture / t_forward:.2f}x"))
    held = captured.stats.held_pairs
    rows.append(
        (
            "statistics held",
            f"{'all-pairs Gram' if captured.stats.gram is not None else 'per pair'}, {len(held)} of 91 pairs, "
            f"{captured.manifest['pair_passes']} pass(es)",
        )
    )
    rows.append(
        (
            "shards on disk",
            f"{shard_bytes / 1e9:.3f} GB ({captured.stats.n} tokens × {len(captured.states)} states, {args.dtype})",
        )
    )
    rows.append(("peak RSS after capture", f"{peak_rss_gb():.2f} GB"))
    print(rows[-5:], flush=True)

    t = time.perf_counter()
    captured = calibrate(loaded, split, settings, cache, progress=False)
    rows.append(("second run, same key (verify + open, no forward)", f"{time.perf_counter() - t:.1f} s"))
    del loaded
    gc.collect()

    limit = L if args.max_removed is None else args.max_removed
    spans = [Span(s, e, "linear") for s in range(-1, L - 1) for e in range(s + 1, L) if e - s <= limit]
    stats = captured.stats
    t = time.perf_counter()
    fits = {span: fit_span(stats, span) for span in spans}
    t_fit = time.perf_counter() - t
    rows.append((f"fit all {len(spans)} linear spans from the statistics", f"{t_fit:.1f} s"))
    rows.append(("peak RSS after fits", f"{peak_rss_gb():.2f} GB"))
    print(rows[-2:], flush=True)

    if args.no_shards:
        return print_rows(rows)
    todo = spans if args.lstsq_spans <= 0 else spans[:: max(1, len(spans) // args.lstsq_spans)][: args.lstsq_spans]
    states: dict[int, torch.Tensor] = {}
    per_span = []
    worst = 0.0
    t_all = time.perf_counter()
    for span in todo:
        ts = time.perf_counter()
        for k in (span.source, span.target):
            if k not in states:
                states[k] = torch.from_numpy(captured.state(k))
        x, y = states[span.source], states[span.target]
        xb = torch.cat([x, torch.ones(len(x), 1)], dim=1)
        sol = torch.linalg.lstsq(xb, y).solution
        per_span.append(time.perf_counter() - ts)
        # compare fits by what they predict: mean squared residual on the stacked activations
        ours = torch.from_numpy(fits[span].predict(x.double().numpy())).float()
        mse_ours = float(((ours - y) ** 2).mean())
        mse_lstsq = float(((xb @ sol - y) ** 2).mean())
        worst = max(worst, abs(mse_ours - mse_lstsq) / max(mse_lstsq, 1e-30))
        if len(states) > 4:  # keep memory bounded: drop states no longer needed soon
            for k in sorted(states)[:-2]:
                if k not in (span.source, span.target):
                    states.pop(k)
    t_lstsq = (time.perf_counter() - t_all) * len(spans) / len(todo)
    label = "" if len(todo) == len(spans) else f" (timed {len(todo)}, scaled to {len(spans)})"
    rows.append(
        (
            f"torch.linalg.lstsq per span on stacked activations{label}",
            f"{t_lstsq:.1f} s (median {statistics.median(per_span):.2f} s/span)",
        )
    )
    rows.append(("lstsq / statistics fit", f"{t_lstsq / t_fit:.1f}x"))
    rows.append(("max relative difference of the fits' mean squared residual (ours vs lstsq)", f"{worst:.2e}"))
    print_rows(rows)


def print_rows(rows: list[tuple[str, str]]) -> None:
    rows.append(("peak RSS (whole run)", f"{peak_rss_gb():.2f} GB"))
    width = max(len(r[0]) for r in rows)
    print()
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    sys.exit(main())
