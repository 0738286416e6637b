"""One search run, end to end: prepare once, run the trials, then choose, export and report."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from toast.objectives import SimilarityReport, get_objectives, plot_cka
from toast.spaces import Plan, PlanSpace

from ._context import SearchContext
from ._preflight import check_cache_dir, check_run_directory
from ._front import Front, choose, format_front_table, plot_pareto
from ._settings import SearchSettings, SettingsError
from ._study import Search, scored_records, undefined_key, write_trials_csv


@dataclass
class RunResult:
    out: Path
    records: list[dict[str, Any]]
    front: list[dict[str, Any]]
    baseline: dict[str, Any]
    chosen: dict[str, Any] | None


def preflight(settings: SearchSettings) -> None:
    """Everything that can be checked before loading a model: paths, the stored study, the settings it was
    made with, the objectives and the plans' syntax. Nothing is written."""
    from .capture import ActivationCache

    check_run_directory(settings)
    check_cache_dir(ActivationCache(settings.cache_dir).root)
    get_objectives(settings.objectives)
    for text in settings.plans:  # syntax, kinds and overlaps, before any model is loaded
        Plan.parse(text, num_blocks=10**6)


def manual_space(settings: SearchSettings, num_blocks: int) -> tuple[PlanSpace, list[Plan]]:
    """For `--plan`: the plans, and a space holding every kind they use."""
    plans = [Plan.parse(text, num_blocks) for text in settings.plans]
    kinds = tuple(dict.fromkeys([*settings.translators, *(s.kind for p in plans for s in p.spans)]))
    space = PlanSpace(num_blocks=num_blocks, kinds=kinds)
    for plan in plans:
        space.encode(plan)  # clear error for plans the genome cannot express
    return space, plans


def run_search(settings: SearchSettings) -> RunResult:
    """Run (or resume) the search described by `settings` and write every output file."""
    from toast.runners import check_runner
    check_runner(settings.runner, settings.ray_address)  # an unreachable --ray-address fails here, before the run directory
    preflight(settings)
    objectives = get_objectives(settings.objectives)
    ctx = SearchContext.build(settings, progress=settings.progress)
    plans: list[Plan] = []
    if settings.plans:
        ctx.space, plans = manual_space(settings, ctx.loaded.num_blocks)
    search = Search(settings, space=ctx.space, costs=ctx.costs, evaluate=ctx.evaluate, stats=ctx.captured.stats)
    for note in search.notes:
        print(note)
    settings.out.mkdir(parents=True, exist_ok=True)
    settings.save(settings.out / "settings.json", used=ctx.samples_used)
    if plans:
        n = search.enqueue(plans)
    else:
        search.prepare()
        n = search.trials_to_run()
    interrupted = None
    try:
        _run_trials(settings, ctx, search, n)
    except KeyboardInterrupt as exc:
        interrupted = exc
    result = finalize(settings, ctx, search, objectives)
    if interrupted is not None:
        raise interrupted
    return result


def _run_trials(settings: SearchSettings, ctx: SearchContext, search: Search, n: int) -> None:
    """The trials, in this process or on Ray: the same `Search.define` and `SearchContext.evaluate` either way."""
    progress = _progress(search, n, settings.progress)
    if settings.runner != "ray":
        from toast.runners import run_local

        run_local(search.study, search.objective, n_trials=n, timeout=settings.timeout, callbacks=[progress])
        return
    from toast.runners import RayOptions, run_ray

    options = RayOptions(address=settings.ray_address, cpus_per_trial=settings.cpus_per_trial or 1.0, gpus_per_trial=settings.gpus_per_trial,
                         max_concurrent=settings.max_concurrent, max_failures=2 if settings.max_failures is None else settings.max_failures,
                         device=settings.device, storage_path=settings.out / "ray")
    worker = WorkerTrial(settings=_for_workers(settings), capture=str(ctx.captured.directory.resolve()))
    run_ray(search.study, metrics=[o.name for o in search.objectives], define=partial(_define_for_ray, search), make_trial=worker,
            key=worker.key, n_trials=n, options=options, timeout=settings.timeout, callbacks=[search.remember, progress])


def _define_for_ray(search: Search, trial) -> dict[str, Any]:
    """The driver side of a Ray trial: the plan (and any scores known without scoring it) for the worker."""
    plan, known = search.define(trial)
    return {"spans": json.dumps(plan.to_json()), "known": "" if known is None else json.dumps(known)}


def _for_workers(settings: SearchSettings) -> SearchSettings:
    """Settings as a Ray worker needs them: local paths absolute (Tune runs trials in their own folders), the cache
    root explicit (the driver's, which every node must see), no progress bars."""
    def absolute(name: str) -> str:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name

    from .capture import ActivationCache

    return replace(settings, model=absolute(settings.model), dataset=absolute(settings.dataset), out=settings.out.resolve(),
                   cache_dir=ActivationCache(settings.cache_dir).root.resolve(), progress=False)


@dataclass(frozen=True)
class WorkerTrial:
    """Picklable, sent to Ray workers: builds the worker's own `SearchContext` once, from the caches the driver
    wrote (no capture pass), and returns the trial function `config -> (objective values, attrs)`."""

    settings: SearchSettings
    capture: str  # the activation cache entry the driver captured

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.settings.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def __call__(self):
        from ._errors import CacheError
        from ._quiet import quiet_libraries

        quiet_libraries()

        manifest = Path(self.capture) / "manifest.json"
        if not manifest.is_file():
            raise CacheError(f"the activation cache entry {self.capture} is not visible on this node ({socket.gethostname()}): "
                             "`cache_dir` must be a path every node sees (a shared filesystem)")
        before = manifest.stat().st_mtime_ns
        ctx = SearchContext.build(self.settings, progress=False)
        cache_hit = ctx.captured.directory.resolve() == Path(self.capture) and manifest.stat().st_mtime_ns == before
        objectives = get_objectives(self.settings.objectives)

        def trial(config: dict) -> tuple[dict[str, float], dict[str, Any]]:
            if config["known"]:
                metrics = json.loads(config["known"])
            else:
                metrics = dict(ctx.evaluate(Plan.of(json.loads(config["spans"]), ctx.loaded.num_blocks)), scored=True)
            return {o.name: Search._value(o, metrics) for o in objectives}, {**metrics, "ray_worker_cache_hit": cache_hit}

        return trial


def _progress(search: Search, total: int, enabled: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled or total == 0, file=sys.stderr)
    best = [None]

    def callback(study, trial) -> None:
        acc = trial.user_attrs.get("accuracy")
        if acc is not None and trial.user_attrs.get("feasible") and trial.user_attrs.get("scored", True):
            best[0] = acc if best[0] is None else max(best[0], acc)
        bar.update(1)
        if best[0] is not None:
            bar.set_postfix_str(f"best feasible accuracy {best[0]:.2f}%")
        if bar.n >= bar.total:
            bar.close()

    return callback


def finalize(settings: SearchSettings, ctx: SearchContext, search: Search, objectives) -> RunResult:
    """trials.csv, front.json (front re-scored with the chosen probe), pareto.png, similarity.png, chosen/."""
    out = settings.out
    records = search.records()
    write_trials_csv(records, out / "trials.csv")
    names = [o.name for o in objectives]
    scored = scored_records(records, objectives)
    front = list(Front.from_records(scored, names, [o.direction for o in objectives]).records) if scored else []
    baseline = dict(ctx.baseline)
    full = ctx.full_evaluation()
    if full is not ctx or (settings.probe != "ridge" and "accuracy" in names and settings.head == "probe"):
        # the front's final scores: the whole test split, with the chosen probe protocol
        baseline = {**baseline, **_rescore(full, Plan((), ctx.loaded.num_blocks), settings.probe)}
        front = [{**r, "accuracy_search": r.get("accuracy"), **_rescore(full, Plan.of(r["spans"], ctx.loaded.num_blocks), settings.probe)}
                 for r in front]
    budgets = search.budgets.as_dict()
    chosen = None
    if budgets and "accuracy" in names:
        pool = front + [r for r in scored if r not in front]
        chosen = choose(pool, budgets=budgets)
    if chosen is not None:
        plan = Plan.of(chosen["spans"], ctx.loaded.num_blocks)
        ctx.model_for(plan).save_pretrained(out / "chosen", processor=ctx.loaded.processor,
                                            extra={"source_model": ctx.loaded.model_id, "scores": _clean(chosen), "budgets": budgets})
    doc = {
        "model": settings.model,
        "dataset": settings.dataset,
        "objectives": [{"name": o.name, "direction": o.direction, "unit": o.unit} for o in objectives],
        "budgets": budgets,
        "probe": settings.probe if settings.head == "probe" else "original-head",
        "baseline": _clean({"spans": [], "plan": "original", **baseline}),
        "front": [_clean(r) for r in front],
        "chosen": _clean(chosen) if chosen else None,
        "trials": len(records),
    }
    (out / "front.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    if "gflops" in names and "accuracy" in names:
        plot_pareto(scored, out / "pareto.png", x="gflops", y="accuracy", front=None, baseline=baseline,
                    budget=budgets.get("gflops"), title=f"{settings.model} on {settings.dataset}")
    elif len(names) >= 2:
        plot_pareto(scored, out / "pareto.png", x=names[1], y=names[0], baseline=baseline, title=f"{settings.model} on {settings.dataset}")
    plot_cka(SimilarityReport.from_stats(ctx.captured.stats).cka, out / "similarity.png", title=f"linear CKA, {settings.model}")
    print(format_front_table(front, baseline, names))
    if chosen is not None:
        print(f"chosen within budget ({', '.join(f'{k} <= {v:.4g}' for k, v in budgets.items())}): {chosen['plan']} -> {out / 'chosen'}")
    elif budgets:
        print("no scored plan fits the budget yet: run more trials")
    print(f"wrote {out}/trials.csv, front.json, pareto.png, similarity.png" + (", chosen/" if chosen else ""))
    return RunResult(out, records, front, baseline, chosen)


def _rescore(ctx: SearchContext, plan: Plan, probe: str) -> dict[str, Any]:
    r = ctx.evaluate(plan, probe=probe)
    return {**{k: r[k] for k in ("accuracy", "accuracy_std", "fidelity", "cosine") if k in r}, "fidelity_undefined": r.get("fidelity_undefined")}


_KEEP = ("number", "spans", "plan", "accuracy", "accuracy_std", "accuracy_search", "fidelity", "fidelity_undefined", "cosine", "gflops", "params", "latency", "feasible", "seconds")


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """The record's reported fields; NaN / inf (e.g. CKA of constant features) as null, so the JSON is standard."""
    def value(k: str):
        v = record[k]
        undefined = bool(record.get(undefined_key(k)))  # ranked as the worst value; reported as missing, with the reason
        return None if undefined or (isinstance(v, float) and not math.isfinite(v)) else v

    return {k: value(k) for k in _KEEP if k in record and not (k.endswith("_undefined") and not record[k])}
