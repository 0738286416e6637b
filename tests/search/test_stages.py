"""Multi-fidelity trials (issue 12, item 2): the rule that stops a plan at the subset, and the study around it."""

from __future__ import annotations

import csv
import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import optuna
import pytest

from toast.objectives import Cost, CostTable, get_objective, get_objectives
from toast.search import SearchSettings
from toast.search._stages import dominating_trial, fidelity_rows, front_snapshot
from toast.search._study import Search
from toast.search.cli import main
from toast.spaces import Plan, PlanSpace

L = 4
OBJ = get_objectives(("accuracy", "gflops"))
ACC = get_objective("accuracy")


def entry(number, accuracy, gflops, n=100):
    return {"number": number, "gflops": gflops, "subset_accuracy": accuracy, "subset_eval_samples": n}


def test_accuracy_standard_error_is_binomial_and_never_zero():
    se = ACC.standard_error(80.0, 400)
    rate = (320 + 1) / 402
    assert se == pytest.approx(100 * math.sqrt(rate * (1 - rate) / 400))
    assert ACC.standard_error(100.0, 50) > 0 and ACC.standard_error(0.0, 50) > 0
    assert get_objective("gflops").standard_error(1.0, 10) is None  # the base class: no standard error


def test_a_plan_stops_only_when_a_no_costlier_plan_beats_it_by_z_standard_errors():
    plan = {"accuracy": 70.0, "gflops": 2.0}
    se = ACC.standard_error(70.0, 100)
    far = 70.0 + 2 * math.sqrt(2) * se * 1.3  # well past 2 standard errors of the difference (two similar SEs)
    assert dominating_trial(plan, 100, [entry(5, far, 1.5)], OBJ, z=2.0) == 5
    assert dominating_trial(plan, 100, [entry(5, far, 2.0)], OBJ, z=2.0) == 5  # as costly: still no better there
    assert dominating_trial(plan, 100, [entry(5, far, 2.5)], OBJ, z=2.0) is None  # costlier: not dominated
    assert dominating_trial(plan, 100, [entry(5, 71.0, 1.0)], OBJ, z=2.0) is None  # within noise
    assert dominating_trial(plan, 100, [entry(5, 71.0, 1.0)], OBJ, z=0.0) == 5  # z 0: any gap
    assert dominating_trial(plan, 100, [], OBJ, z=2.0) is None
    with_fidelity = get_objectives(("accuracy", "fidelity", "gflops"))  # fidelity has no standard error
    scores = {**plan, "fidelity": 0.5}
    front = [{**entry(5, 99.0, 1.0), "subset_fidelity": 0.99}]
    assert dominating_trial(scores, 100, front, with_fidelity, z=2.0) is None


def test_the_subset_rows_are_a_seeded_partition():
    a, b = fidelity_rows(101, 0.25, seed=3)
    assert len(a) == 25 and np.array_equal(np.sort(np.concatenate([a, b])), np.arange(101))
    assert np.array_equal(a, np.sort(a)) and np.array_equal(a, fidelity_rows(101, 0.25, seed=3)[0])
    assert fidelity_rows(10, 0.0, 0) is None and fidelity_rows(10, 1.0, 0) is None


COSTS = CostTable(
    embed=Cost(10, 1),
    blocks=tuple(Cost(100, 10) for _ in range(L)),
    tail=Cost(5, 1),
    translators={"identity": Cost(0, 0), "linear": Cost(8, 2)},
)


class FakeEvaluate:
    """Scores a plan by its kept blocks (more kept: more accurate; a linear map: less), records each call's options, and can stop a
    plan at the subset through the real rule."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, plan, promote=None, subset_scores=None):
        self.calls.append((str(plan), {"promote": promote is not None, "subset_scores": subset_scores}))
        accuracy = max(20.0 * len(plan.kept) - 10.0 * sum(s.kind == "linear" for s in plan.spans), 1.0)
        out = {"accuracy": accuracy, "gflops": COSTS.cost(plan).gflops}
        if subset_scores is not None:
            return {**out, **subset_scores, "scored_on": "full"}
        stopped = promote({"accuracy": accuracy - 1, "gflops": out["gflops"]}, 100) if promote else None
        if stopped is not None:
            return {**out, "accuracy": accuracy - 1, "scored_on": "subset", "dominated_by": stopped}
        subset = {"subset_accuracy": accuracy - 1, "subset_eval_samples": 100}
        return {**out, **subset, "scored_on": "full"}


def make_search(out, evaluate, **kw) -> Search:
    settings = SearchSettings.from_flat(
        model="m", dataset="d", out=out, sampler="random", trials=8, seeds_per_study=0, fidelity_z=0.5, **kw
    )
    return Search(settings, space=PlanSpace(num_blocks=L), costs=COSTS, evaluate=evaluate)


def test_the_study_holds_full_scores_on_its_front_and_stops_dominated_plans(tmp_path):
    evaluate = FakeEvaluate()
    search = make_search(tmp_path / "run", evaluate)
    plans = [Plan.parse(t, L) for t in ("0→1:identity", "0→1:linear", "-1→0:identity,1→3:identity")]
    search.enqueue(plans)
    search.study.optimize(search.objective, n_trials=3)
    records = {r["plan"]: r for r in search.records()}
    # 0→1:linear keeps the same blocks as 0→1:identity and costs more: dominated at the subset
    assert records["0→1:linear"]["scored_on"] == "subset" and records["0→1:linear"]["dominated_by"] == 0
    assert records["0→1:identity"]["scored_on"] == "full"
    assert records["-1→0:identity, 1→3:identity"]["scored_on"] == "full"  # cheaper: not dominated
    assert [e["number"] for e in search.front()] == [0, 2]  # only fully scored trials are compared with


def test_a_plan_whose_trial_failed_is_queued_again_and_a_waiting_one_counted_once(tmp_path):
    """`enqueue` counts what will run: a failed plan is queued again (Optuna's `skip_if_exists` would count it and
    skip it), a plan already waiting is counted without a second entry."""
    search = make_search(tmp_path / "run", FakeEvaluate())
    failed, other = Plan.parse("0→1:identity", L), Plan.parse("0→2:identity", L)
    assert search.enqueue([failed]) == 1

    def boom(trial):
        raise RuntimeError("boom")

    search.study.optimize(boom, n_trials=1, catch=(RuntimeError,))
    assert search.study.trials[0].state == optuna.trial.TrialState.FAIL
    assert search.enqueue([failed, other]) == 2
    assert search.enqueue([failed, other]) == 2  # both wait already: no second entry
    waiting = search.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(str(search.space.decode(t.system_attrs["fixed_params"])) for t in waiting) == sorted(
        [str(failed), str(other)]
    )


def test_a_resumed_study_does_not_rescore_an_interrupted_trials_subset(tmp_path):
    evaluate = FakeEvaluate()
    search = make_search(tmp_path / "run", evaluate)
    plan = Plan.parse("0→2:identity", L)
    search.enqueue([plan])
    trial = search.study.ask()
    search.storage.set_trial_user_attr(trial._trial_id, "spans", plan.to_json())  # what `define` records
    search.storage.set_trial_user_attr(trial._trial_id, "subset_accuracy", 38.5)  # the subset stage, then Ctrl-C
    search.storage.set_trial_user_attr(trial._trial_id, "subset_eval_samples", 100)
    again = FakeEvaluate()
    resumed = make_search(tmp_path / "run", again)  # marks the RUNNING trial failed, keeps its subset scores
    assert resumed.study.trials[0].state == optuna.trial.TrialState.FAIL
    resumed.study.enqueue_trial(resumed.space.encode(plan))  # the sampler asks for the plan again
    resumed.study.optimize(resumed.objective, n_trials=1)
    assert again.calls == [
        ("0→2:identity", {"promote": True, "subset_scores": {"subset_accuracy": 38.5, "subset_eval_samples": 100}})
    ]
    done = [r for r in resumed.records() if r["state"] == "COMPLETE"]
    assert done[0]["subset_accuracy"] == 38.5 and done[0]["scored_on"] == "full"


def test_front_snapshot_reads_only_full_trials_with_subset_scores():
    records = [
        {
            "number": 0,
            "scored_on": "full",
            "gflops": 1.0,
            "accuracy": 90.0,
            "subset_accuracy": 88.0,
            "subset_eval_samples": 50,
        },
        {"number": 1, "scored_on": "subset", "gflops": 1.0, "accuracy": 80.0},
        {"number": 2, "gflops": 1.0, "accuracy": 95.0},  # a trial from before multi-fidelity
    ]
    assert front_snapshot(records, OBJ) == [
        {"number": 0, "subset_eval_samples": 50, "subset_accuracy": 88.0, "gflops": 1.0}
    ]


def test_a_staged_cli_run_writes_the_fidelity_of_each_trial_and_a_full_front(
    tiny_dirs, graded_dataset_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr("toast.search._context.MIN_SUBSET", 5)  # 40 test samples: a subset of 20 is enough here
    out = tmp_path / "run"
    args = [
        *("--model", str(tiny_dirs["vit"]), "--dataset", str(graded_dataset_dir), "--out", str(out)),
        *("--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress", "--sampler", "random"),
        *("--calib-samples", "16", "--probe-samples", "60", "--eval-samples", "40", "--trials", "12"),
        *("--fidelity-fraction", "0.5", "--fidelity-z", "0"),
    ]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()) as err:
        code = main(args)
    assert code == 0, err.getvalue()
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r["scored"] != "False" and r["state"] == "COMPLETE" and not r["duplicate_of"]]
    reached = {r["scored_on"] for r in scored}
    assert reached == {"subset", "full"}, reached  # z 0: some plans stopped at the subset
    for r in scored:
        assert int(r["forward_blocks"]) >= 0 and r["scored_on"] in ("subset", "full")
    front = json.loads((out / "front.json").read_text())
    subset_plans = {r["plan"] for r in scored if r["scored_on"] == "subset"}
    assert front["front"] and not subset_plans & {r["plan"] for r in front["front"]}


def test_an_objective_with_an_error_field_lets_a_plan_stop_early():
    """A causal LM's perplexity has no standard error from its value alone: its `perplexity_se` (the spread over the
    sequences) stands in, for the new plan and for the fully scored one it is compared with."""
    objectives = get_objectives("perplexity,gflops")
    snapshot = [
        {"number": 3, "gflops": 1.0, "subset_perplexity": 30.0, "subset_perplexity_se": 0.5, "subset_eval_samples": 50}
    ]
    worse = {"perplexity": 40.0, "perplexity_se": 0.5, "gflops": 1.0}
    assert dominating_trial(worse, 50, snapshot, objectives, z=2.0) == 3
    close = {"perplexity": 30.9, "perplexity_se": 0.5, "gflops": 1.0}  # within 2 standard errors of the difference
    assert dominating_trial(close, 50, snapshot, objectives, z=2.0) is None
    unknown = {"perplexity": 40.0, "gflops": 1.0}  # no error known: never stopped early
    assert dominating_trial(unknown, 50, snapshot, objectives, z=2.0) is None
