"""The Pareto front and the budget choice, as pure functions over arrays; then the table and the plot.

Computing comes first (`non_dominated`, `non_dominated_sort`, `hypervolume`, `Front`, `choose`), and
presenting consumes its results (`format_front_table`, `plot_pareto`), so the summary on stdout, the
figure and `front.json` all show the same front.

A *record* is one trial as a dict: its objective values (`"accuracy"`, `"gflops"`, ...) plus any other
keys (`"spans"`, `"plan"`, `"state"`, `"feasible"`, ...). A record whose `state` is present and is not
`"COMPLETE"`, or whose objective values are missing or NaN, is a failed trial: it is never on the front
and never chosen, but it is not dropped from the records either (the caller keeps it in `trials.csv`).

matplotlib is imported inside `plot_pareto` only, through `Figure` + `FigureCanvasAgg` rather than
pyplot, so importing this module never imports matplotlib nor changes the caller's backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toast.objectives import DEFAULT_OBJECTIVES, OBJECTIVES, Display, Role, list_objectives
from toast.objectives._plots import new_figure

if TYPE_CHECKING:
    pass

__all__ = [
    "Front",
    "choose",
    "clipped_range",
    "field_glossary",
    "format_front_table",
    "front_caption",
    "hypervolume",
    "non_dominated",
    "non_dominated_sort",
    "pareto_figure",
    "plot_pareto",
]

DIRECTIONS = ("maximize", "minimize")


def _accuracy_name() -> str | None:
    """The registered objective a budget choice maximises (`Role.ACCURACY`), if any."""
    return next(iter(list_objectives(Role.ACCURACY)), None)


def pareto_axes(objectives: Sequence[str] | None = None) -> tuple[str, str]:
    """The `(x, y)` of the Pareto plot: the accuracy objective against the primary cost (the first cost
    objective registered: GFLOPs) when `objectives` holds both, or is not given; else the second of
    `objectives` against the first."""
    x, y = next(iter(list_objectives(Role.COST)), None), _accuracy_name()
    if objectives is None or (x in objectives and y in objectives):
        return x, y
    return objectives[1], objectives[0]


# ---------------------------------------------------------------- arrays


def _directions(directions: Sequence[Any], m: int) -> tuple[str, ...]:
    """Directions as lower-case strings; accepts `"maximize"`, `"MINIMIZE"` or Optuna's `StudyDirection`."""
    if isinstance(directions, str):
        directions = [directions]
    names = tuple(str(getattr(d, "name", d)).lower() for d in directions)
    bad = [d for d in names if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"a direction must be 'maximize' or 'minimize', got {bad}")
    if len(names) != m:
        raise ValueError(f"one direction per objective: {m} objectives but {len(names)} directions {list(names)}")
    return names


def _losses(values: Any, directions: Sequence[Any]) -> np.ndarray:
    """`values` as a float `(n, m)` array in which every objective is minimised (maximised ones negated)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"values must be a 2-D (n trials, m objectives) array, got shape {array.shape}")
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in _directions(directions, array.shape[1])])
    return array * signs


def _front_of_finite(losses: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a NaN-free loss array (equal rows are all kept).

    Rows are visited in lexicographic order: the first row still standing cannot be dominated by any
    row (a dominator is lexicographically smaller, so it came first and would have removed it, or it
    was itself removed by a row that dominates both). Each visited row removes, in one vectorised
    step, every remaining row it dominates. Cost: O(n * front size * m).
    """
    n = losses.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    if losses.shape[1] <= 2:
        return _front_of_finite_2d(losses)
    order = np.lexsort(losses.T[::-1])  # first objective is the primary key
    ordered = losses[order]
    remaining = np.arange(n)
    while remaining.size:
        head, rest = remaining[0], remaining[1:]
        mask[order[head]] = True
        others = ordered[rest]
        dominated = np.all(others >= ordered[head], axis=1) & np.any(others > ordered[head], axis=1)
        remaining = rest[~dominated]
    return mask


def _front_of_finite_2d(losses: np.ndarray) -> np.ndarray:
    """The same mask for one or two objectives in O(n log n): sort by the first loss, then a row is
    dominated when a row with a smaller first loss has a second loss as low, or a row with the same
    first loss has a lower second loss."""
    n = losses.shape[0]
    if losses.shape[1] == 1:
        return losses[:, 0] == losses[:, 0].min()
    order = np.lexsort(losses.T[::-1])
    x, y = losses[order, 0], losses[order, 1]
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])  # groups of equal first loss
    group = np.cumsum(np.r_[True, x[1:] != x[:-1]]) - 1
    group_best = y[starts]  # lexsorted: the first row of a group has its lowest second loss
    best_before = np.r_[np.inf, np.minimum.accumulate(group_best)[:-1]]
    mask = np.zeros(n, dtype=bool)
    mask[order] = (y == group_best[group]) & ((group == 0) | (y < best_before[group]))
    return mask


def non_dominated(values: Any, directions: Sequence[Any]) -> np.ndarray:
    """Boolean mask `(n,)` of the Pareto-optimal rows of `values` `(n, m)`.

    A row is dominated when another row is at least as good on every objective and strictly better on
    one. Duplicates of a front point are all kept. Rows with a NaN (failed trials) are never on the front.
    """
    losses = _losses(values, directions)
    finite = ~np.isnan(losses).any(axis=1)
    mask = np.zeros(losses.shape[0], dtype=bool)
    mask[np.flatnonzero(finite)] = _front_of_finite(losses[finite])
    return mask


def non_dominated_sort(values: Any, directions: Sequence[Any]) -> np.ndarray:
    """Pareto rank of every row `(n,)`: 0 for the front, 1 for the front of the rest, and so on.

    Rows with a NaN (failed trials) rank last: one more than the worst rank of the other rows.
    """
    losses = _losses(values, directions)
    ranks = np.full(losses.shape[0], -1, dtype=np.int64)
    remaining = np.flatnonzero(~np.isnan(losses).any(axis=1))
    rank = 0
    while remaining.size:
        on_front = _front_of_finite(losses[remaining])
        ranks[remaining[on_front]] = rank
        remaining = remaining[~on_front]
        rank += 1
    ranks[ranks < 0] = rank
    return ranks


def _hypervolume_2d(losses: np.ndarray, reference: np.ndarray) -> float:
    """Sort by the first loss and sweep: each point that lowers the best second loss so far adds a
    horizontal strip from its first loss to the reference."""
    ordered = losses[np.lexsort(losses.T[::-1])]
    x, y = ordered[:, 0], ordered[:, 1]
    best_before = np.concatenate([reference[1:], np.minimum.accumulate(y)[:-1]])
    return float(np.sum((reference[0] - x) * np.clip(best_before - y, 0.0, None)))


def _hypervolume_slicing(losses: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume in any dimension by slicing along the last loss (HSO), down to the 2-D sweep.

    O(n^(m-1) log n): the fallback when Optuna's implementation is unavailable; fine for the fronts
    of this project (tens to hundreds of points, 3 or 4 objectives).
    """
    m = losses.shape[1]
    if losses.shape[0] == 0:
        return 0.0
    if m == 1:
        return float(reference[0] - losses[:, 0].min())
    if m == 2:
        return _hypervolume_2d(losses, reference)
    losses = losses[_front_of_finite(losses)]
    last = losses[:, -1]
    cuts = np.unique(last)
    upper = np.append(cuts[1:], reference[-1])
    return float(
        sum(
            (top - cut) * _hypervolume_slicing(losses[last <= cut, :-1], reference[:-1])
            for cut, top in zip(cuts, upper)
        )
    )


def hypervolume(values: Any, directions: Sequence[Any], reference: Any) -> float:
    """The volume of objective space dominated by `values` `(n, m)` and bounded by `reference` `(m,)`.

    `reference` is in the objectives' own units and directions (e.g. `[0.0, 30.0]` for accuracy
    maximised and GFLOPs minimised). Points that do not strictly dominate the reference, and rows with
    a NaN, contribute nothing. Exact: a sort and sweep for m <= 2; for m >= 3, Optuna's WFG
    implementation, or an exact slicing fallback when that is unavailable.
    """
    losses = _losses(values, directions)
    m = losses.shape[1]
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in _directions(directions, m)])
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.shape != (m,):
        raise ValueError(f"the reference point needs one value per objective ({m}), got {ref.tolist()}")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"the reference point must be finite, got {ref.tolist()}")
    ref = ref * signs
    inside = ~np.isnan(losses).any(axis=1) & np.all(losses < ref, axis=1)
    losses = losses[inside]
    if losses.shape[0] == 0:
        return 0.0
    if m <= 2:
        return _hypervolume_slicing(losses, ref)
    from toast._compat import exact_hypervolume  # Optuna's WFG; the exact slicing below where it is gone

    exact = exact_hypervolume(losses, ref)
    return _hypervolume_slicing(losses, ref) if exact is None else exact


# ---------------------------------------------------------------- records


def _number(value: Any) -> float:
    """A record's value as a float; NaN when it is missing, None or not a number."""
    if value is None or isinstance(value, (str, bytes)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _completed(record: Mapping[str, Any]) -> bool:
    """A record without a `state` counts as complete (e.g. a plan scored with `--plan`)."""
    state = record.get("state", "COMPLETE")
    return str(getattr(state, "name", state)).upper() == "COMPLETE"


def _values(records: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> np.ndarray:
    """`(n, m)` objective values; the whole row is NaN for a failed record."""
    values = np.array([[_number(r.get(k)) for k in objectives] for r in records], dtype=np.float64).reshape(
        len(records), len(objectives)
    )
    failed = np.array([not _completed(r) for r in records], dtype=bool)
    values[failed] = np.nan
    return values


@dataclass(frozen=True, kw_only=True, eq=False)
class Front:
    """The non-dominated trials of a study, ordered by the first minimised objective (cheapest first).

    `indices` are the rows of the input records that are on the front, `values` their objective values
    `(n_front, m)` in `objectives` order, and `records` the front records themselves, in the same order.
    Without a minimised objective the order is best-first on the first objective.
    """

    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    indices: np.ndarray
    values: np.ndarray
    records: tuple[dict, ...] = ()

    @classmethod
    def from_values(
        cls, values: Any, objectives: Sequence[str], directions: Sequence[Any], records: Sequence[dict] | None = None
    ) -> Front:
        """The front of an `(n, m)` array; `records` (one per row), when given, are kept for the front rows."""
        objectives = tuple(objectives)
        directions = _directions(directions, len(objectives))
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(objectives))
        if records is not None and len(records) != values.shape[0]:
            raise ValueError(f"one record per row: {values.shape[0]} rows but {len(records)} records")
        losses = _losses(values, directions)
        first = next((j for j, d in enumerate(directions) if d == "minimize"), 0)
        keys = [first] + [j for j in range(len(objectives)) if j != first]
        indices = np.flatnonzero(non_dominated(values, directions))
        indices = indices[np.lexsort([losses[indices, j] for j in reversed(keys)])]
        return cls(
            objectives=objectives,
            directions=directions,
            indices=indices,
            values=values[indices],
            records=tuple(records[i] for i in indices) if records is not None else (),
        )

    @classmethod
    def from_records(
        cls,
        records: Sequence[dict],
        objectives: Sequence[str],
        directions: Sequence[Any],
        *,
        feasible_only: bool = False,
    ) -> Front:
        """The front of trial records; failed ones (state not COMPLETE, a missing or NaN objective)
        are left out, and so are records with `"feasible": False` when `feasible_only`."""
        records = list(records)
        values = _values(records, objectives)
        if feasible_only:
            values[[r.get("feasible", True) is False for r in records]] = np.nan
        return cls.from_values(values, objectives, directions, records)

    def __len__(self) -> int:
        return int(self.indices.size)

    def hypervolume(self, reference: Any) -> float:
        """The front's hypervolume w.r.t. `reference` (objectives' own units); see `hypervolume`."""
        return hypervolume(self.values.reshape(-1, len(self.objectives)), self.directions, reference)


def choose(
    records: Sequence[Mapping[str, Any]],
    *,
    accuracy_key: str | None = None,
    budgets: Mapping[str, float],
) -> dict | None:
    """The most accurate completed record whose every budgeted cost is within its budget, or None.

    `accuracy_key` defaults to the registered accuracy objective's name (`Role.ACCURACY`). `budgets` maps
    a cost to its largest allowed value, e.g. `{"gflops": 15.0, "params": 20e6}`; a record that lacks a
    budgeted cost (or has NaN) does not fit. Ties go to the lower cost objectives in registry order (GFLOPs,
    then params), then the earlier record. An empty `budgets` picks the most accurate record overall.
    """
    accuracy_key = accuracy_key or _accuracy_name()
    limits = {k: _number(v) for k, v in budgets.items()}
    bad = sorted(k for k, v in limits.items() if math.isnan(v))
    if bad:
        raise ValueError(f"a budget must be a number, got {[f'{k}={budgets[k]!r}' for k in bad]}")
    ties = list_objectives(Role.COST)
    best: tuple | None = None
    chosen: dict | None = None
    for i, record in enumerate(records):
        accuracy = _number(record.get(accuracy_key))
        if not _completed(record) or math.isnan(accuracy):
            continue
        costs = {k: _number(record.get(k)) for k in limits}
        if any(math.isnan(c) or c > limits[k] for k, c in costs.items()):
            continue
        tie_costs = (_number(record.get(k)) for k in ties)
        key = (-accuracy, *(math.inf if math.isnan(c) else c for c in tie_costs), i)
        if best is None or key < best:
            best, chosen = key, record  # type: ignore[assignment]
    return chosen


# ---------------------------------------------------------------- presenting


def _display(name: str) -> Display:
    """How the record field `name` is shown: its objective's display, else plainly."""
    objective = OBJECTIVES.get(name)
    return objective.display if objective is not None else Display.plain(name)


def _plan_text(record: Mapping[str, Any]) -> str:
    """The record's `plan` string, else its `spans` (`[[s, e, kind], ...]`) in `s→e:kind` notation."""
    plan = record.get("plan")
    if plan is not None and str(plan) != "":
        return str(plan)
    spans = record.get("spans")
    if spans is None:
        return "?"
    if isinstance(spans, str):
        import json

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
        if name not in names and any(not math.isnan(_number(r.get(name))) for r in every):
            names.append(name)
    base = {name: _number(baseline.get(name)) if baseline is not None else math.nan for name in names}
    deltas = {name for name in names if _display(name).delta and not math.isnan(base[name])}

    header = ["plan"]
    for name in names:
        header.append(_display(name).title)
        if name in deltas:
            header.append(_display(name).delta)

    def cells(record: Mapping[str, Any], plan: str) -> list[str]:
        out = [plan]
        for name in names:
            display = _display(name)
            value = _number(record.get(name))
            out.append(display.format(value))
            if name in deltas:
                out.append(display.format_delta(value, base[name]))
        return out

    table = [header]
    if baseline is not None:
        table.append(cells(baseline, "original"))
    table += [cells(r, _plan_text(r)) for r in rows_in]
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


def _on_plane(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which of the front's `(n, 2)` points are non-dominated on the plotted plane (its other objectives ignored)."""
    return non_dominated(points, directions) if len(points) else np.zeros(0, dtype=bool)


def _plane_directions(front: Front, x: str, y: str) -> tuple[str, str]:
    """The directions of `x` and `y`: the front's own, else the registered objectives'."""
    known = dict(zip(front.objectives, front.directions))
    return tuple(known.get(k) or OBJECTIVES[k].direction for k in (x, y))  # type: ignore[return-value]


def front_caption(front: Front, x: str, y: str) -> str:
    """What the front table and the Pareto plot count, in one line: the front's plans on all the study's objectives,
    and how many of them are also on the plotted `(x, y)` plane (the plot draws the others apart).

    A front on more objectives than the plot's two holds plans that look dominated on the plane: a plan with equal
    accuracy and GFLOPs but better fidelity is on the front, one point of the plot."""
    shown = [_display(k).name for k in front.objectives]
    names = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    n = len(front)
    head = f"Pareto front on {names}: {n} plan{'s' if n != 1 else ''}"
    if set(front.objectives) <= {x, y} or not front.records:
        return head
    k = int(_on_plane(_values(list(front.records), (x, y)), _plane_directions(front, x, y)).sum())
    return f"{head}, {k} of them best on the plot's plane ({_display(y).name} against {_display(x).name})"


CLIP_SPREAD = 4.0  # the y axis shows down to this many times the front's upper half below its best value


def clipped_range(front_y: Sequence[float], others: Sequence[float]) -> tuple[float, float] | None:
    """The y range that keeps the useful part of a front readable, or None when nothing needs clipping.

    The upper half of the front (best value to median) sets the scale: the axis goes down to `CLIP_SPREAD` times
    that spread below the best value. Points under it (a chance-level plan with every block removed) are clipped."""
    front_y = np.asarray([v for v in front_y if math.isfinite(v)], dtype=float)
    every = np.asarray([v for v in [*front_y, *others] if math.isfinite(v)], dtype=float)
    if front_y.size < 2 or every.size == 0:
        return None
    top = float(every.max())
    spread = max(top - float(np.median(front_y)), 1e-9 * max(1.0, abs(top)))
    low = top - CLIP_SPREAD * spread
    if float(every.min()) >= low:
        return None
    margin = 0.06 * (top - low)
    return low - margin, top + margin


def plot_pareto(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], **options: Any) -> Path:
    """Write `y` against `x` as a PNG to `path` and return the path; by default (`pareto_axes`) the
    accuracy objective against the first cost objective (GFLOPs).

    Every completed trial is a grey dot (a cross when its record has `"feasible": False`), the front a
    line with markers, the original model (`baseline`) a star, the `chosen` record a green diamond, and
    `budget` (in `x`'s units) a dashed vertical line. `front` defaults to the front of `records` on `(x, y)`,
    with `directions` defaulting to each registered objective's (accuracy maximised, costs minimised).
    `front` may be on more objectives than the plane's two (accuracy, fidelity, GFLOPs): its plans best on the plane
    are joined by the line, the others (on the front by an objective the plane does not show) are hollow squares, and
    the legend counts both, "Pareto front (10 plans; 7 on this plane)", as `front_caption` does for the table.
    `panels`: one subplot per `(x, budget)` side by side, sharing `y` (e.g. GFLOPs and latency), each showing `front`,
    or without it its own front on its axes. `measured` maps an `x` to a record field measured for the front plans (`latency` to `latency_ms`):
    drawn as hollow markers beside the estimates. When a chance-level plan would stretch the `y` axis, the axis
    is clipped to the front's useful part (`clipped_range`) and the clipped points are drawn on its lower edge.
    (`options`: `pareto_figure`'s keyword arguments.)
    """
    figure = pareto_figure(records, **options)
    path = Path(path)
    figure.savefig(path, format="png", dpi=150)
    return path


def pareto_figure(
    records: Sequence[Mapping[str, Any]],
    *,
    x: str | None = None,
    y: str | None = None,
    front: Front | None = None,
    baseline: Mapping[str, Any] | None = None,
    budget: float | None = None,
    title: str | None = None,
    directions: Sequence[str] | None = None,
    chosen: Mapping[str, Any] | None = None,
    panels: Sequence[tuple[str, float | None]] | None = None,
    measured: Mapping[str, str] | None = None,
) -> Any:
    """The matplotlib `Figure` that `plot_pareto` writes (same arguments, no path): for tests and notebooks."""
    default_x, default_y = pareto_axes()
    y = y or default_y
    panels = list(panels) if panels else [(x or default_x, budget)]
    figure = new_figure(7.0 * len(panels), 4.8)
    records = list(records)
    for i, (px, pbudget) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        _draw_panel(
            ax,
            records,
            x=px,
            y=y,
            front=front,
            baseline=baseline,
            budget=pbudget,
            directions=directions if len(panels) == 1 else None,
            chosen=chosen,
            measured=(measured or {}).get(px),
        )
        if len(panels) == 1:
            ax.set_title(title or f"{_display(y).name} against {_display(px).name}")
    if len(panels) > 1:
        figure.suptitle(title or _display(y).name)
    return figure


def _draw_panel(
    ax: Any,
    records: list[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    front: Front | None,
    baseline: Mapping[str, Any] | None,
    budget: float | None,
    directions: Sequence[str] | None,
    chosen: Mapping[str, Any] | None,
    measured: str | None,
) -> None:
    """One Pareto panel of `plot_pareto` on `ax`."""
    x_shown, y_shown = _display(x), _display(y)
    x_scale, y_scale = x_shown.scale, y_shown.scale

    values = _values(records, (x, y))
    done = ~np.isnan(values).any(axis=1)
    infeasible = np.array([r.get("feasible", True) is False for r in records], dtype=bool).reshape(-1)
    failed = int((~done).sum())
    feasible_dots = values[done & ~infeasible]
    infeasible_dots = values[done & infeasible]
    ax.scatter(
        feasible_dots[:, 0] * x_scale,
        feasible_dots[:, 1] * y_scale,
        s=14,
        color="0.6",
        alpha=0.7,
        linewidths=0,
        label=f"trials ({len(feasible_dots)}" + (f"; {failed} failed, not shown)" if failed else ")"),
        zorder=2,
    )
    if len(infeasible_dots):
        ax.scatter(
            infeasible_dots[:, 0] * x_scale,
            infeasible_dots[:, 1] * y_scale,
            s=18,
            color="0.6",
            marker="x",
            linewidths=0.8,
            label=f"over budget ({len(infeasible_dots)})",
            zorder=2,
        )

    if front is None:
        if directions is None:
            unknown = [k for k in (x, y) if k not in OBJECTIVES]
            if unknown:
                raise ValueError(f"no default direction for {unknown}: pass directions=[...] or front=")
            directions = (OBJECTIVES[x].direction, OBJECTIVES[y].direction)
        front = Front.from_records(records, (x, y), directions)
    points = np.empty((0, 2))
    if len(front):
        every = (
            _values(list(front.records), (x, y))
            if front.records
            else front.values[:, [front.objectives.index(x), front.objectives.index(y)]]
        )
        best = _on_plane(every, _plane_directions(front, x, y))
        points = every[best]
        points = points[np.argsort(points[:, 0], kind="stable")]
        n, others = len(every), [k for k in front.objectives if k not in (x, y)]
        ax.plot(
            points[:, 0] * x_scale,
            points[:, 1] * y_scale,
            "-o",
            color="tab:blue",
            markersize=5,
            linewidth=1.5,
            label=f"Pareto front ({n} plan{'s' if n != 1 else ''}; {len(points)} on this plane)"
            if n != len(points) or others
            else f"Pareto front ({n} plan{'s' if n != 1 else ''})",
            zorder=3,
        )
        if n != len(points):  # on the front by an objective this plane does not show
            off = every[~best]
            ax.scatter(
                off[:, 0] * x_scale,
                off[:, 1] * y_scale,
                s=26,
                marker="s",
                facecolors="white",
                edgecolors="tab:blue",
                linewidths=1.2,
                label=f"on the front by {', '.join(_display(k).name for k in others) or 'ties'} ({len(off)})",
                zorder=3,
            )
        points = every
        if measured is not None and front.records:
            m = np.array([[_number(r.get(measured)), _number(r.get(y))] for r in front.records]).reshape(-1, 2)
            m = m[~np.isnan(m).any(axis=1)]
            if len(m):
                ax.scatter(
                    m[:, 0] * x_scale,
                    m[:, 1] * y_scale,
                    s=34,
                    facecolors="none",
                    edgecolors="tab:blue",
                    linewidths=1.0,
                    label=f"front, measured end to end ({len(m)})",
                    zorder=3,
                )

    marks = []
    for record, style in (
        (baseline, {"marker": "*", "s": 220, "color": "tab:red", "label": "original model", "zorder": 4}),
        (chosen, {"marker": "D", "s": 90, "color": "tab:green", "zorder": 5}),
    ):
        if record is None:
            continue
        px, py = _number(record.get(x)), _number(record.get(y))
        if not (math.isnan(px) or math.isnan(py)):
            marks.append(py)
            label = style.pop("label", None) or f"chosen ({_plan_text(record)})"
            ax.scatter([px * x_scale], [py * y_scale], edgecolors="black", linewidths=0.6, label=label, **style)
    if budget is not None:
        ax.axvline(
            float(budget) * x_scale,
            color="tab:orange",
            linestyle="--",
            linewidth=1.2,
            label=f"budget ({float(budget) * x_scale:g} {x_shown.unit})".replace(" )", ")"),
            zorder=1,
        )

    shown_y = values[done][:, 1]
    limits = clipped_range(points[:, 1], [*shown_y, *marks])
    if limits is not None:
        low, high = limits[0] * y_scale, limits[1] * y_scale
        under = values[done & (values[:, 1] * y_scale < low)]
        ax.set_ylim(low, high)
        ax.scatter(
            under[:, 0] * x_scale,
            np.full(len(under), low),
            marker="v",
            s=30,
            color="0.35",
            clip_on=False,
            label=f"{len(under)} below the axis (lowest {y_shown.fmt.format(under[:, 1].min() * y_scale)}), clipped",
            zorder=4,
        )

    ax.set_xlabel(x_shown.axis)
    ax.set_ylabel(y_shown.axis)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
