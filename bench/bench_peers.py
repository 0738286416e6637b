"""The peers' methods as samplers of the same study, against the default search (`tpe-local`), on looked-up scores.

    python bench/bench_peers.py --model demo-vit --dataset digits --seeds 0,1,2,3,4,5,6,7,8,9 --table T.json
    python bench/bench_peers.py --model demo-lm --seeds 0,1,2,3,4 --table T.json
    python bench/bench_peers.py --model all-minilm-l6-v2 --dataset DOCSTRINGS --probe-samples 1200 --eval-samples 1200

1. The score table: every plan's task score (accuracy for an encoder, perplexity for a causal LM), GFLOPs and seconds,
   through the search's own trial function (`SearchContext.evaluate`, full sets: `fidelity_fraction` 0), memoised and
   kept in `--table` (JSON, reused). The reference front: the exhaustive table where the space holds at most 1,000
   plans (every plan scored); else the union of every plan any method below scored plus a long `tpe-local` run
   (`--reference-trials`, seed 0).
2. Each method is a real `Search` study (its sampler, seeds, duplicate and budget handling, trial count from
   `trials_to_run`), each plan's scores looked up in the table (scored for real the first time a plan is met): the
   default `tpe-local` (DP seeds), the same with the peers' one-shot plans enqueued first (`Search.peer_plans`:
   ShortGPT's and ReplaceMe's), `tpe` and `random` (DP seeds too, as the product runs them), the peers' one-shot
   rules `shortgpt` and `replaceme` and greedy `sleb` (deterministic: one run each, their own number of trials), and
   `evopress` (random: every seed, `--trials` split over its removal levels). The default's seeds: as `Search.prepare`
   makes them (`peer_seeding`: the peers' one-shot plans, fewest removed blocks first, then the DP's); the variant
   "tpe-local, DP seeds only" sets `peer_seeding` off (the default before), "tpe-local + peer seeds" enqueues every
   plan of `Search.peer_plans()` before `prepare()` seeds.
3. Markdown tables on stdout:
   a. per method: distinct plans evaluated (complete, scored, not a duplicate), wall time (the sampler's own time,
      without any real scoring, plus the table's seconds of its distinct plans), hypervolume (whole, useful) as a
      fraction of the reference's; medians (min–max) over seeds where the method is random.
   b. goal 1, per peer: its hypervolume against the default's after as many distinct plans as the peer scored
      (median over the default's seeds), and per number k of removed blocks (spans' lengths added up) the peer's
      best task score against the default's best among those first plans; a peer that beats the default's median
      is flagged, with its plan.
   c. goal 2: the useful hypervolume after 25 / 50 / 100 trials, `tpe-local` with and without the peer seeds.
   d. goal 3: each one-shot plan (ShortGPT, ReplaceMe) against the reference: its task score and the reference's best
      at no more GFLOPs (the gap).
   e. a plot, `bench/peers-<model>.png`: the useful hypervolume fraction against distinct plans evaluated, per method
      (median over seeds).

Hypervolume, as a fraction of the reference front's (`toast.search.hypervolume`), with the GFLOPs as a fraction of
the original's (cost reference 1, the original):
- encoder: the area dominated in (accuracy above the floor) × (1 − GFLOPs fraction); whole: floor 0; useful: floor
  0.92 × the original's accuracy (as `bench_front.py`).
- causal LM: perplexity minimised, the area dominated in (ceiling − perplexity) × (1 − GFLOPs fraction), reference
  point (ceiling, 1.0); whole: ceiling 8 × the original's perplexity; useful: ceiling 2 × the original's.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS = (25, 50, 100)
EXHAUSTIVE_LIMIT = 1000  # spaces up to this many plans are scored whole: the reference is the exhaustive front
PEERS = ("shortgpt", "replaceme", "sleb", "evopress")
ONE_SHOT = ("shortgpt", "replaceme")
LM_MODELS = ("demo-lm",)


@dataclass(frozen=True)
class Method:
    name: str
    sampler: str
    random: bool = True  # run once per seed (False: one run, seed 0: the rule reads no randomness)
    peer_seeds: bool = False  # `Search.peer_plans()` enqueued before the study's own seeds
    peer_seeding: bool = True  # `Search.peer_seeding`: the study's own seeds start with the peers' one-shot plans


METHODS = (
    Method("tpe-local", "tpe-local"),
    Method("tpe-local, DP seeds only", "tpe-local", peer_seeding=False),
    Method("tpe-local + peer seeds", "tpe-local", peer_seeds=True),
    Method("tpe", "tpe"),
    Method("random", "random"),
    Method("shortgpt", "shortgpt", random=False),
    Method("replaceme", "replaceme", random=False),
    Method("sleb", "sleb", random=False),
    Method("evopress", "evopress"),
)
DEFAULT = "tpe-local"
PREVIOUS_DEFAULT = "tpe-local, DP seeds only"  # the default before `peer_seeding`
STYLES = {PREVIOUS_DEFAULT: "--", "tpe-local + peer seeds": ":", "random": "-."}  # the plot's; others solid


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo-vit")
    p.add_argument("--dataset", default=None, help="default: python-docs for a causal LM, digits otherwise")
    p.add_argument("--lm", action="store_true", help="score perplexity (default: for demo-lm)")
    p.add_argument("--probe-samples", type=int, default=None, help="default: 1347 (encoder), the settings' (LM)")
    p.add_argument("--eval-samples", type=int, default=None, help="default: 450 (encoder), the settings' (LM)")
    p.add_argument("--calib-samples", type=int, default=None, help="default: 500 (encoder), 128 (LM)")
    p.add_argument("--seq-len", type=int, default=256, help="a causal LM's sequence length")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--reference-trials", type=int, default=300, help="the reference tpe-local run (large spaces)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="", help="comma-separated method names (default: all)")
    p.add_argument("--cache-dir", type=Path, default=None, help="activation cache (default: a fresh temporary one)")
    p.add_argument("--table", type=Path, default=None, help="JSON of the scores: reused and extended")
    p.add_argument("--plot", type=Path, default=None, help="default: bench/peers-<model>.png")
    return p.parse_args(argv)


class Table:
    """Memoised `evaluate(plan)`: task score, GFLOPs, seconds, forwards by plan key; saved to `path` as it grows."""

    def __init__(self, ctx, score: str, path: Path | None, samples: int) -> None:
        self.ctx, self.score, self.path, self.samples = ctx, score, path, samples
        self.rows: dict[str, dict] = json.loads(path.read_text()) if path and path.exists() else {}
        self.real_s = 0.0  # seconds spent scoring plans for real (not the sampler's own time)
        self.new = 0

    def get(self, plan) -> dict:
        from toast.search._study import plan_key

        key = plan_key(plan)
        if key not in self.rows:
            t = time.perf_counter()
            r = self.ctx.evaluate(plan)
            self.rows[key] = {
                "plan": str(plan),
                "spans": plan.to_json(),
                self.score: r[self.score],
                "gflops": r["gflops"],
                "seconds": r["seconds"],
                "forwards": self.samples * len(plan.kept),
            }
            self.real_s += time.perf_counter() - t
            self.new += 1
            if self.new % 25 == 0:
                self.save()
        return dict(self.rows[key])

    def save(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.rows))
            tmp.replace(self.path)


class Scorer:
    """Hypervolume of records, whole and useful, as fractions of the reference's (see the module)."""

    def __init__(self, score: str, lm: bool, original_score: float, original_gflops: float) -> None:
        self.score, self.lm, self.original, self.gflops = score, lm, original_score, original_gflops
        self.bounds = (
            {"whole": 8 * original_score, "useful": 2 * original_score}
            if lm
            else {
                "whole": 0.0,
                "useful": 0.92 * original_score,
            }
        )
        self.reference = {"whole": 1.0, "useful": 1.0}

    def points(self, rows) -> list[tuple[float, float]]:
        out = []
        for r in rows:
            v = r.get(self.score)
            if isinstance(v, (int, float)) and math.isfinite(v) and r.get("gflops") is not None:
                out.append((float(v), r["gflops"] / self.gflops))
        return out

    def raw(self, rows, part: str) -> float:
        import numpy as np

        from toast.search import hypervolume

        pts = self.points(rows)
        if not pts:
            return 0.0
        values = np.array(pts, dtype=np.float64).reshape(-1, 2)
        direction = "minimize" if self.lm else "maximize"
        return hypervolume(values, [direction, "minimize"], [self.bounds[part], 1.0])

    def fraction(self, rows, part: str) -> float:
        return self.raw(rows, part) / self.reference[part] if self.reference[part] > 0 else float("nan")

    def better(self, a: float, b: float) -> bool:
        return a < b if self.lm else a > b


@dataclass
class Run:
    method: str
    seed: int
    records: list[dict]  # sorted by trial number
    distinct: list[dict]  # the distinct scored plans, in trial order (each with `number`)
    own_s: float  # the sampler's own time (real scoring excluded)
    wall_s: float  # own + the table's seconds of the distinct plans


def removed(spans) -> int:
    return sum(end - start for start, end, _ in spans or [])


def distinct_scored(records: list[dict], score: str) -> list[dict]:
    seen, out = set(), []
    for r in records:
        if r["state"] != "COMPLETE" or not r.get("scored", True) or "duplicate_of" in r or r.get(score) is None:
            continue
        key = json.dumps(r.get("spans"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    lm = args.lm or args.model in LM_MODELS
    dataset = args.dataset or ("python-docs" if lm else "digits")
    score = "perplexity" if lm else "accuracy"

    import optuna

    from toast.search import SearchSettings
    from toast.search._context import SearchContext
    from toast.search._quiet import quiet_libraries

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="toast-bench-peers-"))
    flat = dict(
        model=args.model,
        dataset=dataset,
        out=str(work / "run"),
        cache_dir=str(args.cache_dir or work / "cache"),
        translators=("identity", "linear"),
        objectives=(score, "gflops"),
        trials=args.trials,
        fidelity_fraction=0.0,
        progress=False,
    )
    samples_given = {
        "probe_samples": args.probe_samples if args.probe_samples is not None else (None if lm else 1347),
        "eval_samples": args.eval_samples if args.eval_samples is not None else (None if lm else 450),
        "calib_samples": args.calib_samples if args.calib_samples is not None else (128 if lm else 500),
    }
    flat.update({k: v for k, v in samples_given.items() if v is not None})
    if lm:
        flat["seq_len"] = args.seq_len
    settings = SearchSettings.from_flat(**flat)
    t = time.perf_counter()
    ctx = SearchContext.build(settings, progress=False, notes=False)
    prep_s = time.perf_counter() - t
    samples = len(ctx.probe_labels) + len(ctx.eval_labels)
    base = ctx.baseline
    table = Table(ctx, score, args.table, samples)
    scorer = Scorer(score, lm, base[score], base["gflops"])
    size = ctx.space.size()
    exhaustive = size <= EXHAUSTIVE_LIMIT

    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    print(f"code: {code_version()}")
    print(
        f"\n{args.model} on {dataset}: {ctx.loaded.num_blocks} blocks; translators identity, linear; space "
        f"{size:,} plans (removal limit {ctx.space.removal_limit}); probe {len(ctx.probe_labels)} / eval "
        f"{len(ctx.eval_labels)} samples; calibration {samples_given['calib_samples']}"
        + (f" sequences of {args.seq_len} tokens" if lm else "")
        + f"; original {score} {base[score]:.4g}, {base['gflops']:.4g} GFLOPs; preparation {prep_s:.0f} s"
    )
    print(
        f"table: {len(table.rows)} plans from {args.table}" if args.table and table.rows else "table: new",
        flush=True,
    )

    # 1. the exhaustive reference, where the space is small
    t = time.perf_counter()
    if exhaustive:
        for plan in ctx.space.enumerate():
            table.get(plan)
        table.save()
        print(f"exhaustive table: {size} plans ({table.new} scored now, {time.perf_counter() - t:.0f} s)", flush=True)

    # 2. the studies
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = [m for m in METHODS if not args.methods or m.name in args.methods.split(",")]
    runs: dict[str, list[Run]] = {}
    peer_plans: list = []
    for m in chosen:
        for seed in seeds if m.random else seeds[:1]:
            t = time.perf_counter()
            run, plans = study(ctx, settings, table, m, seed, args.trials, work)
            runs.setdefault(m.name, []).append(run)
            peer_plans = plans or peer_plans
            print(
                f"  ran {m.name} seed {seed}: {len(run.records)} trials, {len(run.distinct)} distinct, "
                f"{time.perf_counter() - t:.0f} s (table {len(table.rows)} plans)",
                flush=True,
            )
    reference_run = None
    if not exhaustive:
        t = time.perf_counter()
        reference_run, _ = study(ctx, settings, table, Method("reference", "tpe-local"), 0, args.reference_trials, work)
        print(f"  reference tpe-local run, {args.reference_trials} trials: {time.perf_counter() - t:.0f} s", flush=True)
    table.save()

    # the reference front
    if exhaustive:
        ref_rows = list(table.rows.values())
        ref_text = f"exhaustive front ({size} plans)"
    else:
        keys = {json.dumps(r["spans"]) for rs in runs.values() for run in rs for r in run.distinct}
        keys |= {json.dumps(r["spans"]) for r in reference_run.distinct}
        ref_rows = [r for r in table.rows.values() if json.dumps(r["spans"]) in keys]
        ref_text = (
            f"union of every method's plans and a {args.reference_trials}-trial tpe-local run ({len(ref_rows)} plans)"
        )
    scorer.reference = {part: scorer.raw(ref_rows, part) for part in ("whole", "useful")}
    bound = "ceiling" if lm else "floor"
    print(
        f"reference: {ref_text}; hypervolume whole {scorer.reference['whole']:.4g} ({bound} "
        f"{scorer.bounds['whole']:.4g}), useful {scorer.reference['useful']:.4g} ({bound} {scorer.bounds['useful']:.4g})"
    )
    print()
    report(runs, scorer, ref_rows, peer_plans, ctx, lm)
    plot(runs, scorer, args.plot or Path(__file__).parent / f"peers-{args.model}.png", args.model)
    return 0


def code_version() -> str:
    """The commit the bench ran on, and the files changed since (the toast code is read from the work tree)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--short"], cwd=root, capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    changed = [line[3:] for line in dirty.splitlines() if line.endswith(".py") and not line.startswith("??")]
    return head.strip() + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def study(ctx, settings, table: Table, m: Method, seed: int, trials: int, work: Path):
    """One real study of `m` with looked-up scores; returns its `Run` and the peer plans it was seeded with."""
    from toast.runners import run_local
    from toast.search._study import Search

    class LookupSearch(Search):
        peer_seeding = m.peer_seeding

    def lookup(plan, **_):
        return table.get(plan)

    s = settings.updated(
        sampler=m.sampler,
        seed=seed,
        trials=trials,
        out=str(work / f"study-{re.sub('[^A-Za-z0-9]+', '-', m.name)}-{trials}-{seed}"),
    )
    search = LookupSearch(s, space=ctx.space, costs=ctx.costs, evaluate=lookup, stats=ctx.captured.stats)
    plans = []
    if m.peer_seeds:
        plans = search.peer_plans()
        search.enqueue(plans)
    search.prepare()
    real = table.real_s
    t = time.perf_counter()
    run_local(search.study, search.objective, n_trials=search.trials_to_run())
    own = time.perf_counter() - t - (table.real_s - real)
    records = sorted(search.records(), key=lambda r: r["number"])
    distinct = distinct_scored(records, table.score)
    from toast.search._study import plan_key
    from toast.spaces import Plan

    wall = own + sum(table.rows[plan_key(Plan.of(r["spans"], ctx.loaded.num_blocks))]["seconds"] for r in distinct)
    return Run(m.name, seed, records, distinct, own, wall), plans


def cell(values: list[float], fmt: str = ".3f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})" if len(values) > 1 else f"{med:{fmt}}"


def report(runs: dict[str, list[Run]], scorer: Scorer, ref_rows, peer_plans, ctx, lm: bool) -> None:
    score = scorer.score
    fmt = ".3f" if lm else ".2f"
    # a. per method
    print("## a. per method (median (min–max) over seeds where random)\n")
    print("| method | runs | distinct plans | wall s (own + table) | sampler own s | HV whole | HV useful |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rs in runs.items():
        print(
            f"| {name} | {len(rs)} | {cell([len(r.distinct) for r in rs], '.0f')} | {cell([r.wall_s for r in rs], '.0f')} "
            f"| {cell([r.own_s for r in rs], '.1f')} | {cell([scorer.fraction(r.distinct, 'whole') for r in rs])} | "
            f"{cell([scorer.fraction(r.distinct, 'useful') for r in rs])} |"
        )
    print()

    # b. goal 1: each peer against the default (and the previous default) after as many distinct plans
    for baseline in (DEFAULT, PREVIOUS_DEFAULT):
        goal1(runs, scorer, baseline, lm)

    # c. goal 2: the peer seeds' effect on the default
    print("## c. goal 2: useful HV fraction after 25 / 50 / 100 trials (median (min–max) over seeds)\n")
    print(
        "| method | seeds | "
        + " | ".join(f"useful HV@{n}" for n in CHECKPOINTS)
        + " | "
        + " | ".join(f"HV@{n}" for n in CHECKPOINTS)
        + " |"
    )
    print("| --- | ---: |" + " ---: |" * (2 * len(CHECKPOINTS)))
    for name in (DEFAULT, "tpe-local, DP seeds only", "tpe-local + peer seeds", "tpe", "random", "evopress"):
        rs = runs.get(name)
        if not rs:
            continue
        cells = [
            cell([scorer.fraction(distinct_scored(r.records[:n], score), part) for r in rs])
            for part in ("useful", "whole")
            for n in CHECKPOINTS
        ]
        print(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    default = runs.get(DEFAULT, [])
    if default:
        first = [r["plan"] for r in default[0].records[:10]]
        print(f"\n{DEFAULT}'s first 10 trials (seed {default[0].seed}), separated by ';': {'; '.join(first)}")
    if peer_plans:
        print(
            f"\npeer seeds ({len(peer_plans)} plans, enqueued first, separated by ';'): {'; '.join(str(p) for p in peer_plans)}"
        )
    print()

    # d. goal 3: the one-shot plans against the reference
    print(
        f"## d. goal 3: each one-shot plan against the reference: its {score} and the reference's best at no more "
        "GFLOPs (gap: the reference's better by)\n"
    )
    print(
        f"| rule | plan | k | GFLOPs % | {score} | reference best plan (≤ GFLOPs) | its GFLOPs % | its {score} | gap |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for name in ONE_SHOT:
        for run in runs.get(name, []):
            for r in run.distinct:
                pool = [x for x in ref_rows if x["gflops"] <= r["gflops"] + 1e-9 and x.get(score) is not None]
                pool = [x for x in pool if math.isfinite(x[score])]
                best = (min if lm else max)(pool, key=lambda x: x[score])
                gap = (r[score] - best[score]) if lm else (best[score] - r[score])
                print(
                    f"| {name} | {r['plan']} | {removed(r['spans'])} | {r['gflops'] / scorer.gflops:.0%} | "
                    f"{r[score]:{fmt}} | {best['plan']} | {best['gflops'] / scorer.gflops:.0%} | {best[score]:{fmt}} | "
                    f"{gap:{fmt}} |"
                )
    print()


def goal1(runs: dict[str, list[Run]], scorer: Scorer, baseline: str, lm: bool) -> None:
    """Section b against `baseline` (its runs are "the default" in the tables)."""
    score = scorer.score
    fmt = ".3f" if lm else ".2f"

    default = runs.get(baseline, [])
    if default:
        print(
            f"## b. goal 1: each peer against {baseline} after the same number n of distinct plans scored (the "
            f"default's first n distinct plans, in trial order; median (min–max) over its {len(default)} seeds; a "
            "random peer: median (min–max) over its seeds, each against the default at its own n)\n"
        )
        print("| peer | runs | n | peer HV whole | default HV whole | peer HV useful | default HV useful |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for peer in PEERS:
            rs = runs.get(peer, [])
            if not rs:
                continue
            d = {
                part: [scorer.fraction(r.distinct[: len(p.distinct)], part) for p in rs for r in default]
                for part in ("whole", "useful")
            }
            print(
                f"| {peer} | {len(rs)} | {cell([len(p.distinct) for p in rs], '.0f')} | "
                f"{cell([scorer.fraction(p.distinct, 'whole') for p in rs])} | {cell(d['whole'])} | "
                f"{cell([scorer.fraction(p.distinct, 'useful') for p in rs])} | {cell(d['useful'])} |"
            )
        print()
        better = "lower" if lm else "higher"
        print(
            f"Per number k of removed blocks (spans' lengths added up): the peer's best {score} ({better} is better) "
            f"against the default's best among its first n distinct plans (n: the peer's; median (min–max) over the "
            f"default's seeds; '–': none with k removed). **WIN**: the peer's beats the default's median (a random "
            f"peer: its median over its seeds does); 'beats x/y': the (peer run, default seed) pairs where the peer's "
            f"is better or the default has none. The plan named: a random peer's best over its seeds.\n"
        )
        print(
            f"| peer | n | k | peer best plan | peer {score} | default best {score} | default's plan (best seed) | peer beats | win |"
        )
        print("| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | --- |")
        wins = []
        for peer in PEERS:
            rs = runs.get(peer, [])
            if not rs:
                continue
            ks = sorted({removed(r["spans"]) for p in rs for r in p.distinct})
            for k in ks:
                mine = [(p, best_at(p.distinct, k, scorer)) for p in rs]
                mine = [(p, x) for p, x in mine if x is not None]
                if not mine:
                    continue
                mine_values = [x[score] for _, x in mine]
                top = (min if lm else max)((x for _, x in mine), key=lambda x: x[score])
                theirs_all, beats, pairs = [], 0, 0
                for p, x in mine:
                    for r in default:
                        y = best_at(r.distinct[: len(p.distinct)], k, scorer)
                        pairs += 1
                        if y is None or scorer.better(x[score], y[score]):
                            beats += 1
                        if y is not None and len(rs) == 1:
                            theirs_all.append(y)
                if len(rs) > 1:  # the default at the peer's median n
                    n = round(statistics.median(len(p.distinct) for p in rs))
                    theirs_all = [y for y in (best_at(r.distinct[:n], k, scorer) for r in default) if y is not None]
                values = [y[score] for y in theirs_all]
                med = statistics.median(values) if values else None
                peer_med = statistics.median(mine_values)
                win = med is None or scorer.better(peer_med, med)
                d_top = (min if lm else max)(theirs_all, key=lambda y: y[score])["plan"] if theirs_all else "–"
                if win:
                    wins.append(
                        f"{peer} k={k}: {top['plan']} {peer_med:{fmt}} against the baseline's median "
                        + (f"{med:{fmt}}" if med is not None else "– (none with k removed)")
                    )
                print(
                    f"| {peer} | {cell([len(p.distinct) for p, _ in mine], '.0f')} | {k} | {top['plan']} | "
                    f"{cell(mine_values, fmt)} | {cell(values, fmt)} | {d_top} | {beats}/{pairs} | "
                    f"{'**WIN**' if win else ''} |"
                )
        print()
        print(f"peer wins against {baseline}: " + ("; ".join(wins) if wins else "none"))
        print()


def best_at(rows: list[dict], k: int, scorer: Scorer) -> dict | None:
    pool = [r for r in rows if removed(r["spans"]) == k and math.isfinite(r[scorer.score])]
    if not pool:
        return None
    return (min if scorer.lm else max)(pool, key=lambda r: r[scorer.score])


def curve(run: Run, scorer: Scorer) -> list[float]:
    """Useful HV fraction after each distinct plan scored."""
    return [scorer.fraction(run.distinct[: i + 1], "useful") for i in range(len(run.distinct))]


def plot(runs: dict[str, list[Run]], scorer: Scorer, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, rs in runs.items():
        curves = [curve(r, scorer) for r in rs]
        n = max(len(c) for c in curves) if curves else 0
        if n == 0:
            continue
        xs, ys = [], []
        for i in range(n):
            at = [c[min(i, len(c) - 1)] for c in curves]
            xs.append(i + 1)
            ys.append(statistics.median(at))
        ax.plot(
            xs,
            ys,
            linestyle=STYLES.get(name, "-"),
            linewidth=2.2 if name == DEFAULT else 1.4,
            marker="o" if n <= 25 else None,
            label=f"{name} ({len(rs)} seed{'s' if len(rs) > 1 else ''})",
            markersize=3,
        )
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("distinct plans evaluated")
    ax.set_ylabel("useful hypervolume / reference's")
    ax.set_title(f"{model}: useful hypervolume against evaluations (median over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
