"""The latency table's estimate error in each runtime, and how often a plan chosen under a budget from one runtime's
table misses that budget when measured in another runtime (issue 25).

    python bench/bench_latency.py                     # DINOv2-base config (random weights) and demo-vit; eager,
                                                      # compile and onnxruntime; batch 1 and 32; CPU, 2 threads
    python bench/bench_latency.py --models demo-vit --batches 1 --random-plans 4 --runtimes eager,onnxruntime
    python bench/bench_latency.py --threads 1 --big-random-plans 8 --runtimes eager,onnxruntime
    python bench/bench_latency.py --models demo-vit --trials 3          # the median of 3 trials (a shared machine)
    python bench/bench_latency.py --models demo-lm --mode decode --seq 256 --batches 1 --runtimes eager,onnxruntime
    python bench/bench_latency.py --device cuda --dtype bfloat16 --batches 256 --models dinov2-base \
        --runtimes eager,onnxruntime --plans "0→4:linear" --random-plans 8     # the GPU check of issue 25
                                            # (bench/gpu_check.sh: the same as one call of the device tool)

Models: a model with DINOv2-base's config at 224x224 (the hub's config and processor, random weights) and demo-vit,
loaded as `toast-search` loads them (`--device`, `--dtype`). For each model, batch size and runtime
(`toast.search.runtimes`; one that cannot run here, e.g. onnxruntime not installed, is skipped with one line):

1. **Estimate error.** The runtime's latency table is measured as a search measures it (`measure_latency_table`
   with identity and linear translators: probe models timed whole in the runtime, the parts solved from them).
   Then the original and `--random-plans` random plans (identity and linear spans anywhere; the same plans in every
   runtime for one batch size, `--plans` added to them) are timed end to end in the same runtime (`time_models` on
   `timing_model`: translators at their fitted shape, default weights; warm-up, then the fastest of rounds). The
   error is |estimated - measured| / measured over the plans (the original's shown apart). Beside it, the same error
   of each plan's time relative to the original's: the table's shape without the machine's level, which on a shared
   machine can change between the table's timing and the plans' (the original is timed with the plans).
2. **Choice under a budget.** For each model and batch, each target runtime T and each table runtime A: for 10
   budgets spread evenly inside (cheapest, most expensive) of the plans' times measured in T, the plan A's table
   estimates slowest within the budget is chosen (the plan a search would keep: the hardest case), and it misses
   when its time measured in T is over the budget. Rows A, columns T: misses / budgets and the worst overshoot; the
   diagonal is the right table, the rest the wrong runtime's table. ("none": A's table says no plan fits.)
3. **Trials** (`--trials N`): every case is timed N times, a trial after the other (a new table, then the plans
   again), and the median over the trials of the median error is shown beside each trial's; the choices count every
   trial's table against the same trial's times. On a shared machine a slow spell can fall on one timing and not the
   next (this project's 2-core VM: 1.3-2x slower, every model alike, for a second to half a minute or more), which
   no table timed before it can foresee; each time is a model's fastest round (`Timings`), so a spell shorter than
   the window (`--seconds`, the table's 20 s) does not move it.

DINOv2-base at batch > 1 on a CPU (hidden size >= 512: a forward of batch 32 takes ~10 s on 2 cores) is timed
cheaper: the first `--big-random-plans` plans, no warm-up round and `--big-repeats` rounds end to end (the fastest
kept: with one round, each plan's one call fell in whichever of this machine's two speed levels was on, and eager's
median error at batch 32 was 19.1%, against 2.4% with 3; RESULTS, issue 25, section j), table probes with one
warm-up and 3 rounds (every runtime already warms a model in `prepare`). Everything runs in one process, one model at
a time; each plan is exported to ONNX once per model and the file reused at every batch size (`reuse_exports`); the
header says the versions, threads, seconds in all and the command.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KINDS = ("identity", "linear")
BUDGETS = 10
TABLE_WARMUP, TABLE_REPEATS = 2, 7  # the table's probes, as a search measures them (`toast.search._latency`)
BIG_TABLE_WARMUP, BIG_TABLE_REPEATS = 1, 3


@dataclass
class Case:
    """One model at one batch size in one runtime: its latency table and the plans measured end to end."""

    model: str
    runtime: str
    batch: int
    table: object  # LatencyTable
    measured: dict  # Plan -> ms (the fastest round), the original first
    n_random: int
    table_s: float
    timing_s: float
    timing_drift: float = 0.0  # the machine's change of speed while the plans were timed (`Timings.drift`)
    trial: int = 1  # which of `--trials` (table and plans timed again, after every other case of the trial before)
    named: tuple = ()  # the `--plans` plans (speedups shown apart: the GPU check's `0→4:linear` against TOAST's 1.39×)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.runtime, self.batch

    @property
    def original(self):
        return next(iter(self.measured))

    def errors(self) -> np.ndarray:
        """|estimated - measured| / measured of every plan but the original."""
        return np.array(
            [abs(self.table.estimate(p) - ms) / ms for p, ms in self.measured.items() if p != self.original]
        )

    def relative_errors(self) -> np.ndarray:
        """The same error of each plan's time relative to the original's (estimated against measured): what is left
        when the machine ran the plans' timing at another speed than the table's, since the original is timed with
        the plans (side by side where the runtime allows)."""
        est0, ms0 = self.table.estimate(self.original), self.measured[self.original]
        return np.array(
            [
                abs(self.table.estimate(p) / est0 - ms / ms0) / (ms / ms0)
                for p, ms in self.measured.items()
                if p != self.original
            ]
        )


def is_big(loaded, batch: int) -> bool:
    """DINOv2-base's size on a CPU at batch > 1 (seconds a forward): timed cheaper (see the module)."""
    return loaded.device.type == "cpu" and batch > 1 and loaded.hidden_size >= 512


def dinov2_base_folder(root: Path) -> Path:
    """DINOv2-base's hub config and processor (crop 224) with random weights (as tests/models/test_hub_layouts.py)."""
    for folder in ("tests", "tests/models", "tests/objectives"):  # the test modules import each other by name
        sys.path.insert(0, str(REPO / folder))
    from test_hub_layouts import save_hub_layout

    return save_hub_layout("facebook/dinov2-base", root / "dinov2-base")


def random_plans(num_blocks: int, n: int, seed: int, avoid=()) -> list:
    """`n` distinct random plans with identity and linear spans (each block kept with probability 0.6), none of
    `avoid` (the table's own check plans: the error is measured on plans the table never saw)."""
    from toast.spaces import PlanSpace

    space = PlanSpace(num_blocks=num_blocks, kinds=KINDS)
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    for _ in range(50 * n):
        if len(out) == n:
            break
        genes = ["keep" if rng.random() < 0.6 else str(rng.choice(KINDS)) for _ in range(num_blocks)]
        plan = space.decode(genes)
        if plan.spans and plan not in seen and plan not in avoid:
            seen.add(plan)
            out.append(plan)
    return out


def usable_runtimes(names: list[str], device, dtype: str = "float32") -> list[str]:
    """The runtimes of `names` that can run here in `dtype`; each other one said in one line on stderr."""
    from toast.errors import ToastError
    from toast.search.runtimes import get_runtime

    out = []
    for name in names:
        try:
            get_runtime(name).check(device, dtype=dtype)
        except ToastError as e:
            print(f"runtime {name} skipped: {e}", file=sys.stderr)
            continue
        out.append(name)
    return out


def bench_case(name: str, loaded, runtime: str, batch: int, plans: list, n_random: int, args, trial: int = 1) -> Case:
    """`loaded`'s latency table in `runtime` at `batch`, and `plans` (the original first) timed end to end there."""
    from toast.search import measure_latency_table
    from toast.search._latency import latency_inputs, time_models, timing_model
    from toast.search.runtimes import get_runtime

    big = is_big(loaded, batch)
    start = time.perf_counter()
    table, _ = measure_latency_table(
        loaded,
        kinds=KINDS,
        batch_size=batch,
        seq_len=args.seq,
        mode=args.mode,
        runtime=runtime,
        warmup=BIG_TABLE_WARMUP if big else TABLE_WARMUP,
        repeats=BIG_TABLE_REPEATS if big else TABLE_REPEATS,
    )
    table_s = time.perf_counter() - start
    measured = time_models(
        get_runtime(runtime),
        {plan: (lambda plan=plan: timing_model(loaded, plan)) for plan in plans},
        latency_inputs(loaded, batch_size=batch, seq_len=args.seq),
        mode=args.mode,
        warmup=0 if big else args.warmup,
        repeats=args.big_repeats if big else args.repeats,
        seconds=0.0 if big else args.seconds,
        device=loaded.device,
    )
    timing_s = time.perf_counter() - start - table_s
    drift = measured.drift
    measured = {plan: measured[plan] for plan in plans}  # the original first
    named = tuple(p for p in plans[1:] if p in args.named)
    return Case(name, runtime, batch, table, measured, n_random, table_s, timing_s, drift, trial, named)


def choices(table_case: Case, target: Case, *, held: bool = True) -> tuple[int, int, float]:
    """Over `BUDGETS` budgets evenly inside the range of `target`'s measured times: the misses (the plan
    `table_case`'s table estimates slowest within the budget measures over it in `target`), the budgets where the
    table says no plan fits, and the worst overshoot (0 without a miss). `held`: estimates held to the budget with the
    table's margin (`LatencyTable.bound`, as a search holds them), else the estimates alone."""
    times = target.measured
    budgets = np.linspace(min(times.values()), max(times.values()), BUDGETS + 2)[1:-1]
    table = table_case.table
    estimates = {plan: table.bound(plan) if held else table.estimate(plan) for plan in times}
    misses, none, worst = 0, 0, 0.0
    for budget in budgets:
        fits = [plan for plan, est in estimates.items() if est <= budget]
        if not fits:
            none += 1
            continue
        chosen = max(fits, key=estimates.__getitem__)
        if times[chosen] > budget:
            misses += 1
            worst = max(worst, times[chosen] / budget - 1)
    return misses, none, worst


def median_error(c: Case) -> float:
    err = c.errors()
    return float(np.median(err)) if len(err) else float("nan")


def print_summary(cases: list[Case]) -> None:
    """One row per model, runtime and batch: the median over the trials of the median error, and each trial's."""
    trials = max(c.trial for c in cases)
    print(f"### Estimate error, median over {trials} trial(s) (each: a table timed, then the plans)\n")
    print("| model | runtime | batch | median error | each trial | relative to the original: median, each trial |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in dict.fromkeys(c.key for c in cases):
        group = [c for c in cases if c.key == key]
        err = [median_error(c) for c in group]
        rel = [float(np.median(c.relative_errors())) if len(c.measured) > 1 else float("nan") for c in group]
        print(
            f"| {key[0]} | {key[1]} | {key[2]} | **{np.median(err):.1%}** | {', '.join(f'{e:.1%}' for e in err)} | "
            f"{np.median(rel):.1%}; {', '.join(f'{e:.1%}' for e in rel)} |"
        )
    print()


def print_named(cases: list[Case]) -> None:
    """The `--plans` plans of every case: measured and estimated milliseconds, and the speedup over the original
    measured in the same timing (the TOAST paper's anchor: `0→4:linear` 1.39× on an H100 at batch 256, bf16)."""
    rows = [(c, p) for c in cases for p in c.named if p in c.measured]
    if not rows:
        return
    print("### The plans named by `--plans`: measured against the original, timed side by side where the runtime can\n")
    print(
        "| model | runtime | batch | trial | plan | measured ms | estimated ms | speedup measured | speedup estimated |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c, p in rows:
        ms, est, base = c.measured[p], c.table.estimate(p), c.measured[c.original]
        print(
            f"| {c.model} | {c.runtime} | {c.batch} | {c.trial} | `{p}` | {ms:.2f} | {est:.2f} | {base / ms:.2f}× | "
            f"{c.table.original_ms / est:.2f}× |"
        )
    print()


def print_tables(cases: list[Case]) -> None:
    print_summary(cases)
    print_named(cases)
    print("### Estimate error, every trial (each runtime's table against the same runtime's end-to-end times)\n")
    print(
        "| model | runtime | batch | trial | original measured ms | original estimated ms | plans (random) | "
        "median error | max error | relative to the original: median, max | margin | drift (table, plans) | "
        "table s | timing s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in sorted(cases, key=lambda c: list(dict.fromkeys(c.key for c in cases)).index(c.key)):
        err, rel = c.errors(), c.relative_errors()
        base = c.measured[c.original]
        median, worst = (f"**{np.median(err):.1%}**", f"{err.max():.1%}") if len(err) else ("–", "–")
        relative = f"{np.median(rel):.1%}, {rel.max():.1%}" if len(rel) else "–"
        print(
            f"| {c.model} | {c.runtime} | {c.batch} | {c.trial} | {base:.2f} | {c.table.original_ms:.2f} | "
            f"{len(err)} ({c.n_random}) | {median} | {worst} | {relative} | {c.table.margin:.1%} | "
            f"{c.table.drift:+.0%}, {c.timing_drift:+.0%} | {c.table_s:.0f} | {c.timing_s:.0f} |"
        )
    print()
    trials = max(c.trial for c in cases)
    for (model, batch), held in itertools.product(dict.fromkeys((c.model, c.batch) for c in cases), (True, False)):
        group = [c for c in cases if (c.model, c.batch) == (model, batch)]
        runtimes = list(dict.fromkeys(c.runtime for c in group))
        how = "estimates held to the budget with the table's margin" if held else "the estimates alone, no margin"
        print(
            f"### Choice under a budget: {model}, batch {batch}, {how} ({len(group[0].measured)} plans; rows: the "
            f"table's runtime, columns: the runtime measured; misses / {BUDGETS} budgets × {trials} trial(s), each "
            "trial's table against the same trial's times; in brackets each trial's misses and the worst overshoot)\n"
        )
        print("| table \\ measured | " + " | ".join(runtimes) + " |")
        print("| --- |" + " --- |" * len(runtimes))
        for a_name in runtimes:
            cells = []
            for t_name in runtimes:
                pairs = [
                    (a, t) for a in group for t in group if (a.runtime, t.runtime, a.trial) == (a_name, t_name, t.trial)
                ]
                got = [choices(a, t, held=held) for a, t in pairs]
                misses, none, worst = sum(g[0] for g in got), sum(g[1] for g in got), max(g[2] for g in got)
                each = f"{', '.join(str(g[0]) for g in got)}; " if len(got) > 1 and misses else ""
                cell = (
                    f"{misses}/{BUDGETS * len(got)}"
                    + (f" ({each}+{worst:.1%})" if misses else "")
                    + (f", {none} none" if none else "")
                )
                cells.append(f"**{cell}**" if a_name == t_name else cell)
            print(f"| {a_name} | " + " | ".join(cells) + " |")
        print()


def reuse_exports() -> None:
    """Each plan is exported to ONNX once per model and the file reused at every batch size (the graph has a dynamic
    batch axis; the weights' values do not change a timing): `toast.search._onnx._export` memoised for this process."""
    import shutil

    from toast.search import _onnx

    export, files = _onnx._export, {}
    folder = Path(tempfile.mkdtemp(prefix="toast-bench-exports-"))

    def memo(model, example, path, opset):
        key = (id(model.embeddings), str(model.plan), tuple(v.shape[1:] for v in example.values()))
        if key not in files:
            files[key] = folder / f"{len(files)}.onnx"
            export(model, example, files[key], opset)
        shutil.copyfile(files[key], path)

    _onnx._export = memo


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime CPU threads (default: 2)")
    p.add_argument("--models", default="dinov2-base,demo-vit", help="dinov2-base and/or any model toast loads")
    p.add_argument("--runtimes", default="eager,compile,onnxruntime", help="toast.search.runtimes names")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--random-plans", type=int, default=20, help="random plans per model and batch (default: 20)")
    p.add_argument(
        "--big-random-plans", type=int, default=20, help="random plans for hidden size >= 512 at batch > 1 on CPU"
    )
    p.add_argument("--warmup", type=int, default=2, help="warm-up rounds end to end (default: 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds end to end (default: 5)")
    p.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="end-to-end rounds go on until they have lasted this long (default: 20, as the table's)",
    )
    p.add_argument(
        "--big-repeats",
        type=int,
        default=3,
        help="rounds end to end (the fastest kept) for hidden size >= 512 at batch > 1 on CPU (default: 3)",
    )
    p.add_argument("--plans", default="", help='plans timed besides the random ones, ";"-separated: "0→4:linear"')
    p.add_argument(
        "--trials",
        type=int,
        default=1,
        help="each model's cases timed this many times, one trial after the other (default: 1)",
    )
    p.add_argument("--mode", default="prefill", help="prefill, or decode for a causal LM (default: prefill)")
    p.add_argument("--seq", type=int, default=128, help="text models: tokens per input, or cached (default: 128)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    args = p.parse_args()
    if args.trials < 1:
        p.error(f"--trials must be 1 or more, got {args.trials}")

    import torch

    from toast.errors import SettingsError, UnsupportedModelError
    from toast.models import load_model
    from toast.search._latency import block_classes, check_plans
    from toast.search._quiet import quiet_libraries
    from toast.search.runtimes import get_runtime
    from toast.spaces import Plan, PlanError

    quiet_libraries()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    try:
        names = [get_runtime(r).name for r in args.runtimes.split(",")]
    except SettingsError as e:
        p.error(str(e))
    runtimes = usable_runtimes(names, args.device, args.dtype)
    reuse_exports()
    work = Path(tempfile.mkdtemp(prefix="toast-bench-latency-"))
    cases: list[Case] = []
    start = time.perf_counter()
    for name in args.models.split(","):
        loaded = load_model(
            str(dinov2_base_folder(work)) if name == "dinov2-base" else name,
            device=args.device,
            dtype=getattr(torch, args.dtype),
        )
        L = loaded.num_blocks
        original = Plan((), L)
        try:
            extra = [Plan.parse(t, L) for t in args.plans.split(";")] if args.plans else []
        except PlanError as e:
            p.error(f"--plans for {name} ({L} blocks): {e}")
        args.named = set(extra)
        checks = check_plans(L, KINDS, classes=block_classes(loaded))
        pool = random_plans(L, max(args.random_plans, args.big_random_plans), seed=0, avoid=checks)
        for trial, batch in itertools.product(range(1, args.trials + 1), batches):
            n = args.big_random_plans if is_big(loaded, batch) else args.random_plans
            randoms = pool[:n]  # the same plans in every runtime and batch (an ONNX export serves every batch)
            plans = list(dict.fromkeys([original, *extra, *randoms]))
            for runtime in list(runtimes):
                try:
                    cases.append(bench_case(name, loaded, runtime, batch, plans, len(randoms), args, trial))
                except UnsupportedModelError as e:  # a graph the runtime's provider has no kernels for
                    print(f"runtime {runtime} skipped for {name}: {e}", file=sys.stderr)
                    runtimes.remove(runtime)
                    continue
                c = cases[-1]
                print(  # each case's figures as it ends, so that a run stopped early still says what it timed
                    f"  {name} {runtime} batch {batch} trial {trial}: original {c.measured[c.original]:.2f} ms "
                    f"(estimated {c.table.original_ms:.2f}), median error {median_error(c):.1%}, relative to the "
                    f"original {np.median(c.relative_errors()) if len(c.measured) > 1 else float('nan'):.1%}; "
                    f"table {c.table_s:.0f} s, {len(plans)} plans {c.timing_s:.0f} s "
                    f"({time.perf_counter() - start:.0f} s in all)",
                    file=sys.stderr,
                    flush=True,
                )
        del loaded
    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = "no onnxruntime"
    print(
        f"torch {torch.__version__}, {ort}, {torch.get_num_threads()} CPU thread(s), {args.device} {args.dtype}, "
        f"{time.perf_counter() - start:.0f} s in all: `python {shlex.join(sys.argv)}`\n"
    )
    print_tables(cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
