"""The conformance suite of a registered sampler: `check_sampler(name)` runs real Optuna studies with it.

Like `toast.spaces.testing.check_translator` and Optuna's own sampler tests, it runs the strategy on a small plan
space with calibration statistics made from synthetic hidden states (`synthetic_stats`) and a synthetic scoring
(`synthetic_scores`), and checks what every strategy owes the study:

- it keeps Optuna's sampler contract: every trial completes, its parameters are the space's genes, within their
  distributions, and decode to a plan the space holds (its constraints met);
- it proposes only the kinds it says it proposes (`Sampler.kinds`) and no more plans than its rule plans
  (`Sampler.planned`);
- the same seed proposes the same plans in the same order;
- a peer's rule (`RuleSampler`) goes on where a stopped study left off: a new sampler on the same storage proposes
  what an uninterrupted study would have.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna
import torch

from toast.objectives import get_objectives
from toast.spaces import ActivationStats, Plan, PlanSpace, StatsAccumulator

from ._registry import SamplerContext, get_sampler
from ._rule import RuleSampler

__all__ = ["check_sampler", "synthetic_scores", "synthetic_stats"]


def synthetic_stats(num_blocks: int, *, dim: int = 8, seed: int = 0) -> tuple[ActivationStats, list[torch.Tensor]]:
    """Statistics of synthetic hidden states `h_{b+1} = h_b + s_b·noise` (a seeded step size `s_b` per block, so
    blocks differ in how much they change the state), with the states themselves `(samples, tokens, dim)`."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.rand(num_blocks, generator=g) * 1.5 + 0.05
    states = [torch.randn(12, 5, dim, generator=g)]
    for b in range(num_blocks):
        states.append(states[-1] + steps[b] * torch.randn(12, 5, dim, generator=g))
    acc = StatsAccumulator(num_blocks + 1, dim)
    acc.update(states)
    return acc.result(), states


def synthetic_scores(space: PlanSpace, seed: int = 0) -> Callable[[Plan], tuple[float, float]]:
    """`plan -> (accuracy, GFLOPs)`: a seeded loss per removed block and kind, with an interaction between removed
    neighbours (so that greedy and exhaustive choices differ), and the kept blocks' share as the cost."""
    rng = np.random.default_rng(seed)
    loss = {(b, k): rng.exponential(2.0) for b in range(space.num_blocks) for k in space.kinds}

    def score(plan: Plan) -> tuple[float, float]:
        removed = {b: s.kind for s in plan.spans for b in s.removed}
        accuracy = 90.0 - sum(loss[b, k] for b, k in removed.items())
        accuracy -= 0.5 * sum(1 for b in removed if b + 1 in removed)
        return accuracy, len(plan.kept) / space.num_blocks

    return score


def _study(name: str, space: PlanSpace, ctx: SamplerContext, storage, trials: int) -> optuna.Study:
    spec = get_sampler(name)
    score = synthetic_scores(space, ctx.seed)
    study = optuna.create_study(
        study_name="check",
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=spec.build(ctx),
        load_if_exists=True,
    )
    if spec.enumerates and not study.trials:
        for plan in space.enumerate():
            study.enqueue_trial(space.encode(plan))

    def objective(trial):
        plan = space.suggest(trial)
        trial.set_user_attr("spans", plan.to_json())
        return score(plan)

    study.optimize(objective, n_trials=trials)
    return study


def _plans(study: optuna.Study, space: PlanSpace) -> list[Plan]:
    return [space.decode(t.params) for t in study.trials]


def check_sampler(name: str, *, num_blocks: int = 6, kinds=("identity", "linear"), trials: int = 24, seed: int = 0):
    """Run the checks of the module on the registered sampler `name`; returns the first study's trials."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = get_sampler(name)
    space = PlanSpace(num_blocks=num_blocks, kinds=kinds)
    stats, _ = synthetic_stats(num_blocks, seed=seed)
    ctx = SamplerContext(
        space=space, seed=seed, trials=trials, objectives=get_objectives("accuracy,gflops"), stats=stats
    )
    n = space.size() if spec.enumerates else trials
    if spec.planned is not None:
        n = min(n, spec.planned(ctx))
    study = _study(name, space, ctx, None, n)
    assert len(study.trials) == n, f"{name}: {len(study.trials)} trials, asked for {n}"
    distributions = space.distributions()
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE, f"{name}: trial {t.number} {t.state.name}"
        assert set(t.params) == set(space.param_names), f"{name}: trial {t.number} params {sorted(t.params)}"
        for p, v in t.params.items():
            assert distributions[p]._contains(distributions[p].to_internal_repr(v)), f"{name}: {p}={v!r}"
        plan = space.decode(t.params)
        assert space.contains(plan), f"{name}: trial {t.number} proposed {plan}, outside the space"
        if spec.kinds:
            assert {s.kind for s in plan.spans} <= set(spec.kinds), f"{name}: {plan} uses a kind it does not name"
    plans = _plans(study, space)
    again = _plans(_study(name, space, ctx, None, n), space)
    assert again == plans, f"{name}: the same seed proposed other plans"
    if isinstance(study.sampler, RuleSampler):
        storage = optuna.storages.InMemoryStorage()
        _study(name, space, ctx, storage, n // 2)
        resumed = _plans(_study(name, space, ctx, storage, n - n // 2), space)
        assert resumed == plans, f"{name}: a resumed study proposed other plans than an uninterrupted one"
    return study.trials
