"""EvoPress's rule for depth: at each number of removed blocks, a (1 + λ) evolutionary search over which blocks.

Sieberling et al., "EvoPress: Accurate Dynamic Model Compression via Evolutionary Search" (ICML 2025), Algorithm 1,
for block dropping: a parent (a set of `k` removed blocks, the first one drawn at random) makes `λ` offspring by
level-switch mutation (one removed block swapped for a kept one, so every offspring removes exactly `k`); the
fittest offspring replaces the parent when it is at least as fit (elitism: the parent survives otherwise); fitness is
the KL divergence to the original model where the run scores it (`kl`), else the run's first objective. One search
per level `k = 1 … the space's limit`, each with an equal share of the trials, so the levels' winners make a front.

Deviation: EvoPress selects in several steps, scoring all offspring on a few calibration tokens and only the best
few on more. Here each offspring is a trial of the study, scored on the study's samples; with `--fidelity-fraction`
the study's own two stages play that part (an offspring stops at the subset when a fully scored plan dominates it
with confidence). Blocks are dropped (`identity`). Options (`SamplerContext.options`): `offspring` (λ, default 8) and
`generations` per level (default: as many as the level's share of `--trials` pays for).
"""

from __future__ import annotations

import math

from ._registry import SamplerContext
from ._rule import Rule, RuleSampler, max_removed, register_peer, removal_plan

OFFSPRING = 8


def schedule(ctx: SamplerContext) -> tuple[int, int]:
    """`(offspring, generations)` per level: the options', else λ = 8 and the generations a level's share of the
    trials pays for (one trial for the first parent, λ per generation), at least one."""
    offspring = int(ctx.options.get("offspring", OFFSPRING))
    generations = ctx.options.get("generations")
    if generations is None:
        share = ctx.trials // max(1, max_removed(ctx.space))
        generations = max(1, (share - 1) // offspring)
    return offspring, int(generations)


class EvoPressSampler(RuleSampler):
    """(1 + λ) search with level-switch mutation at each removal level (see the module)."""

    name = "evopress"

    def __init__(self, ctx: SamplerContext) -> None:
        super().__init__(ctx)
        self.offspring, self.generations = schedule(ctx)
        names = [o.name for o in ctx.objectives]
        self._fitness_index = names.index("kl") if "kl" in names else 0

    @property
    def fitness_index(self) -> int:
        return self._fitness_index

    def rule(self) -> Rule:
        L = self.space.num_blocks
        for k in range(1, max_removed(self.space) + 1):
            parent = sorted(self.rng.choice(L, size=k, replace=False).tolist())
            parent_fitness = yield removal_plan(self.space, parent)
            for _ in range(self.generations):
                best, best_fitness = None, math.inf
                for _ in range(self.offspring):
                    child = self.mutate(parent)
                    fitness = yield removal_plan(self.space, child)
                    if fitness is not None and fitness < best_fitness:
                        best, best_fitness = child, fitness
                if best is not None and (parent_fitness is None or best_fitness <= parent_fitness):
                    parent, parent_fitness = best, best_fitness

    def mutate(self, removed: list[int]) -> list[int]:
        """Level switch: one removed block, drawn at random, swapped for a kept one (the same number removed)."""
        kept = [b for b in range(self.space.num_blocks) if b not in removed]
        if not kept:
            return list(removed)
        out = list(removed)
        out[self.rng.integers(len(out))] = int(kept[self.rng.integers(len(kept))])
        return sorted(out)


def planned(ctx: SamplerContext) -> int:
    offspring, generations = schedule(ctx)
    return max_removed(ctx.space) * (1 + generations * offspring)


register_peer(
    name="evopress",
    build=EvoPressSampler,
    help="EvoPress (Sieberling et al. 2025): at each number of removed blocks, a (1 + 8) evolutionary search "
    "swapping one removed block for a kept one, fitness the run's KL (else its first objective); the trials are "
    "shared equally among the levels",
    sequential=True,
    kinds=("identity",),
    planned=planned,
)
