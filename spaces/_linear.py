"""The `linear` kind: least squares with bias from the Gram statistics (TOAST), and its SPD solver."""

from __future__ import annotations

import numpy as np
import torch

from ._stats import PairStats
from ._translators import Translator, register_translator, report_once

ILL_CONDITIONED = (
    "linear translator: a source state's covariance is singular or ill-conditioned (expected after a LayerNorm, "
    "which removes one direction); using the minimum-norm least-squares solution"
)
PINV_RTOL = 1e-6  # relative eigenvalue cutoff of the fallback: about float32 resolution


def _solve_spd(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str]:
    """Solve `a x = b` for symmetric PSD `a` in float64: Cholesky, or a pseudo-inverse if ill-conditioned."""
    at, bt = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
    chol, info = torch.linalg.cholesky_ex(at)
    # rounding can let a singular matrix through Cholesky with a negligible pivot (a LayerNorm's null direction
    # comes out ~1e-13 relative, not 0): below the pseudo-inverse's own cutoff, treat it as singular
    pivot_ok = float(torch.diagonal(chol).square().min()) > float(at.diagonal().max()) * max(
        a.shape[0] * torch.finfo(torch.float64).eps, PINV_RTOL
    )
    if int(info) == 0 and pivot_ok:
        x = torch.cholesky_solve(bt, chol)
        err = torch.linalg.matrix_norm(at @ x - bt) / max(float(torch.linalg.matrix_norm(bt)), 1e-300)
        if float(err) < 1e-8:
            return x.numpy(), "cholesky"
    s, v = torch.linalg.eigh(at)
    # Statistics are sums of float32 products: directions below ~float32 resolution are noise.
    cutoff = s.max().clamp_min(0) * max(a.shape[0] * torch.finfo(torch.float64).eps, PINV_RTOL)
    inv = torch.where(s > cutoff, 1.0 / s, torch.zeros_like(s))
    return ((v * inv) @ (v.T @ bt)).numpy(), "pinv"


@register_translator("linear")
class LinearTranslator(Translator):
    """Least squares with bias, one map shared by all tokens (TOAST), solved from the Gram statistics.

    A singular or ill-conditioned input scatter (as after a LayerNorm) is solved by the minimum-norm
    pseudo-inverse: `solver_ == "pinv"` and `ill_conditioned_` is True, and the first such fit of the
    process says so in one line (`report_once`); no Python warning.
    """

    def fit(self, stats: PairStats) -> LinearTranslator:
        """Solve `Sxx W = Sxy` (Cholesky, or the minimum-norm pseudo-inverse); the bias matches the means."""
        self.weight_, self.solver_ = _solve_spd(stats.sxx, stats.sxy)
        self.ill_conditioned_ = self.solver_ == "pinv"
        if self.ill_conditioned_:
            report_once("ill-conditioned", ILL_CONDITIONED)
        self.bias_ = stats.mean_y - stats.mean_x @ self.weight_
        return self
