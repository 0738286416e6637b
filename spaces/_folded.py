"""The `folded` kind: an affine map on block s's MLP branch, multiplied into its output projection.

For a pre-norm block s (ViT, DeiT, DINOv2, CLIP vision), `h_{s+1} = r + m` with `r` the residual stream
after attention and `m` the MLP branch's output (after DINOv2's layer scale). The span `s→e` is fitted as
`r + m A + b ≈ h_{e+1}`: least squares of `h_{e+1} - r` on `m`, in closed form from the statistics the
capture pass keeps of `(m_s, h_t)` (`ActivationStats.branch_pair`). The map is then folded into the block:
`W_out' = W_out·γ·A`, `b_out' = b_out·γ·A + b` (γ set to 1), so the compressed model has the original
architecture with blocks s+1 … e removed and no extra module: free in the cost table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from ..errors import PlanError
from ._linear import LinearTranslator, _solve_spd
from ._translators import NoModule, register_translator

NO_SOURCE_BLOCK = "a folded span needs a kept source block s to fold into: s = -1 (the embeddings) has none"


@register_translator("folded")
class FoldedTranslator(NoModule, LinearTranslator):
    """Least squares `m_s A + b ≈ h_{e+1} - r_s` on block s's MLP branch output, folded into that block.

    `fit(stats)` reads the `PairStats` of `(m_s, h_{e+1} - r_s)` (`SpanData.branch_stats`, or
    `ActivationStats.branch_pair(s, e + 1)`); `predict(m)` is `m A + b`. Its module in the plan is
    `nn.Identity` (the folded block already computes the span's target), so it costs nothing.
    """

    needs_branches = True  # the capture gathers the MLP-branch statistics only for a run that may use this kind
    needs_source_block = True  # the space never puts it at block 0 nor right after another span

    def fit(self, stats) -> FoldedTranslator:
        """`m A + b`, least squares (`LinearTranslator.fit`), and beside it the map without a bias, `m A0` (least
        squares through the origin: `ReplaceMe`'s form), for a block whose output projection cannot take a bias."""
        super().fit(stats)
        n = float(stats.n)
        gram = stats.sxx + n * np.outer(stats.mean_x, stats.mean_x)  # Σ m mᵀ, uncentered
        cross = stats.sxy + n * np.outer(stats.mean_x, stats.mean_y)
        self.weight_no_bias_, _ = _solve_spd(gram, cross)
        return self

    def fit_span(self, data) -> FoldedTranslator:
        """Fit from the MLP-branch statistics of the span (`data.branch_stats`)."""
        return self.fit(data.branch_stats)

    @classmethod
    def refuse_span(cls, span, plan=None) -> str | None:
        if span.start < 0:
            return f"span {span}:{span.kind}: {NO_SOURCE_BLOCK}"
        if plan is not None and span.start not in plan.kept:
            return (
                f"span {span}:{span.kind}: a folded span folds into its source block {span.start}, "
                "which another span removes (a folded span must follow a kept block)"
            )
        return None

    @classmethod
    def refuse_family(cls, family: Any, block: Any) -> str | None:
        if family.mlp_branch(block) is None:
            return (
                f"translator kind 'folded' needs a block whose MLP branch is added to the residual stream as it is "
                f"(`h + mlp(norm(h))`: ViT, DeiT, DINOv2, CLIP vision, Llama, Mistral, Qwen, Phi-3, GPT-2); "
                f"{family.name} blocks norm the branch after the MLP or the sum (post-norm)"
            )
        return None

    @classmethod
    def span_stats(cls, stats, span):
        if span.start < 0:
            raise PlanError(f"span {span}:{span.kind}: {NO_SOURCE_BLOCK}")
        return stats.branch_pair(span.start, span.target)

    def fold_into(self, block: Any, family: Any) -> nn.Module:
        """A copy of `block` with `A`, `b` multiplied into its MLP output projection (and layer scale); where the
        family's checkpoint class cannot give that projection a bias (`Family.mlp_output_bias`: Qwen, Mistral, Gemma,
        Phi-3), the map without a bias, `A0`, so the compressed model is still a checkpoint of its class."""
        self._require_fitted()
        if family.mlp_output_bias(block) or not hasattr(self, "weight_no_bias_"):
            return family.fold_mlp_output(block, self.weight_, self.bias_)
        return family.fold_mlp_output(block, self.weight_no_bias_, None)
