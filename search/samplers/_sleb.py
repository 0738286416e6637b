"""SLEB's rule: remove one block at a time, the one whose removal costs least, scored on the model pruned so far.

Song et al., "SLEB: Streamlining LLMs through Redundancy Verification and Elimination of Transformer Blocks" (ICML
2024), Algorithm 1: starting from the whole model, every remaining block is tried removed from the model pruned so
far, each candidate scored, and the block whose removal gives the best score is eliminated; repeated until `k`
blocks are gone. The paper scores a candidate by perplexity on calibration text; here each candidate is a trial of
the study, scored on the run's first objective (perplexity for an LM, accuracy for an encoder) with the study's own
samples. Level `k` costs `L - k + 1` evaluations, so `k` levels cost about `k·L`. Blocks are dropped (`identity`).
"""

from __future__ import annotations

import math

from ._registry import SamplerContext
from ._rule import Rule, RuleSampler, max_removed, register_peer, removal_plan


class SLEBSampler(RuleSampler):
    """Greedy block elimination, one trial per candidate (see the module)."""

    name = "sleb"

    def rule(self) -> Rule:
        removed: list[int] = []
        for _ in range(max_removed(self.space)):
            best, best_fitness = None, math.inf
            for b in range(self.space.num_blocks):
                if b in removed:
                    continue
                plan = removal_plan(self.space, [*removed, b])
                if not self.space.contains(plan):
                    continue
                fitness = yield plan
                if fitness is not None and (best is None or fitness < best_fitness):
                    best, best_fitness = b, fitness
            if best is None:
                return
            removed.append(best)


def planned(ctx: SamplerContext) -> int:
    L = ctx.space.num_blocks
    return sum(L - k + 1 for k in range(1, max_removed(ctx.space) + 1))


register_peer(
    name="sleb",
    build=SLEBSampler,
    help="SLEB (Song et al. 2024): remove blocks one at a time, each time the one whose removal scores best on "
    "the run's first objective, re-scored on the model pruned so far (about k·L trials for k blocks)",
    sequential=True,
    kinds=("identity",),
    planned=planned,
)
