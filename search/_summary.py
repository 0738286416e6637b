"""The front as text: the summary table printed at the end of a search, its one-line caption, and the glossary
of front.json's fields; from the front `toast.search._pareto` computes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from toast.objectives import DEFAULT_OBJECTIVES, OBJECTIVES, Display

from ._pareto import Front, as_number, objective_values, on_plane, plane_directions

__all__ = ["RUN_FIELDS", "display_of", "field_glossary", "format_front_table", "front_caption", "plan_text"]


def display_of(name: str) -> Display:
    """How the record field `name` is shown: its objective's display, else plainly."""
    objective = OBJECTIVES.get(name)
    return objective.display if objective is not None else Display.plain(name)


def plan_text(record: Mapping[str, Any]) -> str:
    """The record's `plan` string, else its `spans` (`[[s, e, kind], ...]`) in `s→e:kind` notation."""
    plan = record.get("plan")
    if plan is not None and str(plan) != "":
        return str(plan)
    spans = record.get("spans")
    if spans is None:
        return "?"
    if isinstance(spans, str):
        spans = json.loads(spans)
    return ", ".join(f"{s}→{e}:{kind}" for s, e, kind in spans) or "original"


def format_front_table(
    front_records: Sequence[Mapping[str, Any]] | Front,
    baseline: Mapping[str, Any] | None,
    objectives: Sequence[str] = DEFAULT_OBJECTIVES,
) -> str:
    """The summary table printed at the end of a search, one line per front plan, the original first.

    Columns: the plan in `s→e:kind` notation, the headline objectives (`Display.headline`: accuracy (%)
    and its change Δ in percentage points against the original, GFLOPs, params (M)), then any other of
    `objectives`; a column is left out when no row has its value. An objective with `Display.delta` is
    followed by its change against the original. Numbers are right-aligned, the plan left-aligned;
    missing values print `-`.
    """
    rows_in = list(front_records.records if isinstance(front_records, Front) else front_records)
    every = list(rows_in) + ([dict(baseline)] if baseline is not None else [])
    names: list[str] = []
    for name in [*(n for n, o in OBJECTIVES.items() if o.display.headline), *objectives]:
        if name not in names and any(not math.isnan(as_number(r.get(name))) for r in every):
            names.append(name)
    base = {name: as_number(baseline.get(name)) if baseline is not None else math.nan for name in names}
    deltas = {name for name in names if display_of(name).delta and not math.isnan(base[name])}

    header = ["plan"]
    for name in names:
        header.append(display_of(name).title)
        if name in deltas:
            header.append(display_of(name).delta)

    def cells(record: Mapping[str, Any], plan: str) -> list[str]:
        out = [plan]
        for name in names:
            display = display_of(name)
            value = as_number(record.get(name))
            out.append(display.format(value))
            if name in deltas:
                out.append(display.format_delta(value, base[name]))
        return out

    table = [header]
    if baseline is not None:
        table.append(cells(baseline, "original"))
    table += [cells(r, plan_text(r)) for r in rows_in]
    widths = [max(len(row[j]) for row in table) for j in range(len(header))]
    lines = []
    for row in table:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: What the record fields that no objective reports are (an objective's own fields say it: `Objective.describe`).
RUN_FIELDS: dict[str, str] = {
    "number": "the Optuna trial number (the row of trials.csv)",
    "spans": "the plan as [s, e, kind] spans: blocks s+1 … e replaced by a translator of `kind` that maps block s's "
    "output to block e's (s = -1: the embeddings' output)",
    "plan": "the plan in s→e:kind notation ('original': every block kept)",
    "feasible": "whether the plan meets every budget",
    "seconds": "wall-clock seconds the trial took",
    "on_front": "whether the trial is on the Pareto front of the study's objectives (front.json's front)",
}


def field_glossary(names: Sequence[str]) -> dict[str, str]:
    """`{field: what it is}` for the record fields `names` that anything describes: the registered objectives'
    values and fields (`Objective.describe`), then the run's own (`RUN_FIELDS`), in the order given."""
    out: dict[str, str] = {}
    for name in names:
        described = RUN_FIELDS.get(name) or next(
            (text for o in OBJECTIVES.values() if (text := o.describe(name)) is not None), None
        )
        if described is not None and name not in out:
            out[name] = described
    return out


def front_caption(front: Front, x: str, y: str) -> str:
    """What the front table and the Pareto plot count, in one line: the front's plans on all the study's objectives,
    and how many of them are also on the plotted `(x, y)` plane (the plot draws the others apart).

    A front on more objectives than the plot's two holds plans that look dominated on the plane: a plan with equal
    accuracy and GFLOPs but better fidelity is on the front, one point of the plot."""
    shown = [display_of(k).name for k in front.objectives]
    names = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    n = len(front)
    head = f"Pareto front on {names}: {n} plan{'s' if n != 1 else ''}"
    if set(front.objectives) <= {x, y} or not front.records:
        return head
    k = int(on_plane(objective_values(list(front.records), (x, y)), plane_directions(front, x, y)).sum())
    return f"{head}, {k} of them best on the plot's plane ({display_of(y).name} against {display_of(x).name})"
