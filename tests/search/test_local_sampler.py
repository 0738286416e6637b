"""The default sampler (issue 12): multivariate TPE with local steps from the front and no repeated plans."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from toast.search import non_dominated
from toast.search.samplers import PROPOSED_BY, LocalFrontSampler
from toast.spaces import Plan, PlanSpace

L = 6
SPACE = PlanSpace(num_blocks=L, kinds=("identity", "linear"))


def scores(seed: int):
    """Accuracy: a random loss per span, summed, so that the front is not trivial; cost: blocks kept plus the
    linear maps' share."""
    rng = np.random.default_rng(seed)
    loss = {(s, e, k): rng.exponential(2.0) * (e - s) for s in range(-1, L - 1) for e in range(s + 1, L) for k in "il"}

    def accuracy(plan: Plan) -> float:
        return 90.0 - sum(loss[s.start, s.end, s.kind[0]] for s in plan.spans)

    def cost(plan: Plan) -> float:
        return len(plan.kept) + 0.1 * sum(s.kind == "linear" for s in plan.spans)

    return accuracy, cost


def run(sampler, trials: int, seed: int = 0, enqueue=()) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    accuracy, cost = scores(seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for plan in enqueue:
        study.enqueue_trial(SPACE.encode(plan))

    def objective(trial):
        plan = SPACE.suggest(trial)
        trial.set_user_attr("spans", plan.to_json())
        return accuracy(plan), cost(plan)

    study.optimize(objective, n_trials=trials)
    return study


def genes(trial) -> tuple:
    return tuple(trial.params[n] for n in SPACE.param_names)


@pytest.mark.parametrize("seed", [0, 1])
def test_no_plan_is_tried_twice_where_tpe_alone_repeats(seed):
    tpe = run(optuna.samplers.TPESampler(seed=seed, multivariate=True), 80, seed)
    assert len({genes(t) for t in tpe.trials}) < 80, "the same TPE repeats plans (else this test shows nothing)"
    study = run(LocalFrontSampler(space=SPACE, seed=seed), 80, seed)
    assert len({genes(t) for t in study.trials}) == 80
    assert any(t.system_attrs.get(PROPOSED_BY) == "untried-neighbour" for t in study.trials)


def test_every_other_trial_after_the_start_steps_from_the_front():
    study = run(LocalFrontSampler(space=SPACE, seed=2, startup=10), 40, 2)
    steps = [t for t in study.trials if t.system_attrs.get(PROPOSED_BY) == "front-neighbour"]
    assert steps and all(t.number % 2 == 0 and t.number >= 10 for t in steps)
    assert len(steps) == len([n for n in range(10, 40) if n % 2 == 0])
    for t in steps:  # one gene away from a plan on the front of the trials before it
        before = study.trials[: t.number]
        values = np.array([b.values for b in before])
        front = [before[i] for i in np.flatnonzero(non_dominated(values, ["maximize", "minimize"]))]
        assert any(sum(a != b for a, b in zip(genes(t), genes(f))) == 1 for f in front)


def test_its_own_plans_meet_the_constraints():
    _, cost = scores(3)
    budget = 3.5
    sampler = LocalFrontSampler(space=SPACE, seed=3, feasible=lambda plan: cost(plan) <= budget)
    study = run(sampler, 40, 3)
    own = [t for t in study.trials if PROPOSED_BY in t.system_attrs]
    assert own and all(t.values[1] <= budget for t in own)


def test_enqueued_plans_run_as_given():
    plans = [Plan.of([[2, 4, "identity"]], L), Plan.of([[-1, 1, "linear"], [3, 5, "identity"]], L), Plan((), L)]
    study = run(LocalFrontSampler(space=SPACE, seed=4, startup=2), 6, 4, enqueue=plans)
    assert [t.user_attrs["spans"] for t in study.trials[:3]] == [p.to_json() for p in plans]
    assert not any(PROPOSED_BY in t.system_attrs for t in study.trials[:3])


def test_subset_and_repeated_trials_are_not_the_front_it_steps_from():
    """A plan stopped at the subset (multi-fidelity) or a repeat reusing scores is not stepped from."""
    sampler = LocalFrontSampler(space=SPACE, seed=5, startup=1)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    tried = set()
    for spans, attrs in (([[0, 2, "identity"]], {"scored_on": "subset"}), ([[3, 4, "linear"]], {"duplicate_of": 0})):
        plan = Plan.of(spans, L)
        trial = optuna.trial.create_trial(
            params=SPACE.encode(plan), distributions=SPACE.distributions(), values=[99.0, 1.0], user_attrs=attrs
        )
        study.add_trial(trial)
        tried.add(genes(trial))
    assert sampler.front_step(study.get_trials(), tried, study.directions) is None
