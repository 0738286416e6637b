"""The Pareto front and the budget choice, as pure functions over arrays: no drawing here.

Computing comes first (`non_dominated`, `non_dominated_sort`, `hypervolume`, `Front`, `choose`), and presenting
consumes its results (`toast.search._summary` for the table, its caption and the glossary, `toast.search._plot` for
the figure), so the summary on stdout, the figure and `front.json` all show the same front. This module never imports
matplotlib.

A *record* is one trial as a dict: its objective values (`"accuracy"`, `"gflops"`, ...) plus any other
keys (`"spans"`, `"plan"`, `"state"`, `"feasible"`, ...). A record whose `state` is present and is not
`"COMPLETE"`, or whose objective values are missing or NaN, is a failed trial: it is never on the front
and never chosen, but it is not dropped from the records either (the caller keeps it in `trials.csv`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toast.objectives import OBJECTIVES, Role, list_objectives, task_score

__all__ = [
    "DIRECTIONS",
    "Front",
    "as_number",
    "choose",
    "hypervolume",
    "non_dominated",
    "non_dominated_sort",
    "objective_values",
    "on_plane",
    "on_task_plane",
    "pareto_axes",
    "plane_directions",
]

DIRECTIONS = ("maximize", "minimize")


def _task_name(objectives: Sequence[str] | None = None) -> str | None:
    """The task score of `objectives` (`task_score`: the registry's first, accuracy, without them), if any."""
    task = task_score(objectives)
    return task.name if task is not None else None


def pareto_axes(objectives: Sequence[str] | None = None) -> tuple[str, str]:
    """The `(x, y)` of the Pareto plot: the study's task score (`task_score`: accuracy, perplexity) against the
    primary cost (the first cost objective registered: GFLOPs) when `objectives` holds both, or is not given
    (accuracy then); else the second of `objectives` against the first."""
    x, y = next(iter(list_objectives(Role.COST)), None), _task_name(objectives)
    if objectives is None or (x in objectives and y in objectives):
        return x, y
    return objectives[1], objectives[0]


def on_task_plane(objectives: Sequence[str]) -> bool:
    """Whether the Pareto plot of a study of `objectives` is its task score against the primary cost (then drawn with
    the budget line, and latency beside it when measured)."""
    y = _task_name(objectives)
    return y is not None and pareto_axes(objectives) == (next(iter(list_objectives(Role.COST)), None), y)


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


def as_number(value: Any) -> float:
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


def objective_values(records: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> np.ndarray:
    """`(n, m)` objective values; the whole row is NaN for a failed record."""
    values = np.array([[as_number(r.get(k)) for k in objectives] for r in records], dtype=np.float64).reshape(
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
        values = objective_values(records, objectives)
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
    """The best-scored completed record whose every budgeted cost is within its budget, or None.

    `accuracy_key` is the task score (`task_score` of the study's objectives: accuracy, perplexity), by default the
    registry's first (accuracy); it is maximised, or minimised when it is a registered minimised objective
    (perplexity). `budgets` maps a cost to its largest allowed value, e.g. `{"gflops": 15.0, "params": 20e6}`; a
    record that lacks a budgeted cost (or has NaN) does not fit. Ties go to the lower cost objectives in registry
    order (GFLOPs, then params), then the earlier record. An empty `budgets` picks the best-scored record overall.
    """
    accuracy_key = accuracy_key or _task_name()
    sign = -1.0 if accuracy_key not in OBJECTIVES or OBJECTIVES[accuracy_key].maximize else 1.0
    limits = {k: as_number(v) for k, v in budgets.items()}
    bad = sorted(k for k, v in limits.items() if math.isnan(v))
    if bad:
        raise ValueError(f"a budget must be a number, got {[f'{k}={budgets[k]!r}' for k in bad]}")
    ties = list_objectives(Role.COST)
    best: tuple | None = None
    chosen: dict | None = None
    for i, record in enumerate(records):
        accuracy = as_number(record.get(accuracy_key))
        if not _completed(record) or math.isnan(accuracy):
            continue
        costs = {k: as_number(record.get(k)) for k in limits}
        if any(math.isnan(c) or c > limits[k] for k, c in costs.items()):
            continue
        tie_costs = (as_number(record.get(k)) for k in ties)
        key = (sign * accuracy, *(math.inf if math.isnan(c) else c for c in tie_costs), i)
        if best is None or key < best:
            best, chosen = key, record  # type: ignore[assignment]
    return chosen


# ---------------------------------------------------------------- the plotted plane


def on_plane(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which of the front's `(n, 2)` points are non-dominated on the plotted plane (its other objectives ignored)."""
    return non_dominated(points, directions) if len(points) else np.zeros(0, dtype=bool)


def plane_directions(front: Front, x: str, y: str) -> tuple[str, str]:
    """The directions of `x` and `y`: the front's own, else the registered objectives'."""
    known = dict(zip(front.objectives, front.directions))
    return tuple(known.get(k) or OBJECTIVES[k].direction for k in (x, y))  # type: ignore[return-value]
