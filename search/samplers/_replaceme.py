"""ReplaceMe's rule: for each window length, the window whose input and output are closest, replaced by a linear map.

Shopkhoev et al., "ReplaceMe: Network Simplification via Depth Pruning and Transformation Replacement" (2025):
for a number `n` of blocks to remove, the `n` consecutive blocks `i … i+n-1` with the smallest cosine distance
between the window's input and output hidden states, `1 - E_t cos(h_i[t], h_{i+n}[t])` on calibration data, are
removed and replaced by one linear transform estimated on the same data, which the paper multiplies into block
`i-1`'s MLP output projection (our `folded`, fitted by least squares: the paper's closed-form variant). Here each
window length `n = 1 … the space's limit` yields the window with a `linear` map on the residual stream and, where the
space holds `folded` (and the window has a kept block before it), the folded one too. Choosing reads only the
calibration statistics (`ActivationStats.token_cosine`): no evaluation; the study scores each plan.
"""

from __future__ import annotations

import numpy as np

from toast.errors import PlanError
from toast.spaces import Plan, PlanSpace

from ._registry import SamplerContext
from ._rule import Rule, RuleSampler, max_removed, register_peer, removal_plan, token_cosine

KINDS = ("linear", "folded")


def best_window(cosine: np.ndarray, n: int, starts) -> int | None:
    """The first block `i` among `starts` of the `n`-block window of least cosine distance `1 - cos(h_i, h_{i+n})`."""
    found = [(1.0 - cosine[i, i + n], i) for i in starts]
    return min(found)[1] if found else None


class ReplaceMeSampler(RuleSampler):
    """One window per length and kind (see the module)."""

    name = "replaceme"

    def __init__(self, ctx: SamplerContext) -> None:
        super().__init__(ctx)
        self.cosine = token_cosine(ctx, self.name)

    def rule(self) -> Rule:
        L = self.space.num_blocks
        kinds = [k for k in KINDS if k in self.space.kinds]
        for n in range(1, max_removed(self.space) + 1):
            for kind in kinds:
                windows = {i: window(self.space, i, n, kind) for i in range(L - n + 1)}
                i = best_window(self.cosine, n, [i for i, plan in windows.items() if plan is not None])
                if i is not None:
                    yield windows[i]


def window(space: PlanSpace, first: int, n: int, kind: str) -> Plan | None:
    """The plan replacing blocks `first … first+n-1` by one `kind` span, or None where the space cannot hold it
    (a folded span at block 0 has no block to fold into)."""
    try:
        plan = removal_plan(space, range(first, first + n), kind)
    except PlanError:
        return None
    return plan if space.contains(plan) else None


def planned(ctx: SamplerContext) -> int:
    return max_removed(ctx.space) * sum(k in ctx.space.kinds for k in KINDS)


register_peer(
    name="replaceme",
    build=ReplaceMeSampler,
    help="ReplaceMe (Shopkhoev et al. 2025): for each window length, the consecutive blocks whose input and "
    "output are closest (cosine), replaced by a linear map (and folded where the space holds it); chosen from "
    "the calibration statistics alone",
    kinds=KINDS,
    planned=planned,
)
