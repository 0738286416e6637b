"""Translator kinds: closed-form estimators that stand in for a span of blocks.

Each kind is an estimator (`fit(stats) -> self`, learned `weight_` and `bias_`, `y = x @ weight_ + bias_`)
registered under its name, and turns into a plain `nn.Module` for the compressed model.
"""

from __future__ import annotations

import logging
from typing import Callable, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from ._errors import NotFittedError, PlanError
from ._stats import PairStats

log = logging.getLogger("toast")
_reported: set[str] = set()
_REGISTRY: dict[str, type["Translator"]] = {}
T = TypeVar("T", bound=type["Translator"])


def report_once(key: str, message: str) -> None:
    """Say an expected condition once per process, as one plain line: logger ``"toast"``, level WARNING.

    Not a Python warning (no source lines). With logging left unconfigured, Python's last-resort
    handler writes the bare message to stderr; an application that configures logging routes it.
    """
    if key not in _reported:
        _reported.add(key)
        log.warning(message)


ILL_CONDITIONED = ("linear translator: a source state's covariance is singular or ill-conditioned (expected after a LayerNorm, "
                   "which removes one direction); using the minimum-norm least-squares solution")


def register_translator(name: str) -> Callable[[T], T]:
    """Class decorator: make a translator kind available under `name`."""

    def wrap(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"translator kind {name!r} is already registered")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_translators() -> list[str]:
    """Names of the registered translator kinds."""
    return sorted(_REGISTRY)


def create_translator(kind: str, **params) -> "Translator":
    """A new, unfitted translator of `kind`."""
    try:
        cls = _REGISTRY[kind]
    except KeyError:
        raise PlanError(f"unknown translator kind {kind!r} (known: {', '.join(list_translators())})") from None
    return cls(**params)


class Translator:
    """Base class: an affine map fitted in closed form from `PairStats`."""

    kind: ClassVar[str] = ""
    weight_: np.ndarray
    bias_: np.ndarray

    def fit(self, stats: PairStats) -> "Translator":
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "weight_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(stats) first")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Apply the map to rows of `x` (float64)."""
        self._require_fitted()
        return np.asarray(x, dtype=np.float64) @ self.weight_ + self.bias_

    def residual(self, stats: PairStats) -> float:
        """Mean squared error per token and feature on the statistics' own samples."""
        self._require_fitted()
        w, b = self.weight_, self.bias_
        # Σ||y - xW - b||² with centered terms: tr(Syy) - 2tr(WᵀSxy) + tr(WᵀSxxW) + n||ȳ - x̄W - b||²
        offset = stats.mean_y - stats.mean_x @ w - b
        sse = np.trace(stats.syy) - 2 * np.sum(w * stats.sxy) + np.sum(w * (stats.sxx @ w)) + stats.n * offset @ offset
        return float(max(sse, 0.0) / (stats.n * len(b)))

    def to_module(self) -> nn.Module:
        """The fitted map as a float32 `nn.Module` (move it with `.to(device, dtype)`)."""
        self._require_fitted()
        return affine_module(self.weight_, self.bias_)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


def affine_module(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    """`nn.Linear` computing `x @ weight + bias`."""
    d_in, d_out = weight.shape
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer


def translator_module(kind: str, dim: int) -> nn.Module:
    """An empty module of the right shape for `kind`, to load saved weights into."""
    return nn.Identity() if kind == "identity" else nn.Linear(dim, dim)


@register_translator("identity")
class IdentityTranslator(Translator):
    """`y = x`: the span is skipped outright (no parameters, no FLOPs)."""

    def fit(self, stats: PairStats) -> "IdentityTranslator":
        d_in, d_out = stats.sxy.shape
        if d_in != d_out:
            raise ValueError(f"identity needs equal widths, got {d_in} → {d_out}")
        self.weight_ = np.eye(d_in)
        self.bias_ = np.zeros(d_out)
        return self

    def to_module(self) -> nn.Module:
        self._require_fitted()
        return nn.Identity()


PINV_RTOL = 1e-6  # relative eigenvalue cutoff of the fallback: about float32 resolution


def _solve_spd(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, str]:
    """Solve `a x = b` for symmetric PSD `a` in float64: Cholesky, or a pseudo-inverse if ill-conditioned."""
    at, bt = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
    chol, info = torch.linalg.cholesky_ex(at)
    # rounding can let a singular matrix through Cholesky with a negligible pivot: treat that as singular
    pivot_ok = float(torch.diagonal(chol).square().min()) > float(at.diagonal().max()) * a.shape[0] * torch.finfo(torch.float64).eps
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

    def fit(self, stats: PairStats) -> "LinearTranslator":
        self.weight_, self.solver_ = _solve_spd(stats.sxx, stats.sxy)
        self.ill_conditioned_ = self.solver_ == "pinv"
        if self.ill_conditioned_:
            report_once("ill-conditioned", ILL_CONDITIONED)
        self.bias_ = stats.mean_y - stats.mean_x @ self.weight_
        return self


@register_translator("ridge")
class RidgeTranslator(Translator):
    """Least squares with an L2 penalty `alpha·||W||²` (bias unpenalized).

    `alpha=None` chooses it by generalized cross-validation over `alphas` (relative to the mean
    eigenvalue of the input scatter), from the same statistics.
    """

    def __init__(self, *, alpha: float | None = None, alphas: tuple[float, ...] = tuple(10.0 ** np.arange(-6, 2.5, 0.5))) -> None:
        self.alpha = alpha
        self.alphas = alphas

    def fit(self, stats: PairStats) -> "RidgeTranslator":
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


def fit_span(stats, span, **params) -> Translator:
    """Fit a translator of `span.kind` for `span` from `ActivationStats` (no activation is re-read)."""
    return create_translator(span.kind, **params).fit(stats.pair(span.source, span.target))
