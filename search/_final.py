"""The end of a run, computing: the study's front, its final scores, the plan chosen within the budgets, its export.

Each step takes what the one before returned: `study_front` (the front of the search-time scores, what trials.csv's
`on_front`, the caption and the plot count), `rescore_front` (the front plans and the original scored again on the
whole test split with the chosen probe protocol: `Final`), `choose_plan` (the plan with the best task score within
the budgets: `Choice`), `export_choice` (its model written to `chosen/`). End-to-end latency measurements are
`EndToEnd`'s (`toast.search._measured`), called where they are needed. Writing and printing are `toast.search._report`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toast.objectives import OBJECTIVES, Objective, task_score
from toast.spaces import Plan

from ._context import SearchContext
from ._export import Export, export_plan
from ._measured import EndToEnd
from ._pareto import Front
from ._settings import SearchSettings
from ._study import undefined_key

__all__ = ["Choice", "Final", "choose_plan", "export_choice", "rescore_front", "study_front"]


def study_front(scored: list[dict[str, Any]], objectives: list[Objective]) -> Front:
    """The front of the study's scored trials on its objectives (search-time scores)."""
    return Front.from_records(scored, [o.name for o in objectives], [o.direction for o in objectives])


@dataclass(frozen=True)
class Final:
    """The front's final scores: `study` the study's front (search-time scores, what the caption and the plot count),
    `front` its records with their final scores, `baseline` the original's, `context` what they were scored on (the
    whole test split)."""

    study: Front
    context: SearchContext
    baseline: dict[str, Any]
    front: list[dict[str, Any]]

    def measured(self, latency: EndToEnd) -> Final:
        """With the original's and every front plan's latency measured end to end (when `latency` is on)."""
        if not latency.on:
            return self
        baseline = latency.measured(self.baseline)
        return replace(self, baseline=baseline, front=[latency.measured(r) for r in self.front])


def rescore_front(settings: SearchSettings, ctx: SearchContext, front: Front, objectives: list[Objective]) -> Final:
    """The front's final scores: the whole test split, with the chosen probe protocol (only the objectives measured
    again at the end, `Objective.rescored`; the search-time values kept beside them where they are, `search_field`);
    the search's own scores when it already evaluated on the whole split with the ridge probe."""
    baseline = dict(ctx.baseline)
    records = list(front.records)
    full = ctx.full_evaluation()
    probed = any(
        "probe" in o.inputs(head=settings.scoring.head) for o in objectives
    )  # an objective fits the probe protocol
    if full is not ctx or (settings.scoring.probe != "ridge" and probed):
        baseline = {**baseline, **_rescore(full, Plan((), ctx.loaded.num_blocks), settings.scoring.probe)}
        records = [
            {
                **r,
                **_search_values(r),
                **_rescore(full, Plan.of(r["spans"], ctx.loaded.num_blocks), settings.scoring.probe),
            }
            for r in records
        ]
    return Final(study=front, context=full, baseline=baseline, front=records)


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


@dataclass(frozen=True)
class Choice:
    """The plan chosen within `budgets` (`record` None: no budget, no task score objective, or no plan fits) and, once
    written to `chosen/`, its `export` (`record` then the exported model's own scores)."""

    budgets: dict[str, float]
    record: dict[str, Any] | None = None
    export: Export | None = None


def choose_plan(
    final: Final,
    scored: list[dict[str, Any]],
    budgets: dict[str, float],
    objectives: list[Objective],
    latency: EndToEnd,
) -> Choice:
    """The plan with the best task score (`task_score` of `objectives`: the most accurate, the lowest perplexity)
    within `budgets` among the front (final scores) and the other scored trials (search-time scores); with a latency
    table, its latency measured end to end, and a latency budget met as measured."""
    task = task_score(objectives)
    if not budgets or task is None:  # `choose` optimises the study's task score
        return Choice(budgets)
    on_front = {json.dumps(r.get("spans")) for r in final.front}
    pool = final.front + [r for r in scored if json.dumps(r.get("spans")) not in on_front]
    chosen = latency.choose(pool, budgets, accuracy_key=task.name)
    return Choice(budgets, latency.measured(chosen) if chosen is not None else None)


def export_choice(final: Final, choice: Choice, directory: Path) -> Choice:
    """The chosen plan's model written to `directory` (replacing a previous choice), with the head the front was
    scored with; its accuracy the exported model's own. Nothing chosen: `choice` as it is."""
    if choice.record is None:
        return choice
    plan = Plan.of(choice.record["spans"], final.context.loaded.num_blocks)
    exported = export_plan(
        final.context,
        plan,
        directory,
        record=choice.record,
        budgets=choice.budgets,
        replace_existing=True,
        baseline=final.baseline,
    )
    return replace(choice, record=exported.record, export=exported)
