"""What an objective is: its name, direction and unit, how it is shown, and how a trial's outputs give its value.

An `Objective` is a frozen declaration; a concrete objective subclasses it and implements `compute(trial)`,
reading only what `inputs` names from the trial (a `TrialOutputs`). `CostObjective` is the kind counted from
the plan and its cost table alone (budgets are stated in these). Objectives are registered in `_registry`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from toast.errors import ObjectiveError

if TYPE_CHECKING:
    from toast.spaces import Plan

    from ._cost import Cost
    from ._trial import TrialOutputs

__all__ = ["DIRECTIONS", "CostObjective", "Display", "Objective", "ObjectiveError", "Role", "undefined_field"]

DIRECTIONS = ("maximize", "minimize")


def undefined_field(name: str) -> str:
    """The record field that says why objective `name` has no value for a plan (e.g. `fidelity_undefined`)."""
    return f"{name}_undefined"


class Role(str, Enum):
    """What an objective is to the search beyond its direction: which one a budget choice maximises, which are budgets."""

    ACCURACY = (
        "accuracy"  # the task score: the budget choice maximises it, the Pareto plot's y axis (one such objective)
    )
    COST = "cost"  # counted from the plan and its cost table, no model run: budgets, tie-breaks, the plot's x axis
    MEASURE = "measure"  # anything else measured on a trial (agreement with the original, latency)


@dataclass(frozen=True, kw_only=True)
class Display:
    """How an objective's values are shown: front-table `title`, plot `axis` label, `name` in plot titles,
    `unit` after a value on a plot, `fmt` of a value after multiplying it by `scale`.

    `headline`: a front-table column whenever a row has a value, even when it is not an objective of the study;
    `delta`: the header of a column of the change against the original model (formatted with `delta_fmt`).
    """

    title: str
    axis: str
    name: str
    unit: str = ""
    fmt: str = "{:.4g}"
    scale: float = 1.0
    headline: bool = False
    delta: str | None = None
    delta_fmt: str = "{:+.2f}"

    @classmethod
    def plain(cls, key: str) -> Display:
        """How a record field that is no registered objective is shown: its own name, four significant digits."""
        return cls(title=key, axis=key, name=key)

    def format(self, value: float) -> str:
        """`value` as shown in a table; `-` when it is missing (NaN)."""
        return "-" if math.isnan(value) else self.fmt.format(value * self.scale)

    def format_delta(self, value: float, reference: float) -> str:
        """The change from `reference` to `value` as shown in the delta column; `-` when either is missing."""
        return (
            "-"
            if math.isnan(value) or math.isnan(reference)
            else self.delta_fmt.format((value - reference) * self.scale)
        )


@dataclass(frozen=True, kw_only=True)
class Objective:
    """One measurable objective. `direction` is Optuna's (`"maximize"` or `"minimize"`).

    `fields` are the other record fields `compute` may report, in column order (e.g. `accuracy_std`);
    `field_descriptions` says in a line what each of them (and `search_field`) is, as `description` says of the
    value (front.json's glossary reads both);
    `worst` is what a plan whose value is undefined ranks as (default: the infinitely bad value);
    `rescored`: measured again on the whole test split (with the final probe) once the search ends, its
    search-time value kept under `search_field` when that is set; `deterministic`: equal outputs give equal values.
    Subclasses implement `compute` and say what it reads in `inputs`.
    """

    name: str
    direction: str
    unit: str
    description: str
    display: Display | None = None
    fields: tuple[str, ...] = ()
    role: Role = Role.MEASURE
    worst: float | None = None
    rescored: bool = False
    search_field: str | None = None
    deterministic: bool = True
    needs: frozenset[str] = field(default=frozenset())
    #: the record field (one of `fields`) where `compute` puts the value's standard error when it is known from the
    #: samples' spread and not from the value alone (`standard_error` None): the multi-fidelity rule reads it there
    error_field: str | None = None
    field_descriptions: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = []
        if self.direction not in DIRECTIONS:
            problems.append(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            problems.append(f"the name must be a Python identifier (it is a column name), got {self.name!r}")
        if not isinstance(self.role, Role):
            problems.append(f"role must be a Role ({', '.join(r.value for r in Role)}), got {self.role!r}")
        if self.worst is not None and (not isinstance(self.worst, (int, float)) or math.isnan(self.worst)):
            problems.append(f"worst must be a number (not NaN), got {self.worst!r}")
        if self.error_field is not None and self.error_field not in self.fields:
            problems.append(f"error_field {self.error_field!r} must be one of fields {self.fields!r}")
        if self.name in self.fields or len(set(self.fields)) != len(self.fields):
            problems.append(f"fields must be distinct and differ from the name, got {self.fields!r}")
        unknown = sorted(
            set(self.field_descriptions) - {*self.fields, *((self.search_field,) if self.search_field else ())}
        )
        if unknown:
            problems.append(f"field_descriptions name fields it does not report: {unknown}")
        if problems:
            raise ObjectiveError(f"objective {self.name!r}: " + "; ".join(problems))
        if self.display is None:
            axis = f"{self.name} ({self.unit})" if self.unit else self.name
            object.__setattr__(self, "display", Display(title=self.name, axis=axis, name=self.name, unit=self.unit))
        object.__setattr__(self, "needs", frozenset(self.needs))
        object.__setattr__(self, "field_descriptions", MappingProxyType(dict(self.field_descriptions)))

    @property
    def maximize(self) -> bool:
        """True when larger values are better."""
        return self.direction == "maximize"

    def describe(self, column: str) -> str | None:
        """What record field `column` of this objective is (its value: `description`, with the unit), or None."""
        if column == self.name:
            return f"{self.description} ({self.unit})" if self.unit else self.description
        return self.field_descriptions.get(column)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every record field this objective reports: its value, then its `fields`."""
        return (self.name, *self.fields)

    @property
    def worst_value(self) -> float:
        """What a plan that could not be measured ranks as, so the sampler never prefers it."""
        if self.worst is not None:
            return float(self.worst)
        return -math.inf if self.maximize else math.inf

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than `b` in this objective's direction."""
        return a > b if self.maximize else a < b

    def inputs(self, *, head: str = "probe") -> frozenset[str]:
        """The `TrialOutputs` members `compute` reads when the accuracy head is `head` (`"probe"` or `"original"`)."""
        return self.needs

    def standard_error(self, value: float, samples: int) -> float | None:
        """The standard error of `value` measured on `samples` evaluation samples, or None when it has none (then a
        multi-fidelity search scores every plan on the full sets: it cannot stop one early with confidence)."""
        return None

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """This objective's fields for the trial's plan: `{name: value, ...}`, a field of `fields` at most once each."""
        raise NotImplementedError(f"objective {self.name!r} does not say how it is computed: implement compute(trial)")


@dataclass(frozen=True, kw_only=True)
class CostObjective(Objective):
    """An objective counted from the plan and its `Cost` alone (no model run), so it is known for every plan,
    scored or not, and a budget can be stated in it."""

    role: Role = Role.COST
    needs: frozenset[str] = field(default=frozenset({"plan", "cost"}))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.role is not Role.COST:
            raise ObjectiveError(
                f"objective {self.name!r}: a CostObjective has role {Role.COST.value!r}, got {self.role!r}"
            )

    def of_plan(self, plan: Plan, cost: Cost) -> float:
        """The value for `plan`, whose counts are `cost`."""
        raise NotImplementedError(
            f"cost objective {self.name!r} does not say how it is counted: implement of_plan(plan, cost)"
        )

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{name: of_plan(trial.plan, trial.cost)}`."""
        return {self.name: float(self.of_plan(trial.plan, trial.cost))}
