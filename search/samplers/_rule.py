"""What the peers' strategies share: a published decision rule, replayed as an Optuna sampler.

A peer's rule (`RuleSampler.rule`) is a generator: it yields the plans it wants scored, one at a time, and is sent
each plan's fitness (lower is better; None for a plan still running, which only a rule that does not read scores
may get). The sampler replays the rule from the start at every trial, sending the scores the study already holds,
and proposes the first plan the study has not scored; so a resumed study goes on where it stopped, with no state
kept outside the study. The study runs at most the rule's own number of plans (`Sampler.planned`); where the rule
ends sooner (its plans repeat, and a repeat is looked up, not proposed), the study stops on one last repeat, whose
scores are reused.

The peers remove blocks by setting their genes to `identity` (`removal_plan`): consecutive removed blocks are one
span, as the genome reads them, which is the same model as the blocks dropped one by one.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.samplers import BaseSampler

from toast.errors import SettingsError
from toast.runners import study_storage, trial_id
from toast.spaces import KEEP, Plan, PlanSpace

from ._local import PROPOSED_BY
from ._registry import Sampler, SamplerContext, register_sampler

Rule = Generator[Plan, "float | None", None]


def register_peer(**fields: Any) -> Sampler:
    """Register a peer's strategy: never seeded with our statistics' plans, and a run of its own (`Sampler`)."""
    return register_sampler(Sampler(seeded=False, own_run=True, **fields))


def removal_plan(space: PlanSpace, removed: Iterable[int], kind: str = "identity") -> Plan:
    """The plan that replaces exactly the blocks `removed` by `kind` (runs of consecutive blocks are one span)."""
    gone = set(removed)
    return space.decode([kind if b in gone else KEEP for b in range(space.num_blocks)])


def max_removed(space: PlanSpace) -> int:
    """The most blocks a peer removes: the space's limit, and never every block."""
    return min(space.removal_limit, space.num_blocks - 1)


def token_cosine(ctx: SamplerContext, name: str) -> np.ndarray:
    """The mean token cosine between every pair of hidden states `(L+1, L+1)`, from the calibration statistics; a
    one-line error where the statistics do not hold it."""
    found = None if ctx.stats is None else ctx.stats.token_cosine()
    if found is None:
        raise SettingsError(
            f"--sampler {name} ranks blocks by the mean token cosine of their hidden states, which these calibration "
            "statistics do not hold (made before it was gathered): run once with a new --cache-dir to capture again"
        )
    return found


class RuleSampler(BaseSampler):
    """An Optuna sampler that proposes the plans of a decision rule (see the module); subclasses set `name` and
    implement `rule()`. Fitness is the study's objective `fitness_index` (the first by default), lower is better."""

    name: ClassVar[str] = "rule"

    def __init__(self, ctx: SamplerContext) -> None:
        self.ctx = ctx
        self.space = ctx.space
        self.rng = np.random.default_rng(ctx.seed)
        self._fallback = optuna.samplers.RandomSampler(seed=ctx.seed)

    # ---- the rule --------------------------------------------------------------------------------
    def rule(self) -> Rule:
        raise NotImplementedError

    def fresh_rule(self) -> Rule:
        """The rule from its start, its random draws (`rng`) from the seed again: every replay is the same."""
        self.rng = np.random.default_rng(self.ctx.seed)
        return self.rule()

    @property
    def fitness_index(self) -> int:
        return 0

    def fitness(self, trial: optuna.trial.FrozenTrial) -> float:
        """The trial's fitness: its objective value, negated where the study maximises it (lower is better); a
        trial with no finite value (failed, not scored) is the worst."""
        i = self.fitness_index
        if trial.state != optuna.trial.TrialState.COMPLETE or trial.values is None:
            return math.inf
        v = float(trial.values[i])
        maximize = bool(self.ctx.objectives) and self.ctx.objectives[i].maximize
        if not math.isfinite(v):
            return math.inf
        return -v if maximize else v

    def next_plan(self, trials: Iterable[optuna.trial.FrozenTrial]) -> Plan | None:
        """The first plan the rule wants that the study has not scored (replayed from the start), or None: the
        rule has proposed everything."""
        scores: dict[str, float] = {}
        running: set[str] = set()
        names = self.space.param_names
        for t in trials:
            if not all(n in t.params for n in names):
                continue
            key = _key(t.params[n] for n in names)
            if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING):
                running.add(key)
            elif t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL):
                scores[key] = min(scores.get(key, math.inf), self.fitness(t))
        rule = self.fresh_rule()
        try:
            plan = next(rule)
            while True:
                key = _key(self.space.encode(plan).values())
                if key in scores:
                    plan = rule.send(scores[key])
                elif key in running:
                    plan = rule.send(None)
                else:
                    return plan
        except StopIteration:
            return None

    # ---- Optuna's sampler interface ---------------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
        return dict(self.space.distributions())

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs or not search_space:  # an enqueued plan runs as given
            return {}
        trials = study.get_trials(deepcopy=False)
        plan = self.next_plan(trials)
        if plan is None:  # the rule is done (repeats made it spend fewer trials than planned): stop the study here
            study.stop()
            done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.params]
            study_storage(study).set_trial_system_attr(trial_id(trial), PROPOSED_BY, f"{self.name}: done, a repeat")
            return dict(done[-1].params) if done else {}  # a scored plan again: its scores are reused, no model run
        study_storage(study).set_trial_system_attr(trial_id(trial), PROPOSED_BY, self.name)
        return self.space.encode(plan)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()


def one_shot_plans(sampler: RuleSampler) -> list[Plan]:
    """Every plan a rule that reads no score proposes (ShortGPT's, ReplaceMe's), in its order: what costs no
    evaluation to choose, e.g. to seed another study with."""
    out: list[Plan] = []
    rule = sampler.fresh_rule()
    try:
        plan = next(rule)
        while True:
            out.append(plan)
            plan = rule.send(None)
    except StopIteration:
        return out


def _key(genes: Iterable[str]) -> str:
    return ",".join(genes)
