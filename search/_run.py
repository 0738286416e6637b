"""One search run, end to end: prepare once, run the trials, then choose, export and report."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from toast.objectives import OBJECTIVES, Role, SimilarityReport, get_objectives, list_objectives, plot_cka
from toast.objectives._latency import MEASURED_FIELD
from toast.spaces import Plan, PlanSpace

from .._artifacts import atomic_write_text
from .._faults import fault_point
from ..models._plain import checkpoint_layout, describe_checkpoint
from ._calib_data import calibration_record
from ._context import SearchContext
from ._export import describe_head, export_hint, export_plan, head_record
from ._front import Front, choose, field_glossary, format_front_table, front_caption, pareto_axes, plot_pareto
from ._latency import latency_inputs, measure_end_to_end
from ._lock import run_directory_lock
from ._quiet import note, run_console
from ._settings import SearchSettings
from ._study import Search, reported, scored_records, undefined_key, write_trials_csv
from ._zero_shot import zero_shot_record


@dataclass
class RunResult:
    out: Path
    records: list[dict[str, Any]]
    front: list[dict[str, Any]]
    baseline: dict[str, Any]
    chosen: dict[str, Any] | None


def manual_space(settings: SearchSettings, space: PlanSpace) -> tuple[PlanSpace, list[Plan]]:
    """For `--plan`: the plans, and a space holding the search space's kinds and every kind the plans use."""
    plans = [Plan.parse(text, space.num_blocks) for text in settings.plans]
    kinds = tuple(dict.fromkeys([*space.kinds, *(s.kind for p in plans for s in p.spans)]))
    space = PlanSpace(num_blocks=space.num_blocks, kinds=kinds)
    for plan in plans:
        space.encode(plan)  # clear error for plans the genome cannot express
    return space, plans


def run_search(settings: SearchSettings) -> RunResult:
    """Run (or resume) the search described by `settings` and write every output file; one process at a time in a
    run directory (a second one is refused at once, naming the first)."""
    from toast.runners import check_runner

    check_runner(
        settings.runner, settings.ray_address
    )  # an unreachable --ray-address fails here, before the run directory
    with run_console(), run_directory_lock(settings.out):  # Optuna's INFO line per trial off, warnings one line
        return _run_search(settings)


def _run_search(settings: SearchSettings) -> RunResult:
    # `preflight` first: nothing loaded for a bad path
    ctx = SearchContext.build(settings, progress=settings.show_progress)
    objectives = get_objectives(settings.objectives)
    plans: list[Plan] = []
    if settings.plans:
        ctx.space, plans = manual_space(settings, ctx.space)
    search = Search(settings, space=ctx.space, costs=ctx.costs, evaluate=ctx.evaluate, stats=ctx.captured.stats)
    for line in search.notes:
        note(line)
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
    if search.disk_error is not None:  # a full disk stopped the trials: the run's files stay as they were
        raise search.disk_error
    result = finalize(settings, ctx, search, objectives)
    if interrupted is not None:
        raise interrupted
    return result


def _run_trials(settings: SearchSettings, ctx: SearchContext, search: Search, n: int) -> None:
    """The trials, in this process or on Ray: the same `Search.define` and `SearchContext.evaluate` either way."""
    progress = _progress(search, n, settings.show_progress)
    if settings.runner != "ray":
        from toast.runners import run_local

        run_local(search.study, search.objective, n_trials=n, timeout=settings.timeout, callbacks=[progress])
        return
    from toast.runners import RayOptions, run_ray

    from ._ray_trial import define_for_ray, worker_trial

    options = RayOptions(
        address=settings.ray_address,
        cpus_per_trial=settings.cpus_per_trial or 1.0,
        gpus_per_trial=settings.gpus_per_trial,
        max_concurrent=settings.max_concurrent,
        max_failures=2 if settings.max_failures is None else settings.max_failures,
        device=settings.device,
        storage_path=settings.out / "ray",
    )
    run_ray(
        search.study,
        metrics=[o.name for o in search.objectives],
        define=partial(define_for_ray, search),
        worker=worker_trial(settings, capture=ctx.captured.directory),
        n_trials=n,
        options=options,
        timeout=settings.timeout,
        callbacks=[search.remember, progress],
    )


def _progress(search: Search, total: int, enabled: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled or total == 0, file=sys.stderr)
    best = [None]
    accuracy = next(
        (OBJECTIVES[n] for n in list_objectives(Role.ACCURACY)), None
    )  # the bar shows the best feasible one

    def callback(study, trial) -> None:
        acc = trial.user_attrs.get(accuracy.name) if accuracy is not None else None
        if acc is not None and trial.user_attrs.get("feasible") and trial.user_attrs.get("scored", True):
            best[0] = acc if best[0] is None else max(best[0], acc)
        bar.update(1)
        if best[0] is not None:
            bar.set_postfix_str(f"best feasible {accuracy.name} {accuracy.display.fmt.format(best[0])}{accuracy.unit}")
        if bar.n >= bar.total:
            bar.close()

    return callback


def finalize(settings: SearchSettings, ctx: SearchContext, search: Search, objectives) -> RunResult:
    """trials.csv, front.json (front re-scored with the chosen probe), pareto.png, similarity.png, chosen/.

    With a latency table (latency an objective or budgeted), the original, every front plan and the chosen one are
    measured end to end (`latency_ms`, beside the estimate `latency_ms_estimated`), and the chosen plan meets a
    latency budget as measured."""
    out = settings.out
    records = search.records()
    names = [o.name for o in objectives]
    scored = scored_records(records, objectives, space=ctx.space)
    study_front = Front.from_records(scored, names, [o.direction for o in objectives])
    front = list(study_front.records)
    front_numbers = {r.get("number") for r in front}  # trials.csv's `on_front`: front.json's front
    write_trials_csv(records, out / "trials.csv", front=front_numbers)
    baseline = dict(ctx.baseline)
    full = ctx.full_evaluation()
    probed = any("probe" in o.inputs(head=settings.head) for o in objectives)  # an objective fits the probe protocol
    if full is not ctx or (settings.probe != "ridge" and probed):
        # the front's final scores: the whole test split, with the chosen probe protocol
        baseline = {**baseline, **_rescore(full, Plan((), ctx.loaded.num_blocks), settings.probe)}
        front = [
            {**r, **_search_values(r), **_rescore(full, Plan.of(r["spans"], ctx.loaded.num_blocks), settings.probe)}
            for r in front
        ]
    budgets = search.budgets.as_dict()
    meter = _LatencyMeter(settings, ctx) if ctx.costs.latency is not None else None
    if meter is not None:  # the front and the original measured end to end, beside their estimates
        baseline = {**baseline, MEASURED_FIELD: meter(baseline)}
        front = [{**r, MEASURED_FIELD: meter(r)} for r in front]
    chosen = None
    if budgets and any(o.role is Role.ACCURACY for o in objectives):  # `choose` maximises the accuracy objective
        on_front = {json.dumps(r.get("spans")) for r in front}
        pool = front + [r for r in scored if json.dumps(r.get("spans")) not in on_front]
        chosen = choose(pool, budgets=budgets)
        if meter is not None and "latency" in budgets:
            chosen = _meets_measured_latency(pool, budgets, meter)
    if meter is not None:
        if chosen is not None:
            chosen = {**chosen, MEASURED_FIELD: meter(chosen)}
        records = [{**r, MEASURED_FIELD: meter.known(r)} if meter.known(r) is not None else r for r in records]
        write_trials_csv(records, out / "trials.csv", front=front_numbers)  # again, with the front's measured latency
    exported = None
    if chosen is not None:  # with the head the front was scored with; its accuracy the exported model's own
        plan = Plan.of(chosen["spans"], ctx.loaded.num_blocks)
        exported = export_plan(
            full, plan, out / "chosen", record=chosen, budgets=budgets, replace_existing=True, baseline=baseline
        )
        chosen = exported.record
    doc = {
        "model": settings.model,
        "dataset": settings.dataset,
        "objectives": [{"name": o.name, "direction": o.direction, "unit": o.unit} for o in objectives],
        "budgets": budgets,
        "probe": settings.probe if settings.head == "probe" else f"{settings.head}-head",
        "head": exported.head if exported is not None else head_record(settings, full, exported=False),
        "calibration": calibration_record(ctx.calib, ctx.train, ctx.samples_used.get("calib_samples")),
        **({"zero_shot": zero_shot_record(ctx.zero_shot, ctx.zero_shot_cost)} if ctx.zero_shot else {}),
        "baseline": reported({"spans": [], "plan": "original", **baseline}),
        "front": [reported(r) for r in front],
        "chosen": reported(chosen) if chosen else None,
        "chosen_dir": "chosen" if chosen else None,  # relative to this file's folder
        "chosen_format": _chosen_format(out / "chosen") if chosen else None,
        "trials": len(records),
    }
    doc["glossary"] = field_glossary(
        list(dict.fromkeys(k for r in (doc["baseline"], *doc["front"], doc["chosen"] or {}) for k in r))
    )
    fault_point("finalize")
    atomic_write_text(out / "front.json", json.dumps(doc, indent=2, ensure_ascii=False))
    x, y = pareto_axes(names)
    title = f"{settings.model} on {settings.dataset}"
    measured = {"latency": MEASURED_FIELD}
    if meter is not None:  # the front plans' measured latency, drawn beside their estimates
        scored = [{**r, MEASURED_FIELD: meter.known(r)} if meter.known(r) is not None else r for r in scored]
    if (x, y) == pareto_axes():  # accuracy against the primary cost: with its budget line (and latency beside it)
        panels = [(x, budgets.get(x))] + ([("latency", budgets.get("latency"))] if meter is not None else [])
        plot_pareto(
            scored,
            out / "pareto.png",
            y=y,
            front=study_front,
            baseline=baseline,
            chosen=chosen,
            panels=panels,
            measured=measured,
            title=title,
        )
    elif len(names) >= 2:
        plot_pareto(
            scored,
            out / "pareto.png",
            x=x,
            y=y,
            front=study_front,
            baseline=baseline,
            budget=budgets.get(x),
            chosen=chosen,
            measured=measured,
            title=title,
        )
    plot_cka(
        SimilarityReport.from_stats(ctx.captured.stats).cka,
        out / "similarity.png",
        title=f"linear CKA, {settings.model}",
    )
    print(front_caption(study_front, x, y))
    print(format_front_table(front, baseline, [*names, *(("latency", MEASURED_FIELD) if meter is not None else ())]))
    if chosen is not None:
        print(
            f"chosen within budget ({', '.join(f'{k} <= {v:.4g}' for k, v in budgets.items())}): {chosen['plan']} -> {out / 'chosen'}"
        )
        print(f"chosen/ is {describe_checkpoint(out / 'chosen')}")
        for line in exported.lines():
            print(line)
    else:
        line = describe_head(head_record(settings, full, exported=False))
        if line:
            print(line)
        if budgets:
            hint = export_hint(out, front)
            print(f"no scored plan fits the budget yet: run more trials, or export a front plan with {hint}")
        else:
            print(f"no budget given, so nothing was exported: export any front plan with {export_hint(out, front)}")
    print(f"wrote {out}/trials.csv, front.json, pareto.png, similarity.png" + (", chosen/" if chosen else ""))
    return RunResult(out, records, front, baseline, chosen)


class _LatencyMeter:
    """End-to-end milliseconds of a record's plan (median of repeats) on the run's device, dtype and latency batch
    (the inputs the latency table was timed on); each plan measured once."""

    def __init__(self, settings: SearchSettings, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.inputs = latency_inputs(
            ctx.loaded, batch_size=settings.latency_batch_size, seq_len=settings.latency_seq_len
        )
        self.done: dict[str, float] = {}

    @staticmethod
    def _key(record: dict[str, Any]) -> str:
        return json.dumps(record.get("spans") or [])

    def known(self, record: dict[str, Any]) -> float | None:
        return self.done.get(self._key(record))

    def __call__(self, record: dict[str, Any]) -> float:
        key = self._key(record)
        if key not in self.done:
            plan = Plan.of(record.get("spans") or [], self.ctx.loaded.num_blocks)
            self.done[key] = measure_end_to_end(self.ctx.model_for(plan), self.inputs)
        return self.done[key]


def _meets_measured_latency(
    pool: list[dict[str, Any]], budgets: dict[str, float], meter: _LatencyMeter
) -> dict[str, Any] | None:
    """The budget choice among `pool` whose measured latency meets the latency budget: the best by estimate, else
    the next best that meets it as measured (said in one line)."""
    limit, missed = budgets["latency"], []
    candidates = list(pool)
    while True:
        chosen = choose(candidates, budgets=budgets)
        if chosen is None or meter(chosen) <= limit:
            break
        missed.append(chosen)
        candidates = [r for r in candidates if r is not chosen]
    if missed:
        first = missed[0]
        then = (
            f"took {chosen['plan']} (measured {meter(chosen):.4g} ms), the next best that meets it"
            if chosen is not None
            else "no scored plan meets it as measured"
        )
        print(
            f"latency: {first['plan']} is estimated {first.get('latency', math.nan):.4g} ms but measured "
            f"{meter(first):.4g} ms, over the {limit:.4g} ms budget"
            + (f" ({len(missed) - 1} more like it)" if len(missed) > 1 else "")
            + f": {then}"
        )
    return chosen


def _chosen_format(directory: Path) -> str:
    """front.json's `chosen_format`: what loads `chosen/`: `plain` (Transformers), `toast`
    (`CompressedModel.from_pretrained`) or `sentence-transformers`."""
    if (directory / "modules.json").is_file():
        return "sentence-transformers"
    return checkpoint_layout(directory)


def _rescore(ctx: SearchContext, plan: Plan, probe: str) -> dict[str, Any]:
    """The fields of the objectives measured again at the end (`Objective.rescored`); a reason a value was
    undefined is reset (None) when it is defined now."""
    r = ctx.evaluate(plan, probe=probe)
    out: dict[str, Any] = {}
    for o in OBJECTIVES.values():
        if o.rescored:
            out.update({k: r.get(k) for k in o.columns if k in r or k == undefined_key(o.name)})
    return out


def _search_values(record: dict[str, Any]) -> dict[str, Any]:
    """A front record's search-time values of the rescored objectives that keep them (`Objective.search_field`)."""
    return {o.search_field: record.get(o.name) for o in OBJECTIVES.values() if o.rescored and o.search_field}
