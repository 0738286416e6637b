"""Search benchmark: trials per second of the local runner, and ridge vs Adam probe agreement.

    python bench/bench_search.py --model demo-vit --dataset digits --trials 40 --agreement-plans 20

1. Runs `--trials` random-sampler trials of the local runner (ridge probe) after the one-off
   preparation, and splits the time per trial into fit, forward, probe and overhead (medians).
2. For `--agreement-plans` random plans (0: skip this part), scores the same features with the closed-form ridge
   probe and with the papers' Adam probe (lr 1e-3, 5 epochs, batch 256, 3 seeds) and reports the
   Spearman rank correlation between the two accuracies (does the fast default rank plans like the
   slow one?), and the time of each probe.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo-vit")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--agreement-plans", type=int, default=20)
    parser.add_argument("--probe-samples", type=int, default=1347)
    parser.add_argument("--eval-samples", type=int, default=450)
    parser.add_argument("--calib-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from toast.objectives import probe_accuracy
    from toast.runners import run_local
    from toast.search import SearchSettings
    from toast.search._context import SearchContext
    from toast.search._quiet import quiet_libraries
    from toast.search._study import Search

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="toast-bench-search-"))
    settings = SearchSettings.from_flat(
        model=args.model,
        dataset=args.dataset,
        out=work / "run",
        cache_dir=work / "cache",
        sampler="random",
        trials=args.trials,
        probe_samples=args.probe_samples,
        eval_samples=args.eval_samples,
        calib_samples=args.calib_samples,
        seed=args.seed,
        progress=False,
        seeds_per_study=0,
    )
    t = time.perf_counter()
    ctx = SearchContext.build(settings, progress=False)
    prep = time.perf_counter() - t
    search = Search(settings, space=ctx.space, costs=ctx.costs, evaluate=ctx.evaluate, stats=ctx.captured.stats)
    t = time.perf_counter()
    run_local(search.study, search.objective, n_trials=args.trials)
    wall = time.perf_counter() - t
    records = [
        r for r in search.records() if r.get("scored", True) and "duplicate_of" not in r and r["state"] == "COMPLETE"
    ]
    med = lambda k: statistics.median(r[k] for r in records)  # noqa: E731
    print(
        f"{args.model} on {args.dataset}: {ctx.loaded.num_blocks} blocks, width {ctx.loaded.hidden_size}; "
        f"probe {len(ctx.probe_labels)} / eval {len(ctx.eval_labels)} samples; space {ctx.space.size():,} plans"
    )
    print()
    print("| local runner, ridge probe | value |")
    print("| --- | --- |")
    print(f"| one-off preparation (load, calibration capture, cost table, inputs, baseline) | {prep:.1f} s |")
    print(f"| trials run (random sampler) | {args.trials} ({len(records)} distinct plans scored) |")
    print(f"| trials per second | {args.trials / wall:.2f} |")
    for k in ("seconds", "seconds_fit", "seconds_forward", "seconds_probe", "seconds_overhead"):
        print(
            f"| median {k.replace('seconds_', '').replace('seconds', 'total')} per scored trial | {med(k) * 1000:.0f} ms |"
        )
    print(
        f"| runner overhead per trial (wall / trials − median total) | {(wall / args.trials - med('seconds')) * 1000:.0f} ms |"
    )

    wanted = min(args.agreement_plans, ctx.space.size())
    if wanted <= 0:  # --agreement-plans 0: no probe comparison
        return 0
    rng = np.random.default_rng(args.seed)
    plans, seen = [], set()
    all_plans = list(ctx.space.enumerate(limit=10**9)) if ctx.space.size() <= 20000 else None
    while len(plans) < wanted:
        plan = (
            all_plans[rng.integers(len(all_plans))]
            if all_plans
            else ctx.space.decode(
                [ctx.space.choices[i] for i in rng.integers(0, len(ctx.space.choices), ctx.loaded.num_blocks)]
            )
        )
        key = str(plan)
        if key not in seen:
            seen.add(key)
            plans.append(plan)
    ridge, adam, t_ridge, t_adam = [], [], [], []
    for plan in plans:
        model = ctx.model_for(plan)
        train = ctx.outputs(model, "probe")
        test = ctx.outputs(model, "eval")
        t = time.perf_counter()
        ridge.append(probe_accuracy(train, ctx.probe_labels, test, ctx.eval_labels, probe="ridge").mean)
        t_ridge.append(time.perf_counter() - t)
        t = time.perf_counter()
        adam.append(probe_accuracy(train, ctx.probe_labels, test, ctx.eval_labels, probe="adam", seeds=(0, 1, 2)).mean)
        t_adam.append(time.perf_counter() - t)
    rho = spearmanr(ridge, adam).statistic if len(plans) > 1 else float("nan")  # one plan has no ranking
    print()
    print(f"| ridge vs Adam probe over {len(plans)} random plans | value |")
    print("| --- | --- |")
    print(f"| Spearman rank correlation of accuracies | {rho:.3f} |")
    print(f"| accuracy range, ridge | {min(ridge):.1f} – {max(ridge):.1f} % |")
    print(f"| accuracy range, Adam (mean of 3 seeds) | {min(adam):.1f} – {max(adam):.1f} % |")
    print(f"| median probe time, ridge | {statistics.median(t_ridge) * 1000:.0f} ms |")
    print(f"| median probe time, Adam (3 seeds) | {statistics.median(t_adam) * 1000:.0f} ms |")
    print(f"| Adam / ridge time | {statistics.median(t_adam) / statistics.median(t_ridge):.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
