"""The `identity` kind: the span is skipped outright (no parameters, no FLOPs, nothing to fit)."""

from __future__ import annotations

import numpy as np

from ._stats import PairStats
from ._translators import NoModule, Translator, register_translator


@register_translator("identity")
class IdentityTranslator(NoModule, Translator):
    """`y = x`: the span is skipped outright (no parameters, no FLOPs)."""

    needs_fit = False  # the compressed model builds it from the width alone; the bank fits nothing

    def fit(self, stats: PairStats) -> IdentityTranslator:
        """Check the widths match and record `weight_ = I`, `bias_ = 0` (for `predict` and `residual`)."""
        d_in, d_out = stats.sxy.shape
        if d_in != d_out:
            raise ValueError(f"identity needs equal widths, got {d_in} → {d_out}")
        self.weight_ = np.eye(d_in)
        self.bias_ = np.zeros(d_out)
        return self
