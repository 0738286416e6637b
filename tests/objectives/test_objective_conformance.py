"""Every registered objective passes `toast.objectives.testing.check_objective`; the check catches broken ones."""

from __future__ import annotations

import itertools

import pytest

from toast.objectives import Objective, list_objectives
from toast.objectives._objectives import CostObjective
from toast.objectives.testing import check_objective


@pytest.mark.parametrize("name", list_objectives())
def test_registered_objective_conforms(name):
    check_objective(name)


class _Constant(Objective):
    """A well-behaved objective to break one rule at a time."""

    def compute(self, trial):
        return {self.name: 0.5}


class _ReadsUndeclared(Objective):
    def compute(self, trial):
        return {self.name: float(trial.eval_features.mean() ** 2)}


class _ExtraField(Objective):
    def compute(self, trial):
        return {self.name: 1.0, "surprise": 2.0}


class _NotFinite(Objective):
    def compute(self, trial):
        return {self.name: float("inf")}


class _Undefined(Objective):
    def compute(self, trial):
        return {self.name: None}


_counter = itertools.count()


class _Drifting(Objective):
    def compute(self, trial):
        return {self.name: float(next(_counter))}


class _CostRunsModel(CostObjective):
    def of_plan(self, plan, cost):
        return 1.0

    def compute(self, trial):
        _ = trial.eval_features
        return {self.name: 1.0}


def declare(cls, **overrides):
    fields = {"name": "demo", "direction": "maximize", "unit": "u", "description": "a test objective", "worst": 0.0}
    return cls(**{**fields, **overrides})


def test_a_conforming_objective_passes():
    check_objective(declare(_Constant))
    check_objective(declare(_ReadsUndeclared, needs=frozenset({"eval_features"}), worst=None))


@pytest.mark.parametrize(
    ("objective", "rule"),
    [
        (declare(_Constant, unit=""), "declares no unit"),
        (declare(_Constant, worst=1.0), "ranks above the real value"),
        (declare(_ReadsUndeclared, worst=None), r"read \['eval_features'\], which inputs\(\) does not declare"),
        (declare(_Constant, needs=frozenset({"gpu"})), "does not provide"),
        (declare(_ExtraField), r"fields \['surprise'\] it does not declare"),
        (declare(_NotFinite, worst=None), "must be a finite number"),
        (declare(_Undefined), "no value and no reason"),
        (declare(_Drifting, worst=None), "not deterministic"),
        (
            declare(
                _CostRunsModel, direction="minimize", worst=None, needs=frozenset({"plan", "cost", "eval_features"})
            ),
            "ran the model",
        ),
        (declare(Objective), "implement compute"),
    ],
)
def test_the_check_names_the_broken_rule(objective, rule):
    with pytest.raises((AssertionError, NotImplementedError), match=rule):
        check_objective(objective)


def test_a_nondeterministic_objective_may_say_so():
    check_objective(declare(_Drifting, worst=None, deterministic=False))


def test_the_suite_checks_every_head_the_search_has():
    from toast.objectives.testing import HEADS as CHECKED
    from toast.search._settings import HEADS

    assert set(CHECKED) == set(HEADS)
