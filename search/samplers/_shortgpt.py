"""ShortGPT's rule: remove the blocks of least Block Influence, one more at each level, all at once.

Men et al., "ShortGPT: Layers in Large Language Models are More Redundant Than You Expect" (2024), Eq. 1: a block's
Block Influence is `BI_b = 1 - E_t cos(h_b[t], h_{b+1}[t])`, one minus the mean cosine similarity over tokens of its
input and output hidden states on calibration data. The blocks are ranked by BI once and the `k` of least influence
removed (dropped: `identity`), for `k = 1 … the space's limit`. The ranking reads only the calibration statistics
(`ActivationStats.token_cosine`), so choosing costs no evaluation; the study scores each level's plan.
"""

from __future__ import annotations

import numpy as np

from ._registry import SamplerContext
from ._rule import Rule, RuleSampler, max_removed, register_peer, removal_plan, token_cosine


def block_influence(cosine: np.ndarray) -> np.ndarray:
    """`BI_b = 1 - cos(h_b, h_{b+1})` for each block `b`, from the `(L+1, L+1)` mean token cosine matrix."""
    L = cosine.shape[0] - 1
    return np.array([1.0 - cosine[b, b + 1] for b in range(L)])


class ShortGPTSampler(RuleSampler):
    """The plans of least Block Influence, `k = 1 … max` blocks removed (see the module)."""

    name = "shortgpt"

    def __init__(self, ctx: SamplerContext) -> None:
        super().__init__(ctx)
        self.influence = block_influence(token_cosine(ctx, self.name))

    def rule(self) -> Rule:
        order = np.argsort(self.influence, kind="stable")  # ties: the earlier block first
        for k in range(1, max_removed(self.space) + 1):
            yield removal_plan(self.space, order[:k].tolist())


register_peer(
    name="shortgpt",
    build=ShortGPTSampler,
    help="ShortGPT (Men et al. 2024): drop the k blocks of least Block Influence, k = 1 … max; one plan per k, "
    "chosen from the calibration statistics alone",
    kinds=("identity",),
    planned=lambda ctx: max_removed(ctx.space),
)
