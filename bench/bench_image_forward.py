"""The image forward of a trial against the plain Transformers forward, on DINOv2-base (hub config, random weights).

    python bench/bench_image_forward.py --images 64 --batch-size 32 --repeats 3 --threads 2

A `Dinov2Model` built from facebook/dinov2-base's config.json fields (random weights) with its
preprocessor_config (BitImageProcessor: shortest edge 256, crop 224), over made-up images of several sizes.
The original model's features ([CLS] after the final norm) through the trial's path (`CompressedModel` with an
empty plan over `PreprocessedInputs.length_batches`) and through `Dinov2Model(pixel_values).pooler_output` on
the same batches, with SDPA and eager attention; interleaved repeats under `torch.inference_mode`, median
seconds. Then the patch embedding with `channels_last` pixels against contiguous ones, and the preprocessing
cache: bytes per image and the time to read every batch back, compact (uint8 levels) against float32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path) -> Path:
    """DINOV2-base's hub config and processor with random weights (`tests/models/test_hub_layouts.py`'s copies)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_hub_layouts import save_hub_layout

    return save_hub_layout("facebook/dinov2-base", root / "dinov2-base")


def _split(n: int):
    import datasets
    import numpy as np
    from PIL import Image

    from toast.data import LabeledSplit

    rng = np.random.default_rng(0)
    sizes = [(320, 240), (256, 256), (500, 375), (300, 400)]
    images = [Image.fromarray(rng.integers(0, 256, (*sizes[i % 4][::-1], 3), dtype=np.uint8)) for i in range(n)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(n)]}, features=features)
    return LabeledSplit(ds, "made-up", "test", "img", "label", "image")


def _float32_entry(root: Path, split, ids, processor, batch_size: int):
    """The entry as format 2 stored it (float32 pixels): the storage choice forced, for the size and read rows."""
    from toast.data import PreprocessedInputs, _inputs, _pixels

    chosen = _inputs.choose
    _inputs.choose = lambda name, first, processor, forms: _pixels.Storage(str(first.dtype))
    try:
        return PreprocessedInputs.get_or_build(root, split, ids, processor, batch_size)
    finally:
        _inputs.choose = chosen


def _median_seconds(runs: dict, repeats: int, outputs: dict | None = None) -> dict[str, float]:
    """Median seconds of each run, interleaved (in reverse order every other repeat, so no run always follows
    the same one); `outputs` gets each run's last result."""
    times = {k: [] for k in runs}
    for i in range(repeats):
        for name in list(runs)[:: -1 if i % 2 else 1]:
            t = time.perf_counter()
            out = runs[name]()
            times[name].append(time.perf_counter() - t)
            if outputs is not None:
                outputs[name] = out
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from toast.data import PreprocessedInputs
    from toast.models import CompressedModel, load_model
    from toast.search._quiet import quiet_libraries
    from toast.spaces import Plan

    quiet_libraries()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp())
    folder = _folder(root)
    split, ids = _split(args.images), list(range(args.images))
    models = {attn: load_model(str(folder), attn_implementation=attn) for attn in ("sdpa", "eager")}
    processor = models["sdpa"].processor
    compact = PreprocessedInputs.get_or_build(root / "cache", split, ids, processor, args.batch_size)
    plain32 = _float32_entry(root / "cache32", split, ids, processor, args.batch_size)
    batches = [b["pixel_values"] for _, b in compact.length_batches()]
    assert all(torch.equal(a, b["pixel_values"]) for a, (_, b) in zip(batches, plain32.length_batches()))

    runs = {}
    for attn, loaded in models.items():
        ours = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
        runs[f"CompressedModel, {attn}"] = lambda m=ours: [m.features(b) for _, b in compact.length_batches()]
        runs[f"Dinov2Model, {attn}"] = lambda m=loaded.model: [m(pixel_values=x).pooler_output for x in batches]
    with torch.inference_mode():
        outputs: dict = {}
        seconds = _median_seconds(runs, args.repeats, outputs)
        ref = torch.cat(outputs["Dinov2Model, sdpa"])
        worst = max(float((torch.cat(v) - ref).abs().max()) for v in outputs.values())

        embeddings = models["sdpa"].parts.embeddings
        last = [x.contiguous(memory_format=torch.channels_last) for x in batches]
        layouts = {
            "contiguous (NCHW)": lambda: [embeddings(x) for x in batches],
            "channels_last": lambda: [embeddings(x) for x in last],
        }
        same = all(torch.allclose(embeddings(a), embeddings(b), atol=1e-5) for a, b in zip(batches, last))
        embed = _median_seconds(layouts, max(args.repeats, 5))
    reads = {
        "compact (uint8 levels)": lambda: list(compact.length_batches()),
        "float32": lambda: list(plain32.length_batches()),
    }
    read = _median_seconds(reads, max(args.repeats, 5))

    n = len(ids)
    print(
        f"DINOv2-base (hub config, random weights), {n} images at 224, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats (order reversed every "
        "other repeat), torch.inference_mode; "
        f"largest feature difference between the four: {worst:.1e}\n"
    )
    base = seconds["Dinov2Model, sdpa"]
    print("| forward (all 12 blocks) | seconds | images / s | / Dinov2Model sdpa |")
    print("| --- | ---: | ---: | ---: |")
    for name, s in seconds.items():
        print(f"| {name} | {s:.2f} | {n / s:.1f} | {s / base:.2f}x |")
    print(f"\npatch embedding (conv 14x14 + [CLS] + positions), {n} images, median of {max(args.repeats, 5)}:")
    print("| pixel layout | seconds | same output |")
    print("| --- | ---: | --- |")
    for name, s in embed.items():
        print(f"| {name} | {s:.3f} | {'yes' if same else 'NO'} |")
    print("\npreprocessing cache")
    print("| storage | bytes / image | read all batches (s) |")
    print("| --- | ---: | ---: |")
    for name, entry in zip(reads, (compact, plain32)):
        per = entry.path.stat().st_size / n
        print(f"| {name} | {per / 1e3:,.1f} KB | {read[name]:.3f} |")
    storage = compact.manifest["inputs"]["pixel_values"]
    print(f"\ncompact entry: storage {storage['storage']}, largest error {storage['max_error']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
