"""Front quality per sampler: hypervolume after 25, 50 and 100 trials as a fraction of the exhaustive front's.

    python bench/bench_front.py --model demo-vit --dataset digits
    python bench/bench_front.py --model all-minilm-l6-v2 --dataset docstrings --probe-samples 240 --eval-samples 120

1. Scores every plan of the space (identity and linear: 729 plans on a 6-block model) once, through the
   search's own trial function (`SearchContext.evaluate`), and keeps each plan's accuracy, GFLOPs, seconds
   and block forwards (probe + evaluation samples × kept blocks): the exhaustive front is the reference.
2. For each sampler configuration and seed, runs the real study (`Search`: its sampler, seeds, duplicate
   and budget handling) for `--trials` trials, with each plan's scores looked up in that table (plans are
   deterministic given the fitted translators, so a lookup is what a real trial would have returned).
3. Prints, per configuration, the median over seeds (and the range) of the hypervolume after 25, 50 and
   100 trials as a fraction of the exhaustive one, over the whole front and over the useful region
   (accuracy above `--floor`, default: 92% of the original's), the block forwards spent
   (samples × blocks, distinct scored plans only) and the wall time such a study would take (the sampler's
   own time plus the table's seconds of the plans it scored).

The hypervolume is the area dominated in (accuracy above the floor) × (1 − GFLOPs / original GFLOPs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

CHECKPOINTS = (25, 50, 100)


@dataclass(frozen=True)
class Config:
    """One sampler configuration of the study."""

    name: str
    sampler: str  # SearchSettings.sampler
    population: int | None = None  # NSGA-II population (None: the study's default)
    seeds: int = 10  # seeds_per_study: similarity-ranked plans enqueued first
    seeding: str = (
        "greedy"  # greedy: today's `seed_plans`; front: `front_seed_plans` (the DP); both: front, then greedy
    )


CONFIGS = (
    Config("NSGA-II, population 25, seeded (today's default)", "nsga2", None, 10),
    Config("NSGA-II, population 25, no seeds", "nsga2", None, 0),
    Config("NSGA-II, population 10, seeded", "nsga2", 10, 10),
    Config("NSGA-II, population 50, seeded", "nsga2", 50, 10),
    Config("TPE (multivariate), seeded", "tpe", None, 10),
    Config("TPE (multivariate), no seeds", "tpe", None, 0),
    Config("NSGA-II, population 25, DP front seeds", "nsga2", None, 10, "front"),
    Config("NSGA-II, population 25, DP front + greedy seeds", "nsga2", None, 10, "both"),
    Config("TPE (multivariate), DP front seeds", "tpe", None, 10, "front"),
    Config("GP, seeded", "gp", None, 10),
    Config("random, seeded", "random", None, 10),
    Config("random, no seeds", "random", None, 0),
)


def area(points: list[tuple[float, float]], floor: float) -> float:
    """Hypervolume of `(accuracy, cost fraction)` points (accuracy maximised, cost minimised) above the accuracy
    `floor` and below cost 1 (the original's): `toast.search.hypervolume`."""
    import numpy as np

    from toast.search import hypervolume

    values = np.array(points, dtype=np.float64).reshape(-1, 2)
    return hypervolume(values, ["maximize", "minimize"], [floor, 1.0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo-vit")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--probe-samples", type=int, default=1347)
    p.add_argument("--eval-samples", type=int, default=450)
    p.add_argument("--calib-samples", type=int, default=500)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--floor",
        type=float,
        default=None,
        help="accuracy floor of the useful region (default: 92%% of the original's accuracy)",
    )
    p.add_argument("--configs", default="", help="comma-separated indices into the configuration list (default: all)")
    p.add_argument("--cache-dir", type=Path, default=None, help="activation cache (default: a fresh temporary one)")
    p.add_argument("--table", type=Path, default=None, help="JSON of the exhaustive scores: reused if it exists")
    args = p.parse_args()

    import optuna

    from toast.runners import run_local
    from toast.search import Search, SearchContext, SearchSettings, quiet_libraries
    from toast.search._study import plan_key
    from toast.spaces import Plan

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="toast-bench-front-"))
    settings = SearchSettings(
        model=args.model,
        dataset=args.dataset,
        out=work / "run",
        cache_dir=args.cache_dir or work / "cache",
        translators=("identity", "linear"),
        objectives=("accuracy", "gflops"),
        probe_samples=args.probe_samples,
        eval_samples=args.eval_samples,
        calib_samples=args.calib_samples,
        trials=args.trials,
        progress=False,
    )
    t = time.perf_counter()
    ctx = SearchContext.build(settings, progress=False)
    prep = time.perf_counter() - t
    samples = len(ctx.probe_labels) + len(ctx.eval_labels)
    base = ctx.baseline
    original = base["gflops"]

    # 1. the exhaustive table
    table: dict[str, dict] = {}
    if args.table and args.table.exists():
        table = json.loads(args.table.read_text())
    plans = list(ctx.space.enumerate())
    t = time.perf_counter()
    for i, plan in enumerate(plans):
        key = plan_key(plan)
        if args.table and i % 50 == 0:  # an interrupted bench resumes from the table
            args.table.write_text(json.dumps(table))
        if key not in table:
            r = ctx.evaluate(plan)
            table[key] = {
                "plan": str(plan),
                "accuracy": r["accuracy"],
                "gflops": r["gflops"],
                "seconds": r["seconds"],
                "forwards": samples * len(plan.kept),
            }
    exhaustive_s = time.perf_counter() - t
    if args.table:
        args.table.write_text(json.dumps(table))
    floor = args.floor if args.floor is not None else 0.92 * base["accuracy"]
    points = [(r["accuracy"], r["gflops"] / original) for r in table.values()]
    hv_all, hv_useful = area(points, 0.0), area(points, floor)
    exhaustive_forwards = sum(r["forwards"] for r in table.values())
    print(
        f"{args.model} on {args.dataset}: {ctx.loaded.num_blocks} blocks; probe {len(ctx.probe_labels)} / eval "
        f"{len(ctx.eval_labels)} samples; space {len(plans)} plans; preparation {prep:.1f} s; exhaustive scoring "
        f"{exhaustive_s:.0f} s, {exhaustive_forwards / 1e6:.2f} M sample-block forwards; original accuracy "
        f"{base['accuracy']:.2f} %, useful region: accuracy >= {floor:.2f} %"
    )
    useful = sorted((r for r in table.values() if r["accuracy"] >= floor), key=lambda r: r["gflops"])
    print(f"exhaustive front in the useful region: {', '.join(_front_text(useful, original))}\n")

    # 2. the studies, scores looked up
    class LookupSearch(Search):
        population: int | None = None
        seeding: str = "greedy"
        gp: bool = False

        def prepare(self) -> None:
            if self.seeding == "both" and self.new:  # the DP's plans first, then today's greedy ones
                self.seeding = "front"
                self.enqueue(self.seeds())
                self.seeding = "greedy"
            super().prepare()

    def lookup(plan):
        return dict(table[plan_key(plan)])

    configs = [CONFIGS[int(i)] for i in args.configs.split(",")] if args.configs else list(CONFIGS)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        "| sampler | HV@25 | HV@50 | HV@100 | useful HV@25 | useful HV@50 | useful HV@100 | "
        "forwards@100 (M) | wall@100 s | sampler s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for config in configs:
        fractions: dict[tuple[str, int], list[float]] = {}
        forwards, walls, own = [], [], []
        for seed in seeds:
            LookupSearch.population, LookupSearch.seeding = config.population, config.seeding
            LookupSearch.gp = config.sampler == "gp"
            s = replace(
                settings,
                sampler="random" if config.sampler == "gp" else config.sampler,
                seed=seed,
                seeds_per_study=config.seeds,
                out=work / f"study-{config.sampler}-{config.population}-{config.seeds}-{config.seeding}-{seed}",
            )
            search = LookupSearch(s, space=ctx.space, costs=ctx.costs, evaluate=lookup, stats=ctx.captured.stats)
            search.prepare()
            t = time.perf_counter()
            run_local(search.study, search.objective, n_trials=search.trials_to_run())
            own.append(time.perf_counter() - t)
            records = sorted(search.records(), key=lambda r: r["number"])
            for n in CHECKPOINTS:
                first = [r for r in records[:n] if r["state"] == "COMPLETE" and r.get("accuracy") is not None]
                pts = [(r["accuracy"], r["gflops"] / original) for r in first]
                fractions.setdefault(("all", n), []).append(area(pts, 0.0) / hv_all)
                fractions.setdefault(("useful", n), []).append(area(pts, floor) / hv_useful)
            scored = {  # distinct plans the study really scored (not duplicates, not far over a budget)
                json.dumps(r["spans"])
                for r in records[: CHECKPOINTS[-1]]
                if r["state"] == "COMPLETE" and r.get("scored", True) and "duplicate_of" not in r
            }
            spent = [table[plan_key(Plan.of(json.loads(k), ctx.loaded.num_blocks))] for k in scored]
            forwards.append(sum(r["forwards"] for r in spent))
            walls.append(own[-1] + sum(r["seconds"] for r in spent))
        cells = [_cell(fractions[part, n]) for part in ("all", "useful") for n in CHECKPOINTS]
        print(
            f"| {config.name} | {' | '.join(cells)} | {statistics.median(forwards) / 1e6:.2f} | "
            f"{statistics.median(walls):.0f} | {statistics.median(own):.1f} |"
        )
    print(
        f"| exhaustive ({len(plans)} plans) | 1 | 1 | 1 | 1 | 1 | 1 | {exhaustive_forwards / 1e6:.2f} | "
        f"{exhaustive_s:.0f} | – |"
    )
    return 0


def _cell(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.3f} ({min(values):.3f}–{max(values):.3f})" if len(values) > 1 else f"{med:.3f}"


def _front_text(rows: list[dict], original: float) -> list[str]:
    out, best = [], -1.0
    for r in rows:
        if r["accuracy"] > best:
            best = r["accuracy"]
            out.append(f"{r['plan']} ({r['gflops'] / original:.0%} GFLOPs, {r['accuracy']:.2f} %)")
    return out


if __name__ == "__main__":
    sys.exit(main())
