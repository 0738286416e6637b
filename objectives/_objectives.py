"""The objectives a trial can be scored on, each with its name, direction and unit.

`OBJECTIVES` is the read-only registry; `get_objectives` turns the user's `--objectives` list into
`Objective`s, in the given order (the order of Optuna's `directions`), reporting every problem at once.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from toast.spaces._errors import ObjectiveError

__all__ = ["DEFAULT_OBJECTIVES", "OBJECTIVES", "Objective", "ObjectiveError", "get_objectives"]

DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True, kw_only=True)
class Objective:
    """One measurable objective. `direction` is Optuna's (`"maximize"` or `"minimize"`)."""

    name: str
    direction: str
    unit: str
    description: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ObjectiveError(
                f"objective {self.name!r}: direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}"
            )

    @property
    def maximize(self) -> bool:
        """True when larger values are better."""
        return self.direction == "maximize"


def _registry(*objectives: Objective) -> Mapping[str, Objective]:
    return MappingProxyType({o.name: o for o in objectives})


OBJECTIVES: Mapping[str, Objective] = _registry(
    Objective(
        name="accuracy",
        direction="maximize",
        unit="%",
        description="top-1 test accuracy of a linear probe on the pooled features (or of the original head)",
    ),
    Objective(
        name="fidelity",
        direction="maximize",
        unit="CKA",
        description="linear CKA between the compressed and the original model's final features; no labels",
    ),
    Objective(
        name="gflops",
        direction="minimize",
        unit="GFLOPs",
        description="forward cost of one input at the model's input size (fvcore: a multiply-add is one FLOP)",
    ),
    Objective(
        name="params",
        direction="minimize",
        unit="M",
        description="millions of parameters of the compressed model, translators included",
    ),
    Objective(
        name="latency",
        direction="minimize",
        unit="ms",
        description="median wall-clock milliseconds per batch on the current device",
    ),
)

DEFAULT_OBJECTIVES: tuple[str, ...] = ("accuracy", "gflops")


def get_objectives(names: Sequence[str] | str) -> tuple[Objective, ...]:
    """The objectives named, in order; at least two, known, without duplicates (Optuna multi-objective).

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
    if len(counts) < 2:
        problems.append(
            f"a search needs at least two distinct objectives (multi-objective), got {len(counts)}; "
            f"for example {','.join(DEFAULT_OBJECTIVES)}"
        )
    if problems:
        raise ObjectiveError("invalid objectives: " + "; ".join(problems))
    return tuple(OBJECTIVES[name] for name in names)
