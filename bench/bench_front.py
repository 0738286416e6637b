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

4. With `--live`: runs the default study (`tpe-local`, DP seeds) for real, each trial through the trial function, in
   the variants of `LIVE` (every plan on the full sets or multi-fidelity; prefix reuse on or off), and prints
   the same hypervolumes (from the fully scored trials only: what the front holds), the forward work per trial
   (block forwards run over the probe and evaluation samples, as a share of one full forward of the original
   model over them, averaged over the 100 trials, and over the distinct plans scored), the share of the scored
   plans' kept-block forwards the stored prefixes saved, the
   share of trials stopped at the subset, and how many of those would have been on the exhaustive front.

The hypervolume is the area dominated in (accuracy above the floor) × (1 − GFLOPs / original GFLOPs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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
    Config("TPE + local steps from the front, no repeats, DP front seeds", "tpe-local", None, 10, "front"),
)


@dataclass(frozen=True)
class Live:
    """One variant of the real study (`--live`)."""

    name: str
    fidelity_fraction: float  # 0: every plan on the full sets
    prefix_cache_gb: float  # 0: no prefix reuse
    fidelity_z: float = 2.0


LIVE = (
    Live("full sets, no prefix reuse (before)", 0.0, 0.0),
    Live("full sets, prefix reuse", 0.0, 4.0),
    Live("subset 0.25 (z 2), prefix reuse (default)", 0.25, 4.0),
    Live("subset 0.25 (z 1), prefix reuse", 0.25, 4.0, 1.0),
    Live("subset 0.5 (z 2), prefix reuse", 0.5, 4.0),
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
    p.add_argument("--live", default="", help="comma-separated indices into LIVE: real studies (default: none)")
    p.add_argument("--skip-lookup", action="store_true", help="no lookup studies (part 2)")
    args = p.parse_args()

    import optuna

    from toast.search import SearchSettings
    from toast.search._context import SearchContext
    from toast.search._quiet import quiet_libraries
    from toast.search._study import plan_key

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="toast-bench-front-"))
    settings = SearchSettings.from_flat(
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
    ran = reused = 0
    for i, plan in enumerate(plans):
        key = plan_key(plan)
        if args.table and i % 50 == 0:  # an interrupted bench resumes from the table
            args.table.write_text(json.dumps(table))
        if key not in table:
            r = ctx.evaluate(plan)
            ran, reused = ran + r["forward_blocks"], reused + r["forward_blocks_reused"]
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
    print(f"exhaustive front in the useful region: {', '.join(_front_text(useful, original))}")
    if ran + reused:
        print(f"exhaustive scoring: prefix reuse saved {reused / (ran + reused):.1%} of the kept-block forwards")
    print()
    configs = [CONFIGS[int(i)] for i in args.configs.split(",")] if args.configs else list(CONFIGS)
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.skip_lookup:
        _lookup_studies(ctx, settings, table, configs, seeds, original, floor, hv_all, hv_useful, work)
        print(
            f"| exhaustive ({len(plans)} plans) | 1 | 1 | 1 | 1 | 1 | 1 | {exhaustive_forwards / 1e6:.2f} | "
            f"{exhaustive_s:.0f} | – |"
        )
    if args.live:
        variants = [LIVE[int(i)] for i in args.live.split(",")]
        _live_studies(settings, table, variants, seeds, original, floor, hv_all, hv_useful, work)
    return 0


def _lookup_studies(ctx, settings, table, configs, seeds, original, floor, hv_all, hv_useful, work) -> None:
    """Part 2: each sampler configuration's real study, each plan's scores looked up in the exhaustive table."""
    from toast.runners import run_local
    from toast.search._study import Search, plan_key
    from toast.spaces import Plan

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
            s = settings.updated(
                sampler="random" if config.sampler == "gp" else config.sampler,
                seed=seed,
                seeds_per_study=config.seeds,
                fidelity_fraction=0.0,  # a looked-up plan is scored on the full sets
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


def _live_studies(settings, table, variants, seeds, original, floor, hv_all, hv_useful, work) -> None:
    """Part 4: the default study run for real in each variant (its own context: the stages and the prefix store
    are the context's), scored from its fully scored trials."""
    import numpy as np

    from toast.runners import run_local
    from toast.search import non_dominated
    from toast.search._context import SearchContext
    from toast.search._study import Search

    front_keys = set()  # the plans on the exhaustive front (accuracy up, GFLOPs down)
    keys = list(table)
    values = np.array([[table[k]["accuracy"], table[k]["gflops"]] for k in keys])
    for i in np.flatnonzero(non_dominated(values, ["maximize", "minimize"])):
        front_keys.add(keys[i])
    print(
        "\n| study (default: tpe-local, DP seeds) | HV@25 | HV@50 | HV@100 | useful HV@25 | useful HV@50 | useful HV@100 | "
        "forward / trial | forward / scored plan | saved by prefixes | stopped at subset | "
        "stopped but on the exhaustive front | wall@100 s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in variants:
        fractions: dict[tuple[str, int], list[float]] = {}
        work_share, work_scored, saved, stopped, missed, walls = [], [], [], [], [], []
        for seed in seeds:
            s = settings.updated(
                seed=seed,
                fidelity_fraction=v.fidelity_fraction,
                fidelity_z=v.fidelity_z,
                prefix_cache_gb=v.prefix_cache_gb,
                out=work / f"live-{v.fidelity_fraction}-{v.fidelity_z}-{v.prefix_cache_gb}-{seed}",
            )
            # the data and the translators are the table's (settings.seed); only the sampler's seed varies
            ctx = SearchContext.build(s.updated(seed=settings.seed), progress=False)
            if ctx.prefix_store is not None:  # every variant and seed starts from the original's states only
                for name in [n for n in ctx.prefix_store.sizes if n.endswith("-c")]:
                    ctx.prefix_store.drop(name)
            samples = len(ctx.probe_labels) + len(ctx.eval_labels)
            full_forward = samples * ctx.loaded.num_blocks
            search = Search(s, space=ctx.space, costs=ctx.costs, evaluate=ctx.evaluate, stats=ctx.captured.stats)
            search.prepare()
            t = time.perf_counter()
            run_local(search.study, search.objective, n_trials=search.trials_to_run())
            walls.append(time.perf_counter() - t)
            records = sorted(search.records(), key=lambda r: r["number"])[: CHECKPOINTS[-1]]
            for n in CHECKPOINTS:
                full = [
                    r
                    for r in records[:n]
                    if r["state"] == "COMPLETE" and r.get("scored_on") == "full" and r.get("accuracy") is not None
                ]
                pts = [(r["accuracy"], r["gflops"] / original) for r in full]
                fractions.setdefault(("all", n), []).append(area(pts, 0.0) / hv_all)
                fractions.setdefault(("useful", n), []).append(area(pts, floor) / hv_useful)
            scored = [r for r in records if r.get("scored_on") and "duplicate_of" not in r]  # distinct, scored
            ran = sum(r.get("forward_blocks", 0) for r in scored)
            reused = sum(r.get("forward_blocks_reused", 0) for r in scored)
            work_share.append(ran / len(records) / full_forward)  # duplicates and unscored plans: no forward
            work_scored.append(ran / max(len(scored), 1) / full_forward)
            saved.append(reused / max(ran + reused, 1))
            subset = [r for r in scored if r["scored_on"] == "subset"]
            stopped.append(len(subset) / max(len(scored), 1))
            missed.append(sum(plan_key_of(r) in front_keys for r in subset))
        cells = [_cell(fractions[part, n]) for part in ("all", "useful") for n in CHECKPOINTS]
        print(
            f"| {v.name} | {' | '.join(cells)} | {_cell(work_share, '.1%')} | {_cell(work_scored, '.1%')} | "
            f"{_cell(saved, '.1%')} | "
            f"{_cell(stopped, '.0%')} | {sum(missed)} | {statistics.median(walls):.0f} |"
        )


def plan_key_of(record: dict) -> str:
    return json.dumps(record["spans"])


def _cell(values: list[float], fmt: str = ".3f") -> str:
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})" if len(values) > 1 else f"{med:{fmt}}"


def _front_text(rows: list[dict], original: float) -> list[str]:
    out, best = [], -1.0
    for r in rows:
        if r["accuracy"] > best:
            best = r["accuracy"]
            out.append(f"{r['plan']} ({r['gflops'] / original:.0%} GFLOPs, {r['accuracy']:.2f} %)")
    return out


if __name__ == "__main__":
    sys.exit(main())
