"""Optuna's own samplers, as the study uses them: multivariate TPE, NSGA-II, random, and exhaustive enumeration."""

from __future__ import annotations

import optuna

from ._registry import Sampler, SamplerContext, register_sampler


def _tpe(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=ctx.seed, multivariate=True)


def _nsga2(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=ctx.seed, population_size=min(50, max(8, ctx.trials // 4)))


def _random(ctx: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=ctx.seed)


register_sampler(Sampler(name="tpe", build=_tpe, help="multivariate TPE alone"))
register_sampler(Sampler(name="nsga2", build=_nsga2, help="NSGA-II, population a quarter of the trials (8 … 50)"))
register_sampler(Sampler(name="random", build=_random, help="uniform random plans"))
register_sampler(
    Sampler(
        name="exhaustive",
        build=_random,  # never asked: every trial is an enqueued plan
        help="every plan of a small space, enqueued",
        seeded=False,
        enumerates=True,
    )
)
