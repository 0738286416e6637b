"""Sampled CKA against the exact all-token CKA (issue 22): how far is the similarity map from a bounded token sample?

For each model and dataset: the calibration capture of today's path (`toast.capture.calibrate` into a temporary
`ActivationCache`, then `cka_matrix` on its all-pairs Gram: the exact all-token CKA), and one forward of the
uncompressed model over the same calibration samples whose hidden states feed `SampledSimilarity` at several
token budgets and seeds. Prints one table: model, samples kept / fed, tokens sampled / all real tokens, the
largest and the mean |ΔCKA| over the off-diagonal entries (the worst seed, and the mean over seeds), the time
of the sampler (updates + `cka()`) and its memory (what it holds + what `cka()` allocates at its peak, traced),
against the exact path's Gram.

    python bench/bench_similarity.py                       # demo-vit on digits, MiniLM on docstrings
    python bench/bench_similarity.py --samples 256 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: (tokens_per_sample, max_tokens, keep_cls): None = every real token
CONFIGS: list[tuple[int | None, int, bool]] = [
    (None, 10**9, True),  # every token: must match the exact path (float32 products there)
    (1, 10**9, True),  # [CLS] only: the papers' other figure, not an estimate of the all-token CKA
    (4, 1024, True),
    (4, 1024, False),  # uniform tokens, [CLS] not always kept
    (16, 1024, True),
    (4, 4096, True),
    (8, 4096, True),  # the class's defaults
    (16, 4096, True),
    (None, 4096, True),  # whole samples, fewer of them
]
MODELS = [("demo-vit", "digits"), ("all-minilm-l6-v2", "docstrings")]


@dataclass
class Row:
    model: str
    config: str
    samples: str
    tokens: str
    max_delta: float
    mean_delta: float
    seconds: float
    memory: int


def off_diagonal_deltas(got: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, int]:
    """|ΔCKA| of the off-diagonal entries finite in both, and how many entries are NaN in `got` only (a state
    with no variance on the sample, e.g. h_0's [CLS], the same embedding for every input)."""
    off = ~np.eye(len(exact), dtype=bool)
    finite = off & np.isfinite(got) & np.isfinite(exact)
    return np.abs(got - exact)[finite], int(np.sum(off & np.isnan(got) & np.isfinite(exact)))


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def run_model(model: str, dataset: str, samples: int, batch_size: int, seeds: list[int]) -> list[Row]:
    from toast.capture import ActivationCache, CalibrationSettings, calibrate
    from toast.data import iter_batches, load_split, sample_ids
    from toast.models import CompressedModel, load_model
    from toast.objectives import SampledSimilarity
    from toast.objectives._similarity import cka_matrix
    from toast.spaces import Plan

    loaded = load_model(model)
    split = load_split(dataset, "train")
    settings = CalibrationSettings(samples=samples, batch_size=batch_size, branches=False)
    with tempfile.TemporaryDirectory(prefix="toast-bench-sim-") as work:
        t = time.perf_counter()
        captured = calibrate(loaded, split, settings, ActivationCache(Path(work) / "cache"), progress=False)
        t_capture = time.perf_counter() - t
        stats = captured.stats
        t = time.perf_counter()
        exact = cka_matrix(stats)
        t_exact = time.perf_counter() - t
    S, d = stats.num_states, stats.dim
    rows = [
        Row(
            model,
            "exact: all tokens (`calibrate` + `cka_matrix`)",
            f"{stats.num_samples}",
            f"{stats.n}",
            0.0,
            0.0,
            t_exact,
            (S * d) ** 2 * 8,
        )
    ]
    print(
        f"{model}: {stats.num_samples} samples, {stats.n} tokens, S={S}, d={d}; capture {t_capture:.1f} s", flush=True
    )

    # the same samples, in the same batches, through the uncompressed model: the states the capture saw
    original = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    cls_index = original.family.layout(original.config).cls_index
    ids = sample_ids(len(split), samples, settings.seed)
    batches: list[tuple[list[torch.Tensor], torch.Tensor | None]] = []
    with torch.inference_mode():
        for _, inputs in iter_batches(split, ids, loaded.processor, batch_size):
            states, mask = original.hidden_states(inputs)
            batches.append(([h.clone() for h in states], None if mask is None else mask.clone()))

    for tps, budget, keep_cls in CONFIGS:
        deltas, times, memories, kept, nans = [], [], [], None, 0
        drawn = budget < stats.n or (tps is not None and not (tps == 1 and keep_cls))  # else the same for any seed
        for seed in seeds if drawn else seeds[:1]:
            sampler = SampledSimilarity(
                S, tokens_per_sample=tps, max_tokens=budget, seed=seed, cls_index=cls_index, keep_cls=keep_cls
            )
            t = time.perf_counter()
            for states, mask in batches:
                sampler.update(states, mask)
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            got = sampler.cka()
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            times.append(time.perf_counter() - t)
            memories.append(sampler.nbytes + peak)
            delta, nan = off_diagonal_deltas(got, exact)
            deltas.append(delta)
            nans = max(nans, nan)
            kept = (sampler.sampled_samples, sampler.sampled_tokens)
        label = f"tokens/sample {'all' if tps is None else tps}, max {budget if budget < 10**9 else '∞'}"
        label += "" if keep_cls or tps is None else ", no [CLS] kept"
        label += f" ({len(deltas)} seed{'s' if len(deltas) > 1 else ''})"
        label += f"; {nans} entries NaN (no variance), left out" if nans else ""
        rows.append(
            Row(
                model,
                label,
                f"{kept[0]} / {stats.num_samples}",
                f"{kept[1]} / {stats.n}",
                max(float(x.max()) for x in deltas),
                float(np.mean([x.mean() for x in deltas])),
                float(np.mean(times)),
                max(memories),
            )
        )
        r = rows[-1]
        print(f"  {label}: max {r.max_delta:.4f}, mean {r.mean_delta:.4f}, {r.seconds:.2f} s", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512, help="calibration samples per model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=[m for m, _ in MODELS], help="demo-vit, all-minilm-l6-v2")
    args = parser.parse_args()

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows: list[Row] = []
    for model, dataset in MODELS:
        if model in args.models:
            rows += run_model(model, dataset, args.samples, args.batch_size, args.seeds)

    print()
    print("| model | CKA over | samples | tokens | max \\|ΔCKA\\| | mean \\|ΔCKA\\| | time | memory |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r.model} | {r.config} | {r.samples} | {r.tokens} | {r.max_delta:.4f} | {r.mean_delta:.4f} "
            f"| {r.seconds:.2f} s | {mib(r.memory)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
