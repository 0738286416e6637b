"""Measured speedup of compressed models against their GFLOPs ratio, and the latency table's estimate error.

    python bench/bench_latency.py                       # DINOv2-base config (random weights) and demo-vit, CPU
    python bench/bench_latency.py --threads 1 --random-plans 30
    python bench/bench_latency.py --device cuda --dtype bfloat16 --batches 256 --models dinov2-base \
        --plans "0→4:linear" --no-onnx --random-plans 0       # the GPU check of issue 11 (TOAST: 1.39x on an H100)

All measured side by side in one process on this machine (PyTorch eager, float32): a model with DINOv2-base's
config at 224x224 (the hub's config and processor, random weights) and demo-vit. For each model and batch size
(1 and 32), plans removing 1 to 6 blocks in one span (identity and linear translators; linear with random weights,
which take the same time as fitted ones) are timed end to end against the original (warm-up, then rounds that time
every plan once in turn, median per plan: a shared machine's changing load shifts all plans alike):
measured speedup, GFLOPs ratio (the cost table's, per input), their quotient, and the latency table's estimate
(`toast.search` measures it as a run does). The estimate error, median and max of |estimated - measured| /
measured, is over `--random-plans` random plans of the space (identity and linear spans anywhere), plus the table's
plans and the original. The same plans in onnxruntime (CPU; exported through `toast-search export`'s path) are timed
the same way (`--no-onnx`: skipped), their speedup over onnxruntime's original beside PyTorch's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KINDS = ("identity", "linear")
REMOVED = range(1, 7)


@dataclass(frozen=True)
class Row:
    """One plan at one batch size on one runtime."""

    model: str
    runtime: str
    batch: int
    plan: str
    removed: int
    kind: str
    measured_ms: float
    estimated_ms: float | None
    speedup: float
    gflops_ratio: float

    @property
    def quotient(self) -> float:
        return self.speedup / self.gflops_ratio


def dinov2_base_folder(root: Path) -> Path:
    """DINOv2-base's hub config and processor (crop 224) with random weights (as tests/models/test_hub_layouts.py)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_hub_layouts import save_hub_layout

    return save_hub_layout("facebook/dinov2-base", root / "dinov2-base")


def random_translators(plan, width: int, seed: int) -> dict:
    """A linear translator of random weights per linear span (near-identity maps: the timing is what matters)."""
    from toast.spaces import create_translator, translator_class

    rng = np.random.default_rng(seed)
    out = {}
    for span in plan.spans:
        if translator_class(span.kind).needs_fit:  # the bench's plans use identity and linear only
            t = create_translator(span.kind)
            t.weight_ = np.eye(width, dtype=np.float32) + 0.01 * rng.standard_normal((width, width), dtype=np.float32)
            t.bias_ = np.zeros(width, dtype=np.float32)
            out[span] = t
    return out


def table_plans(num_blocks: int) -> list:
    """One span removing k = 1 … 6 blocks, ending before the last block (all blocks when k reaches the depth)."""
    from toast.spaces import Plan, Span

    plans = []
    for k in REMOVED:
        if k > num_blocks:
            continue
        start = max(-1, num_blocks - 2 - k)
        for kind in KINDS:
            plans.append(Plan((Span(start, start + k, kind),), num_blocks))
    return plans


def random_plans(num_blocks: int, n: int, seed: int) -> list:
    """`n` distinct random plans with identity and linear spans (each block kept with probability 0.6)."""
    from toast.spaces import PlanSpace

    space = PlanSpace(num_blocks=num_blocks, kinds=KINDS)
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    for _ in range(50 * n):
        genes = ["keep" if rng.random() < 0.6 else str(rng.choice(KINDS)) for _ in range(num_blocks)]
        plan = space.decode(genes)
        if plan.spans and plan not in seen:
            seen.add(plan)
            out.append(plan)
        if len(out) == n:
            break
    return out


def pytorch_times(loaded, batch: int, plans: list, *, warmup: int, repeats: int) -> dict:
    """Median ms of each plan's compressed model end to end in PyTorch eager: the plans interleaved round by round
    (`interleaved_medians`), so that the load of a shared machine shifts them alike."""
    import torch

    from toast.models import CompressedModel
    from toast.search._latency import interleaved_medians, latency_inputs

    inputs = latency_inputs(loaded, batch_size=batch)
    models = {
        plan: CompressedModel.from_model(loaded, plan, random_translators(plan, loaded.hidden_size, seed=0))
        for plan in plans
    }
    calls = {plan: (lambda m=m: m(**inputs)) for plan, m in models.items()}
    with torch.inference_mode():
        if warmup == 0:  # the plans share the original's modules: one warm call of the first warms them all
            next(iter(calls.values()))()
        return interleaved_medians(calls, warmup=warmup, repeats=repeats, device=loaded.device)


def runtime_rows(name: str, loaded, batch: int, plans: list, costs, *, warmup: int, repeats: int) -> list[Row]:
    """onnxruntime (CPU) rows of model `name`: each plan's compressed model (and the original) exported once per model through
    toast's ONNX export path (dynamic batch axis, so one file serves every batch size), timed end to end on the
    same inputs in interleaved rounds; no estimate (the latency table models PyTorch). None without the extra."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("  onnxruntime rows skipped: pip install 'toast-search[onnx]'", file=sys.stderr)
        return []
    import torch

    from toast.models import CompressedModel
    from toast.search._latency import interleaved_medians, latency_inputs
    from toast.search._onnx import _export
    from toast.spaces import Plan

    original = Plan((), loaded.num_blocks)
    files = _ONNX_FILES.setdefault(id(loaded), {})
    example = latency_inputs(loaded, batch_size=2)
    for plan in [original, *plans]:
        if plan not in files:
            model = CompressedModel.from_model(loaded, plan, random_translators(plan, loaded.hidden_size, seed=0))
            path = Path(tempfile.mkdtemp(prefix="toast-bench-onnx-")) / "model.onnx"
            _export(model.float().eval(), example, path, None)
            files[plan] = path
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    inputs = {k: v.numpy() for k, v in latency_inputs(loaded, batch_size=batch).items()}
    calls = {}
    for plan in [original, *plans]:
        session = ort.InferenceSession(str(files[plan]), options, providers=["CPUExecutionProvider"])
        feed = {i.name: inputs[i.name] for i in session.get_inputs()}
        calls[plan] = lambda s=session, f=feed: s.run(None, f)
    measured = interleaved_medians(calls, warmup=warmup, repeats=repeats, device=None)
    base = measured[original]
    _ORT_ORIGINAL[name, batch] = base
    return [
        Row(
            model=name,
            runtime=f"onnxruntime {ort.__version__}",
            batch=batch,
            plan=str(plan),
            removed=len(plan.removed),
            kind=plan.spans[0].kind,
            measured_ms=measured[plan],
            estimated_ms=None,
            speedup=base / measured[plan],
            gflops_ratio=costs.original.flops / costs.cost(plan).flops,
        )
        for plan in plans
    ]


_ONNX_FILES: dict[int, dict] = {}  # exported models, per loaded model and plan (one file serves every batch)
_ORT_ORIGINAL: dict[tuple[str, int], float] = {}  # onnxruntime's original ms, per (model, batch)


def bench_model(name: str, loaded, batches, args) -> tuple[list[Row], dict]:
    """The table's rows of one model and its estimate errors per batch size."""
    import torch

    from toast.models import measure_cost_table
    from toast.search import measure_latency_table
    from toast.spaces import Plan

    costs = measure_cost_table(loaded, kinds=KINDS)
    original = Plan((), loaded.num_blocks)
    rows, errors = [], {}
    for batch in batches:
        on_cpu = loaded.device.type == "cpu"
        big = on_cpu and batch > 1 and loaded.hidden_size >= 512  # DINOv2 at batch 32: seconds a block on two cores
        large = on_cpu and loaded.hidden_size >= 512
        warmup, repeats = (0, args.big_repeats) if big else (1, 3) if large else (args.warmup, args.repeats)
        start = time.perf_counter()
        table, _ = measure_latency_table(
            loaded, kinds=KINDS, batch_size=batch, warmup=1 if large else 3, repeats=3 if big else 9 if large else 15
        )
        structured = (
            [Plan.parse(t, loaded.num_blocks) for t in args.plans.split(";")]
            if args.plans
            else table_plans(loaded.num_blocks)
        )
        randoms = [] if big else random_plans(loaded.num_blocks, args.random_plans, seed=batch)
        plans = list(dict.fromkeys([original, *structured, *randoms]))
        measured = pytorch_times(loaded, batch, plans, warmup=warmup, repeats=repeats)
        base = measured[original]
        for plan in structured:
            ms = measured[plan]
            span = plan.spans[0]
            rows.append(
                Row(
                    model=name,
                    runtime=f"pytorch {torch.__version__}",
                    batch=batch,
                    plan=str(plan),
                    removed=len(plan.removed),
                    kind=span.kind,
                    measured_ms=ms,
                    estimated_ms=table.estimate(plan),
                    speedup=base / ms,
                    gflops_ratio=costs.original.flops / costs.cost(plan).flops,
                )
            )
        rel = np.array([abs(table.estimate(p) - ms) / ms for p, ms in measured.items()])
        errors[batch] = (float(np.median(rel)), float(rel.max()), len(rel), len(randoms), base, table.original_ms)
        if args.onnx:
            ort_warmup, ort_repeats = (1, max(args.big_repeats, 1)) if big else (args.warmup, args.repeats)
            rows += runtime_rows(name, loaded, batch, structured, costs, warmup=ort_warmup, repeats=ort_repeats)
            if (name, batch) in _ORT_ORIGINAL:
                print(
                    f"  {name} batch {batch}: original {base:.2f} ms in PyTorch, {_ORT_ORIGINAL[name, batch]:.2f} ms "
                    "in onnxruntime",
                    file=sys.stderr,
                )
        print(f"  {name} batch {batch}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows, errors


def print_tables(rows: list[Row], errors: dict[str, dict]) -> None:
    print(
        "| model | runtime | batch | plan | removed | translator | measured ms | inputs/s | estimated ms | speedup | GFLOPs ratio | speedup / GFLOPs ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        est = "–" if r.estimated_ms is None else f"{r.estimated_ms:.2f}"
        print(
            f"| {r.model} | {r.runtime} | {r.batch} | `{r.plan}` | {r.removed} | {r.kind} | {r.measured_ms:.2f} | "
            f"{1000 * r.batch / r.measured_ms:.0f} | {est} | "
            f"{r.speedup:.3f}x | {r.gflops_ratio:.3f}x | **{r.quotient:.3f}** |"
        )
    print()
    print(
        "| model | batch | original measured ms | original estimated ms | plans (random) | median estimate error | max estimate error |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, per_batch in errors.items():
        for batch, (median, worst, n, n_random, base, est) in per_batch.items():
            print(f"| {model} | {batch} | {base:.2f} | {est:.2f} | {n} ({n_random}) | **{median:.1%}** | {worst:.1%} |")
    print()
    for batch in sorted({r.batch for r in rows}):
        quotients = [r.quotient for r in rows if r.batch == batch]
        print(f"batch {batch}: speedup / GFLOPs ratio min {min(quotients):.3f}, median {np.median(quotients):.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--big-repeats", type=int, default=1, help="rounds for DINOv2-base at batch > 1 (default: 1)")
    p.add_argument("--random-plans", type=int, default=20)
    p.add_argument("--models", default="dinov2-base,demo-vit")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="no onnxruntime rows")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    p.add_argument(
        "--plans", default="", help='plans separated by ";" in place of the 1-to-6-removed table, e.g. "0→4:linear"'
    )
    args = p.parse_args()

    import torch

    from toast.models import load_model
    from toast.search._quiet import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="toast-bench-latency-"))
    rows, errors = [], {}
    start = time.perf_counter()
    for name in args.models.split(","):
        loaded = load_model(
            str(dinov2_base_folder(work)) if name == "dinov2-base" else name,
            device=args.device,
            dtype=getattr(torch, args.dtype),
        )
        model_rows, errors[name] = bench_model(name, loaded, batches, args)
        rows += model_rows
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    print_tables(rows, errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
