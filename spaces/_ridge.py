"""The `ridge` kind: least squares with an L2 penalty, alpha given or chosen by generalized cross-validation."""

from __future__ import annotations

import numpy as np

from ._stats import PairStats
from ._translators import Translator, register_translator


@register_translator("ridge")
class RidgeTranslator(Translator):
    """Least squares with an L2 penalty `alpha·||W||²` (bias unpenalized).

    `alpha=None` chooses it by generalized cross-validation over `alphas` (relative to the mean
    eigenvalue of the input scatter), from the same statistics.
    """

    def __init__(
        self, *, alpha: float | None = None, alphas: tuple[float, ...] = tuple(10.0 ** np.arange(-6, 2.5, 0.5))
    ) -> None:
        self.alpha = alpha
        self.alphas = alphas

    def fit(self, stats: PairStats) -> RidgeTranslator:
        """Solve `(Sxx + alpha I) W = Sxy` in the eigenbasis of `Sxx`; `alpha_` is the penalty used."""
        s, v = np.linalg.eigh(stats.sxx)
        s = np.clip(s, 0.0, None)
        p = v.T @ stats.sxy
        if self.alpha is not None:
            alpha = float(self.alpha)
        else:
            q = np.sum(p * p, axis=1)
            scale = max(s.mean(), 1e-300)
            grid = np.asarray(self.alphas) * scale
            n, tr_yy = stats.n, np.trace(stats.syy)
            best = None
            for a in grid:
                rss = tr_yy - np.sum(q * (2.0 / (s + a) - s / (s + a) ** 2))
                df = np.sum(s / (s + a)) + 1.0
                if df >= n:
                    continue
                gcv = n * max(rss, 0.0) / (n - df) ** 2
                if best is None or gcv < best[0]:
                    best = (gcv, a)
            alpha = float(best[1]) if best else float(grid[-1])
        self.alpha_ = alpha
        self.weight_ = v @ (p / (s + alpha)[:, None])
        self.bias_ = stats.mean_y - stats.mean_x @ self.weight_
        return self
