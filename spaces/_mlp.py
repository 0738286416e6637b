"""The `mlp` kind (TOAST appendix A.1.2): Linear d→d/2, GELU, Linear d/2→d, trained with Adam on the activations."""

from __future__ import annotations

from torch import nn

from ._trained import TrainedTranslator
from ._translators import TranslatorCost, register_translator


def hidden_width(dim: int) -> int:
    """Half the target width (at least 1), as the paper's MLP."""
    return max(dim // 2, 1)


@register_translator("mlp")
class MLPTranslator(TrainedTranslator):
    """TOAST's MLP translator: `Linear(d, d/2) → GELU → Linear(d/2, d)`, one map shared by all tokens.

    Trained with Adam on the streamed calibration activations (`TrainedTranslator`), not in closed form.
    """

    def build(self, dim: int) -> nn.Module:
        h = hidden_width(dim)
        return nn.Sequential(nn.Linear(dim, h), nn.GELU(), nn.Linear(h, dim))

    @classmethod
    def cost(cls, dim: int, tokens: int) -> TranslatorCost:
        """Two linear layers (one FLOP per multiply-add) and the GELU (one FLOP per element)."""
        h = hidden_width(dim)
        return TranslatorCost(flops=tokens * (2 * dim * h + h), params=2 * dim * h + h + dim)
