"""Storage benchmark: what the Optuna storage costs per trial on the real search path (issue 12, item 6).

    python bench/bench_storage.py --model demo-vit --dataset digits --trials 40 --repeats 3

Prepares the model once (`SearchContext.build`), then runs `--repeats` rounds; each round runs, in a rotated
order, one fresh study of `--trials` random-sampler trials per storage through the real `Search` and
`run_local` (the same seed, so every storage scores the same plans). A trial's own time is the time inside
`SearchContext.evaluate`; the runner overhead per trial is (wall − Σ evaluate) / trials: Optuna's loop, the
sampler, `Search.define` and every storage read and write. The storage's share is that overhead minus the
in-memory storage's (which keeps nothing on disk: the reference, not a candidate). Medians over the rounds.

Storages: `sqlite` (RDBStorage on `study.db`, the trial's metrics in one transaction), `sqlite-unbatched` (one
commit per metric), `journal` (JournalStorage on a JournalFileBackend on `study.journal`, the metrics in one
append), `journal-unbatched` (one append per metric), `memory` (InMemoryStorage).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

STORAGES = ("sqlite", "sqlite-unbatched", "journal", "journal-unbatched", "memory")


@contextmanager
def unbatched():
    """Trial attrs written one by one (what `set_user_attrs` does for a storage it cannot batch)."""
    from toast.runners import _storage

    real = _storage.set_user_attrs_at_once
    _storage.set_user_attrs_at_once = lambda *a: False
    try:
        yield
    finally:
        _storage.set_user_attrs_at_once = real


def make_storage(name: str, out: Path):
    import optuna

    from toast.search._storage import open_storage

    if name == "memory":
        return optuna.storages.InMemoryStorage()
    return open_storage(out, "journal" if name.startswith("journal") else "sqlite")


def one_study(name: str, settings, ctx, out: Path) -> dict[str, float]:
    """One fresh study on storage `name`: wall, Σ evaluate, trials, the study file's size, and how long
    `optuna.load_study` plus reading every trial back takes (what a resume or optuna-dashboard pays)."""
    import optuna

    from toast.runners import run_local
    from toast.search._study import STUDY_NAME, Search

    settings = settings.updated(out=out)
    spent = [0.0]

    def evaluate(plan, **kwargs):
        t = time.perf_counter()
        try:
            return ctx.evaluate(plan, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    out.mkdir(parents=True)
    storage = make_storage(name, out)
    search = Search(
        settings, space=ctx.space, costs=ctx.costs, evaluate=evaluate, stats=ctx.captured.stats, storage=storage
    )
    with unbatched() if name.endswith("-unbatched") else _nothing():
        t = time.perf_counter()
        run_local(search.study, search.objective, n_trials=settings.trials)
        wall = time.perf_counter() - t
    complete = len([t for t in search.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"])
    files = [p for p in out.iterdir() if p.name.startswith("study.")]
    size = sum(p.stat().st_size for p in files)
    load = float("nan")
    if name != "memory":
        t = time.perf_counter()
        optuna.load_study(study_name=STUDY_NAME, storage=make_storage(name, out)).get_trials(deepcopy=False)
        load = time.perf_counter() - t
    return {
        "wall": wall,
        "evaluate": spent[0],
        "trials": settings.trials,
        "complete": complete,
        "bytes": size,
        "load": load,
    }


@contextmanager
def _nothing():
    yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo-vit")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storages", default=",".join(STORAGES), help=f"comma-separated, of {', '.join(STORAGES)}")
    parser.add_argument("--probe-samples", type=int, default=1347)
    parser.add_argument("--eval-samples", type=int, default=450)
    parser.add_argument("--calib-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where the studies are written (default: a temp dir)")
    args = parser.parse_args()
    names = [s.strip() for s in args.storages.split(",") if s.strip()]
    unknown = [s for s in names if s not in STORAGES]
    if unknown:
        parser.error(f"unknown storage(s) {unknown}: choose from {', '.join(STORAGES)}")

    from toast.search import SearchSettings
    from toast.search._context import SearchContext
    from toast.search._quiet import quiet_libraries

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="toast-bench-storage-", dir=args.dir))
    settings = SearchSettings.from_flat(
        model=args.model,
        dataset=args.dataset,
        out=work / "prepare",
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
    ctx = SearchContext.build(settings, progress=False)
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # interleaved: each storage in every position
        for name in order:
            runs[name].append(one_study(name, settings, ctx, work / f"{name}-{r}"))
            print(f"round {r + 1}/{args.repeats} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)

    def overhead(run):
        return (run["wall"] - run["evaluate"]) / run["trials"]

    med = lambda name, f: statistics.median(f(run) for run in runs[name])  # noqa: E731
    ref = med("memory", overhead) if "memory" in runs else None
    print(
        f"{args.model} on {args.dataset}: {args.trials} random-sampler trials per study, {args.repeats} rounds, "
        f"medians over rounds; studies under {work}"
    )
    print()
    print(
        "| storage | wall per trial | evaluate per trial | runner overhead per trial | storage's share "
        "(overhead − memory's) | study file | load_study + read all trials |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        share = (
            "reference"
            if name == "memory"
            else ("–" if ref is None else f"{(med(name, overhead) - ref) * 1000:.0f} ms")
        )
        size = "–" if name == "memory" else f"{med(name, lambda r: r['bytes']) / 1024:.0f} KiB"
        load = "–" if name == "memory" else f"{med(name, lambda r: r['load']) * 1000:.0f} ms"
        print(
            f"| {name} | {med(name, lambda r: r['wall'] / r['trials']) * 1000:.0f} ms "
            f"| {med(name, lambda r: r['evaluate'] / r['trials']) * 1000:.0f} ms "
            f"| **{med(name, overhead) * 1000:.0f} ms** "
            f"(range {min(map(overhead, runs[name])) * 1000:.0f}–{max(map(overhead, runs[name])) * 1000:.0f}) "
            f"| {share} | {size} | {load} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
