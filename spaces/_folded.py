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

from torch import nn

from ..errors import PlanError
from ._linear import LinearTranslator
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
                f"translator kind 'folded' needs a pre-norm block with an additive MLP branch "
                f"(ViT, DeiT, DINOv2, CLIP vision); {family.name} blocks are post-norm"
            )
        return None

    @classmethod
    def span_stats(cls, stats, span):
        if span.start < 0:
            raise PlanError(f"span {span}:{span.kind}: {NO_SOURCE_BLOCK}")
        return stats.branch_pair(span.start, span.target)

    def fold_into(self, block: Any, family: Any) -> nn.Module:
        """A copy of `block` with `A`, `b` multiplied into its MLP output projection (and layer scale)."""
        self._require_fitted()
        return family.fold_mlp_output(block, self.weight_, self.bias_)
