"""The default sampler: multivariate TPE, with every other trial a local step from the front, and no repeats.

In a plan space of a few hundred to a few thousand plans, multivariate TPE proposes a plan it has already scored
about one trial in seven (the study reuses the scores, but the trial is spent), and the plans it misses on the
front are mostly one gene away from plans it found: a span one block longer or shorter, or the other kind.
`LocalFrontSampler` wraps TPE and changes two things:

- every `local_every`-th trial (after `startup` fully scored plans) is an untried neighbour of a plan on the
  current front (one gene changed: a block kept or removed, or a span's kind swapped), the front plan drawn at
  random;
- a plan TPE proposes that was already tried is replaced by an untried plan at the fewest changed genes from it
  (from TPE's multivariate stage on; its first, independent draws, which the DP seeds mostly stand in for, are kept).

Neighbours must satisfy the study's constraints (`feasible`). Chosen by `bench/bench_front.py` (lookup studies over
10 seeds on demo-vit and all-MiniLM-L6-v2, RESULTS.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler

from toast.runners import study_storage, trial_id
from toast.spaces import Plan, PlanSpace

from .._pareto import non_dominated
from .._stages import FULL, SCORED_ON
from ._registry import Sampler, SamplerContext, register_sampler

PROPOSED_BY = "proposed_by"  # a trial's system attr: "front-neighbour" or "untried-neighbour" when not TPE's own plan
MAX_CHANGED = 2  # genes changed at most to find an untried plan near a repeat


class LocalFrontSampler(BaseSampler):
    """Multivariate TPE (`inner`) with local steps from the front and repeats replaced (see the module).

    `space`: the plan space the study's parameters encode. `feasible(plan)`: whether a plan meets the study's
    constraints (budgets, the space's limits). `local_every`: every how many trials is a local step (0: never).
    `startup`: fully scored plans needed before the first local step."""

    def __init__(
        self,
        *,
        space: PlanSpace,
        inner: BaseSampler | None = None,
        feasible: Callable[[Plan], bool] | None = None,
        local_every: int = 2,
        startup: int = 10,
        seed: int | None = None,
    ) -> None:
        self._space = space
        self._inner = inner if inner is not None else optuna.samplers.TPESampler(seed=seed, multivariate=True)
        self._feasible = feasible if feasible is not None else space.feasible
        self._local_every = local_every
        self._startup = startup
        self._rng = np.random.default_rng(seed)

    # ---- Optuna's sampler interface: TPE's, with `sample_relative` checked -----------------------
    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._inner.reseed_rng()

    def before_trial(self, study, trial) -> None:
        self._inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
        return dict(self._space.distributions())  # the whole genome: a local step sets every gene

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # an enqueued plan runs as given
            return {}
        trials = study.get_trials(deepcopy=False)
        tried = {genes for t in trials if t.state != optuna.trial.TrialState.FAIL and (genes := self._genes(t.params))}
        if self._local_every and trial.number % self._local_every == 0:
            step = self.front_step(trials, tried, study.directions)
            if step is not None:
                return self._proposed(study, trial, step, "front-neighbour")
        params = self._inner.sample_relative(study, trial, self._inner.infer_relative_search_space(study, trial))
        genes = self._genes(params)
        if genes is None or genes not in tried:  # before TPE's startup its relative params are empty
            return params
        near = self.untried_near(genes, tried)
        return params if near is None else self._proposed(study, trial, near, "untried-neighbour")

    # ---- the local steps ------------------------------------------------------------------------
    def front_step(self, trials: Sequence[optuna.trial.FrozenTrial], tried: set, directions) -> tuple | None:
        """The genes of an untried one-gene neighbour of a random front plan, or None (too few scored plans, or
        every front plan's neighbours tried)."""
        scored = [t for t in trials if _fully_scored(t) and self._genes(t.params) is not None]
        if len(scored) < self._startup:
            return None
        values = np.array([t.values for t in scored], dtype=np.float64)
        front = np.flatnonzero(non_dominated(values, [d.name.lower() for d in directions]))
        for i in self._rng.permutation(front):
            near = list(self._neighbours(self._genes(scored[i].params), 1, tried))
            if near:
                return near[self._rng.integers(len(near))]
        return None

    def untried_near(self, genes: tuple, tried: set) -> tuple | None:
        """A random untried feasible plan's genes at the fewest changed genes from `genes` (at most `MAX_CHANGED`)."""
        for changed in range(1, MAX_CHANGED + 1):
            near = list(self._neighbours(genes, changed, tried))
            if near:
                return near[self._rng.integers(len(near))]
        return None

    def _neighbours(self, genes: tuple, changed: int, tried: set) -> Iterator[tuple]:
        """Untried genomes with exactly `changed` genes other than `genes`, that decode to feasible plans."""
        for blocks in itertools.combinations(range(len(genes)), changed):
            options = [[c for c in self._space.gene_choices(b) if c != genes[b]] for b in blocks]
            for values in itertools.product(*options):
                other = list(genes)
                for b, v in zip(blocks, values):
                    other[b] = v
                other = tuple(other)
                if other not in tried and self._feasible(self._space.decode(other)):
                    yield other

    def _genes(self, params: dict[str, Any]) -> tuple | None:
        names = self._space.param_names
        if not all(n in params for n in names):
            return None
        return tuple(params[n] for n in names)

    def _proposed(self, study, trial, genes: tuple, how: str) -> dict[str, Any]:
        study_storage(study).set_trial_system_attr(trial_id(trial), PROPOSED_BY, how)
        return dict(zip(self._space.param_names, genes))


def _fully_scored(t: optuna.trial.FrozenTrial) -> bool:
    """A trial on the front's terms: complete, scored on the full sets, not a repeat, every value finite."""
    return (
        t.state == optuna.trial.TrialState.COMPLETE
        and t.user_attrs.get("scored", True)
        and "duplicate_of" not in t.user_attrs
        and t.user_attrs.get(SCORED_ON, FULL) == FULL
        and t.values is not None
        and all(math.isfinite(v) for v in t.values)
    )


def _tpe_local(ctx: SamplerContext) -> LocalFrontSampler:
    return LocalFrontSampler(
        space=ctx.space,
        inner=optuna.samplers.TPESampler(seed=ctx.seed, multivariate=True),
        feasible=ctx.is_feasible,  # budgets and the space's limits
        seed=ctx.seed,
        **{k: int(ctx.options[k]) for k in ("local_every", "startup") if k in ctx.options},  # bench variants
    )


register_sampler(
    Sampler(
        name="tpe-local",
        build=_tpe_local,
        help="multivariate TPE, every other trial an untried one-gene neighbour of a front plan, a repeated plan "
        "replaced by an untried one near it (it reached the exhaustive front fastest in bench/bench_front.py)",
    )
)
