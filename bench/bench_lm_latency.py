"""demo-lm's latency in every runtime and mode that runs it: the latency table's estimate against the end-to-end
measurement.

For each runtime (`eager`, `compile`, `onnxruntime`) and mode it runs (prefill: a forward over `batch × seq` tokens;
decode: one new token per sequence after `seq` cached ones, `CompressedModel.decode_step` with a `DynamicCache`;
onnxruntime's step graph takes the cache as inputs and returns it with the new token, `CompressedModel.decode_module`),
at batch 1 and 8: the runtime's table (`measure_latency_table(runtime=…)`, solved
from whole models) and the measured time (the fastest round) of the original and the plans, timed end to end in the
same runtime (`time_models`, the models at their fitted shapes: timing does not depend on the weights' values). Prints a markdown
table: estimate, measurement, error per plan, and per runtime, mode and batch the median error, the table's margin and
how much the machine's speed changed while the table and the plans were timed (`Timings.drift`).

    python bench/bench_lm_latency.py
    python bench/bench_lm_latency.py --runtimes eager,compile --batches 1
    python bench/bench_lm_latency.py --trials 3      # each case timed 3 times (a new table each): the median of 3

With `--trials N` every case is measured N times, a trial after the other (each: a new table, then the plans), and
the summary shows the median over the trials of each trial's median error, beside each trial's: on a shared machine a
slow spell of a few seconds can fall on one timing and not the next.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-lm")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runtimes", default="eager,compile,onnxruntime")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument(
        "--seconds", type=float, default=20.0, help="end-to-end rounds last at least this long (default: 20)"
    )
    p.add_argument("--trials", type=int, default=1, help="each case measured this many times (default: 1)")
    p.add_argument("--plans", nargs="*", default=["2→5:linear, 7→8:linear", "2→8:identity", "0→1:linear, 4→6:identity"])
    args = p.parse_args(argv)
    if args.trials < 1:
        p.error(f"--trials must be 1 or more, got {args.trials}")
    from toast.errors import ToastError
    from toast.models import load_model
    from toast.search._latency import latency_inputs, measure_latency_table, time_models, timing_model
    from toast.search._quiet import quiet_libraries
    from toast.search.runtimes import get_runtime
    from toast.spaces import Plan

    quiet_libraries()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu")
    L = loaded.num_blocks
    plans = [Plan((), L), *(Plan.parse(t, L) for t in args.plans)]
    start = time.perf_counter()
    rows, cases = [], {}  # (runtime, mode, batch) -> [(median error, max error, margin, drifts)] by trial
    for trial, name in itertools.product(range(1, args.trials + 1), args.runtimes.split(",")):
        runtime = get_runtime(name)
        for mode in ("prefill", "decode"):
            try:
                runtime.check(loaded.device, mode)
            except ToastError as exc:
                if trial == 1:
                    print(f"  {name} {mode}: skipped: {exc}", file=sys.stderr)
                continue
            for batch in (int(b) for b in args.batches.split(",")):
                t0 = time.perf_counter()
                table, _ = measure_latency_table(
                    loaded, kinds=["identity", "linear"], batch_size=batch, seq_len=args.seq, mode=mode, runtime=name
                )
                inputs = latency_inputs(loaded, batch_size=batch, seq_len=args.seq)
                measured = time_models(
                    runtime,
                    {plan: (lambda plan=plan: timing_model(loaded, plan)) for plan in plans},
                    inputs,
                    mode=mode,
                    warmup=2,
                    repeats=args.repeats,
                    seconds=args.seconds,
                )
                errors = []
                for plan in plans:
                    est, ms = table.estimate(plan), measured[plan]
                    errors.append(abs(est - ms) / ms)
                    rows.append(
                        f"| {name} | {mode} | {batch} | {trial} | `{plan if plan.spans else 'original'}` | {est:.3f} | "
                        f"{ms:.3f} | {100 * (est - ms) / ms:+.1f}% |"
                    )
                drift = f"{table.drift:+.0%}, {getattr(measured, 'drift', 0.0):+.0%}"
                cases.setdefault((name, mode, batch), []).append(
                    (float(np.median(errors)), max(errors), table.margin, drift)
                )
                print(f"  {name} {mode} batch {batch} trial {trial}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    summary = [
        f"| {name} | {mode} | {batch} | {np.median([t[0] for t in trials]):.1%} | "
        f"{', '.join(f'{t[0]:.1%}' for t in trials)} | {max(t[1] for t in trials):.1%} | "
        f"{'; '.join(f'{t[2]:.1%}' for t in trials)} | {'; '.join(t[3] for t in trials)} |"
        for (name, mode, batch), trials in cases.items()
    ]
    print(
        f"{args.model}, seq {args.seq}, torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    print("| runtime | mode | batch | trial | plan | estimated ms | measured ms | error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(
        "\n| runtime | mode | batch | median error (median over the trials) | each trial | max error | table margin | "
        "drift (table, plans) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
