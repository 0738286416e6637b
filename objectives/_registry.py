"""The registry of objectives, and scoring a trial on them.

Each objective lives in its own module and registers itself on import (`register_objective`); the
built-in ones are imported by the package, in the registry's order: the order of `trials.csv`'s columns,
`front.json`'s fields and the front table's, and of the cost objectives as tie-breaks.
`OBJECTIVES` is a read-only view; `get_objectives` turns the user's `--objectives` list into
`Objective`s, in the given order (the order of Optuna's `directions`), reporting every problem at once.
Several registered objectives may be task scores (`Role.ACCURACY`: accuracy for classifiers, perplexity for causal
LMs), a study at most one: `task_score` names the one a study's budget choice optimises.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._objectives import Objective, ObjectiveError, Role

if TYPE_CHECKING:
    from ._trial import TrialOutputs

__all__ = [
    "DEFAULT_OBJECTIVES",
    "OBJECTIVES",
    "compute_objectives",
    "get_objective",
    "get_objectives",
    "list_objectives",
    "register_objective",
    "task_score",
]

_REGISTRY: dict[str, Objective] = {}
OBJECTIVES: Mapping[str, Objective] = MappingProxyType(_REGISTRY)

DEFAULT_OBJECTIVES: tuple[str, ...] = ("accuracy", "gflops")


def register_objective(objective: Objective) -> Objective:
    """Add `objective` to the registry (after those already there) and return it.

    Its name and fields must not be another objective's.
    """
    if not isinstance(objective, Objective):
        raise ObjectiveError(f"register_objective takes an Objective, got {objective!r}")
    problems = []
    if objective.name in _REGISTRY:
        problems.append(f"an objective named {objective.name!r} is already registered")
    taken = {column: other.name for other in _REGISTRY.values() for column in other.columns}
    clashes = sorted(c for c in objective.columns if c in taken and taken[c] != objective.name)
    if clashes:
        problems.append(f"fields {clashes} are already reported by {sorted({taken[c] for c in clashes})}")
    if problems:
        raise ObjectiveError(f"cannot register objective {objective.name!r}: " + "; ".join(problems))
    _REGISTRY[objective.name] = objective
    return objective


def list_objectives(role: Role | str | None = None) -> tuple[str, ...]:
    """The registered objectives' names, in registry order; only those of `role` when it is given."""
    if role is None:
        return tuple(_REGISTRY)
    role = Role(role)
    return tuple(name for name, o in _REGISTRY.items() if o.role is role)


def get_objective(name: str) -> Objective:
    """The registered objective `name`; `ObjectiveError` (with the known names) when there is none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1) if isinstance(name, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ObjectiveError(f"unknown objective {name!r} (known: {', '.join(_REGISTRY)}){hint}") from None


def get_objectives(names: Sequence[str] | str) -> tuple[Objective, ...]:
    """The objectives named, in order; at least two, known, without duplicates (Optuna multi-objective), at most one
    task score (`Role.ACCURACY`).

    A single string is read as a comma-separated list (`"accuracy,gflops"`, as on the command line).
    Raises `ObjectiveError` listing every problem at once.
    """
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    names = list(names)
    problems: list[str] = []
    known = ", ".join(OBJECTIVES)
    for name in names:
        if not isinstance(name, str):
            problems.append(f"objective names are strings, got {name!r}")
        elif name not in OBJECTIVES:
            close = difflib.get_close_matches(name, list(OBJECTIVES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown objective {name!r} (known: {known}){hint}")
    counts = Counter(n for n in names if isinstance(n, str))
    for name, count in counts.items():
        if count > 1:
            problems.append(f"objective {name!r} is given {count} times; name each objective once")
    scores = [n for n in counts if n in OBJECTIVES and OBJECTIVES[n].role is Role.ACCURACY]
    if len(scores) > 1:
        problems.append(
            f"{' and '.join(repr(n) for n in scores)} are task scores (role {Role.ACCURACY.value!r}) and a study "
            "optimises one at most: keep one of them"
        )
    if len(counts) < 2:
        problems.append(
            f"a search needs at least two distinct objectives (multi-objective), got {len(counts)}; "
            f"for example {','.join(DEFAULT_OBJECTIVES)}"
        )
    if problems:
        raise ObjectiveError("invalid objectives: " + "; ".join(problems))
    return tuple(OBJECTIVES[name] for name in names)


def task_score(objectives: Sequence[Objective | str] | None = None) -> Objective | None:
    """The task score a budget choice optimises (in its own direction) and the Pareto plot's y axis: the first of
    `objectives` (`Objective`s or names) with `Role.ACCURACY`, None when none has it; without `objectives`, the
    first registered one (`accuracy`)."""
    if objectives is None:
        return next((o for o in _REGISTRY.values() if o.role is Role.ACCURACY), None)
    for objective in objectives:
        if isinstance(objective, str):
            objective = _REGISTRY.get(objective)
        if isinstance(objective, Objective) and objective.role is Role.ACCURACY:
            return objective
    return None


def compute_objectives(trial: TrialOutputs, objectives: Sequence[Objective]) -> dict[str, Any]:
    """Every field of `objectives` for the trial's plan, then of every other registered objective whose inputs
    the trial already holds (computing them needs no new pass over the model), in registry order.

    So cost objectives are reported for every plan, and fidelity whenever features were computed.
    """
    chosen = list(objectives)
    trial.expect(frozenset().union(*(o.inputs(head=trial.head) for o in chosen)))
    values: dict[str, dict[str, Any]] = {}
    for objective in chosen:
        values[objective.name] = objective.compute(trial)
    for objective in _REGISTRY.values():
        if objective.name not in values and all(trial.available(m) for m in objective.inputs(head=trial.head)):
            values[objective.name] = objective.compute(trial)
    order = [*(name for name in _REGISTRY if name in values), *(name for name in values if name not in _REGISTRY)]
    return {key: value for name in order for key, value in values[name].items()}
