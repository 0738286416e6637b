"""Multi-fidelity trials: every plan is scored first on a subset of the probe and evaluation samples, and on
the full sets only when it can still be on the front.

The rule compares like with like: a plan stops at the subset when a trial already scored on the full sets
(so on the subset too, on the same samples) is no worse in every cost and better by more than `z` standard
errors of the difference in every measured objective, at the subset. Comparing subset scores with full-set
ones would be biased (a probe fitted on fewer samples scores lower). An objective with no standard error
(`Objective.standard_error` None and no `error_field`, such as a causal LM's perplexity has from the spread over its
sequences) never lets a plan stop early. The front, the choice and `front.json` hold
full-set scores only; `trials.csv` says which fidelity each trial reached (`scored_on`: subset or full).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from toast.objectives import Objective, Role

__all__ = [
    "FULL",
    "SUBSET",
    "SCORED_ON",
    "SUBSET_PREFIX",
    "dominating_trial",
    "fidelity_rows",
    "front_snapshot",
    "subset_fields",
]

FULL, SUBSET = "full", "subset"
SCORED_ON = "scored_on"  # the record field: which samples a trial was scored on (SUBSET or FULL)
SUBSET_PREFIX = "subset_"  # a full trial's subset scores are kept as `subset_<objective>`
SUBSET_SAMPLES = "subset_eval_samples"
MIN_SUBSET = 50  # fewer evaluation samples than this in the subset: every trial is scored on the full sets


def fidelity_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The positions of the subset (a seeded random `fraction` of `n`) and of the rest, both sorted; None when
    there is no subset stage (`fraction` 0 or 1)."""
    if not 0 < fraction < 1:
        return None
    k = max(1, round(n * fraction))
    subset = np.sort(np.random.default_rng(seed).permutation(n)[:k])
    rest = np.setdiff1d(np.arange(n), subset)
    return subset, rest


def subset_fields(metrics: Mapping[str, Any], objectives: Iterable[Objective], eval_samples: int) -> dict[str, Any]:
    """A subset stage's scores as a full trial keeps them (`subset_<name>`, and how many samples scored them)."""
    out = {f"{SUBSET_PREFIX}{o.name}": metrics.get(o.name) for o in objectives if o.role is not Role.COST}
    out.update(
        {f"{SUBSET_PREFIX}{o.error_field}": metrics.get(o.error_field) for o in objectives if o.error_field is not None}
    )
    out[SUBSET_SAMPLES] = int(eval_samples)
    return out


def front_snapshot(records: Iterable[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """What the rule compares a new plan with: each trial scored on the full sets, its costs and subset scores."""
    out = []
    for r in records:
        if r.get(SCORED_ON) != FULL or SUBSET_SAMPLES not in r:
            continue
        entry = {"number": r.get("number"), SUBSET_SAMPLES: r[SUBSET_SAMPLES]}
        for o in objectives:
            key = o.name if o.role is Role.COST else f"{SUBSET_PREFIX}{o.name}"
            entry[key] = r.get(key)
            if o.error_field is not None:
                entry[f"{SUBSET_PREFIX}{o.error_field}"] = r.get(f"{SUBSET_PREFIX}{o.error_field}")
        out.append(entry)
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _error(objective: Objective, value: float, samples: int, record: Mapping[str, Any], prefix: str) -> float | None:
    """The standard error of `objective`'s `value` on `samples` samples: from the value (`standard_error`), else the
    record's own field (`error_field`, under `prefix` in a snapshot), else None."""
    se = objective.standard_error(value, samples)
    if se is None and objective.error_field is not None:
        found = record.get(f"{prefix}{objective.error_field}")
        se = float(found) if _finite(found) else None
    return se


def dominating_trial(
    metrics: Mapping[str, Any],
    eval_samples: int,
    snapshot: Iterable[Mapping[str, Any]],
    objectives: Sequence[Objective],
    z: float,
) -> Any | None:
    """The number of a fully scored trial that dominates the subset scores `metrics` with confidence (see the
    module's rule), or None: the plan goes on to the full sets."""
    measured = [o for o in objectives if o.role is not Role.COST]
    costs = [o for o in objectives if o.role is Role.COST]
    if any(not _finite(metrics.get(o.name)) for o in objectives):
        return None
    errors = {o.name: _error(o, float(metrics[o.name]), eval_samples, metrics, "") for o in measured}
    if any(e is None for e in errors.values()):
        return None
    for q in snapshot:
        if any(not _finite(q.get(o.name)) or o.better(metrics[o.name], q[o.name]) for o in costs):
            continue  # cheaper in some cost: q does not dominate it
        confident = True
        for o in measured:
            v = q.get(f"{SUBSET_PREFIX}{o.name}")
            if not _finite(v):
                confident = False
                break
            se_q = _error(o, float(v), int(q[SUBSET_SAMPLES]), q, SUBSET_PREFIX) or 0.0
            margin = z * math.sqrt(errors[o.name] ** 2 + se_q**2)
            gap = (v - metrics[o.name]) if o.maximize else (metrics[o.name] - v)
            if not gap > margin:
                confident = False
                break
        if confident:
            return q.get("number")
    return None
