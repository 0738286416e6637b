"""demo-lm's latency in every runtime and mode that runs it: the latency table's estimate against the end-to-end
measurement.

For each runtime (`eager`, `compile`, `onnxruntime`) and mode it runs (prefill: a forward over `batch × seq` tokens;
decode: one new token per sequence after `seq` cached ones, `CompressedModel.decode_step` with a `DynamicCache`;
onnxruntime runs prefill only), at batch 1 and 8: the runtime's table (`measure_latency_table(runtime=…)`, solved
from whole models) and the measured median of the original and the plans, timed end to end in the same runtime
(`time_models`, the models at their fitted shapes: timing does not depend on the weights' values). Prints a markdown
table: estimate, measurement, error per plan, and per runtime, mode and batch the median error, the table's margin and
how much the machine's speed changed while the table and the plans were timed (`Timings.drift`).

    python bench/bench_lm_latency.py
    python bench/bench_lm_latency.py --runtimes eager,compile --batches 1
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--seconds", type=float, default=2.0, help="end-to-end rounds last at least this long")
    p.add_argument("--plans", nargs="*", default=["2→5:linear, 7→8:linear", "2→8:identity", "0→1:linear, 4→6:identity"])
    args = p.parse_args(argv)
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
    rows, summary = [], []
    for name in args.runtimes.split(","):
        runtime = get_runtime(name)
        for mode in ("prefill", "decode"):
            try:
                runtime.check(loaded.device, mode)
            except ToastError as exc:
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
                        f"| {name} | {mode} | {batch} | `{plan if plan.spans else 'original'}` | {est:.3f} | {ms:.3f} | "
                        f"{100 * (est - ms) / ms:+.1f}% |"
                    )
                summary.append(
                    f"| {name} | {mode} | {batch} | {np.median(errors):.1%} | {max(errors):.1%} | {table.margin:.1%} | "
                    f"{table.drift:+.0%}, {getattr(measured, 'drift', 0.0):+.0%} |"
                )
                print(f"  {name} {mode} batch {batch}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(
        f"{args.model}, seq {args.seq}, torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"{time.perf_counter() - start:.0f} s in all\n"
    )
    print("| runtime | mode | batch | plan | estimated ms | measured ms | error |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print("\n| runtime | mode | batch | median error | max error | table margin | drift (table, plans) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
