"""The `resmlp` kind (TOAST appendix A.1.2): LayerNorm, a SiLU feed-forward with dropout, a residual, LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from ._mlp import hidden_width
from ._trained import TrainedTranslator
from ._translators import TranslatorCost, register_translator


class ResMLP(nn.Module):
    """`z = LN₁(x)`, `y = LN₂(z + W₂·Dropout(SiLU(W₁ z)))`: TOAST's Res-MLP translator."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm_in(x)
        return self.norm_out(z + self.ff(z))


@register_translator("resmlp")
class ResMLPTranslator(TrainedTranslator):
    """TOAST's Res-MLP translator (`ResMLP`), trained with Adam on the streamed calibration activations.

    The paper (A.1.2) gives the layers but not the feed-forward width or the dropout rate: the width is the
    MLP's (half the target width), `dropout` defaults to 0.1 (off at inference). The other hyper-parameters
    are `TrainedTranslator`'s.
    """

    def __init__(self, *, dropout: float = 0.1, **training) -> None:
        super().__init__(**training)
        self.dropout = dropout

    def build(self, dim: int) -> nn.Module:
        return ResMLP(dim, hidden_width(dim), self.dropout)

    @classmethod
    def cost(cls, dim: int, tokens: int) -> TranslatorCost:
        """Two LayerNorms (fvcore: 5 FLOPs per element), two linear layers, the SiLU (1 per hidden element)
        and the residual addition (1 per element); dropout is free at inference."""
        h = hidden_width(dim)
        return TranslatorCost(flops=tokens * (2 * dim * h + h + 11 * dim), params=2 * dim * h + h + dim + 4 * dim)
