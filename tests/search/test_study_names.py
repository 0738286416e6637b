"""The study names its values after the objectives (what optuna-dashboard and trials.csv show)."""

from __future__ import annotations

import warnings

import optuna
import pytest

from toast.objectives import Cost, CostTable, get_objectives
from toast.search import SearchSettings, load_run_study
from toast.search._study import Search
from toast.spaces import PlanSpace

L = 4
COSTS = CostTable(
    embed=Cost(10, 1),
    blocks=tuple(Cost(100, 10) for _ in range(L)),
    tail=Cost(5, 1),
    translators={"identity": Cost(0, 0), "linear": Cost(8, 2)},
)


def make_search(out, objectives) -> Search:
    settings = SearchSettings.from_flat(
        model="m", dataset="d", out=out, objectives=objectives, sampler="random", trials=2, seeds_per_study=0
    )
    return Search(settings, space=PlanSpace(num_blocks=L), costs=COSTS, evaluate=lambda plan: {})


def stored_names(out) -> list[str] | None:
    return load_run_study(out).metric_names


@pytest.mark.parametrize("objectives", [("accuracy", "gflops"), ("accuracy", "fidelity", "gflops", "params")])
def test_a_created_study_names_its_values_after_the_objectives(tmp_path, objectives):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # optuna's ExperimentalWarning for set_metric_names stays inside
        search = make_search(tmp_path / "run", objectives)
    names = [o.name for o in get_objectives(objectives)]
    assert names == list(objectives)
    assert search.study.metric_names == names
    assert stored_names(tmp_path / "run") == names  # in the study file, where optuna-dashboard reads it


def test_a_resumed_study_keeps_its_names(tmp_path):
    out = tmp_path / "run"
    make_search(out, ("accuracy", "gflops"))
    assert make_search(out, ("accuracy", "gflops")).study.metric_names == ["accuracy", "gflops"]

    # a study named before (by hand, or by an older version) is left as it is
    study = load_run_study(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["top-1", "cost"])
    assert make_search(out, ("accuracy", "gflops")).study.metric_names == ["top-1", "cost"]
