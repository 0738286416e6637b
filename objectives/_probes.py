"""Linear probes on pooled features: the `accuracy` objective, model-agnostic.

Features are `(n, d)` numpy arrays or torch tensors, labels any integers (mapped to classes internally;
a test label never seen in training simply counts as wrong). Two probes share one estimator API
(`fit(X, y) -> self`, `predict`, `decision_function`, `score` in %):

- `RidgeProbe`: closed-form ridge classifier in float64, the fast default for search;
- `AdamProbe`: the papers' protocol, an `nn.Linear` trained with Adam and cross-entropy.

`probe_accuracy` runs one of them over seeds and returns mean ± std.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from toast.errors import NotFittedError

from ._objectives import ObjectiveError

__all__ = ["DEFAULT_ALPHAS", "PROBES", "AdamProbe", "ProbeResult", "RidgeProbe", "probe_accuracy"]

ArrayLike = np.ndarray | torch.Tensor | Sequence

#: The ridge penalties tried when `RidgeProbe(alpha=None)`: 10^-2 … 10^5 in half decades, on
#: standardized features (the mean eigenvalue of XᵀX is then n, so this spans α/n ≈ 1e-6 … 1e2 at n = 5,000).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(-2.0, 5.01, 0.5))


# ---------------------------------------------------------------- input checks


def as_matrix(x: ArrayLike, name: str) -> torch.Tensor:
    """`x` as a finite float64 `(n, d)` tensor, kept on its device (a copy when the dtype changes)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to(torch.float64)
    else:
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise ObjectiveError(f"{name} must hold numbers, got dtype {array.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ObjectiveError(f"{name} must be a non-empty (n, d) matrix of features, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ObjectiveError(f"{name} holds NaN or infinite values")
    return t


def as_labels(y: ArrayLike, n: int, name: str) -> np.ndarray:
    """`y` as a 1-D int64 array of length `n`; integral floats are accepted."""
    array = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if array.ndim != 1 or len(array) != n:
        raise ObjectiveError(f"{name} must be 1-D with one label per sample ({n}), got shape {array.shape}")
    if array.dtype.kind in "biu":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise ObjectiveError(f"{name} must be integer class labels, got dtype {array.dtype}")


# ---------------------------------------------------------------- shared estimator base


class _Probe:
    """Estimator plumbing shared by the probes: label mapping, fitted checks, scoring."""

    name: ClassVar[str] = ""
    classes_: np.ndarray
    coef_: torch.Tensor  # (k, d), on the probe's own feature scale
    intercept_: torch.Tensor  # (k,)

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments (scikit-learn's convention)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "coef_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")

    @staticmethod
    def _encode(X: torch.Tensor, y: ArrayLike) -> tuple[np.ndarray, torch.Tensor]:
        """Sorted classes and each sample's class index (on the features' device)."""
        labels = as_labels(y, X.shape[0], "y")
        classes, index = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ObjectiveError(f"a probe needs at least two classes in the training labels, got {len(classes)}")
        return classes, torch.from_numpy(index.reshape(-1)).to(X.device)

    def _scores(self, X: torch.Tensor) -> torch.Tensor:
        """Decision values `(n, k)` in float64; `X` already checked."""
        raise NotImplementedError

    def _checked(self, X: ArrayLike) -> torch.Tensor:
        self._require_fitted()
        t = as_matrix(X, "X")
        d = self.coef_.shape[1]
        if t.shape[1] != d:
            raise ObjectiveError(f"X has {t.shape[1]} features, but the probe was fitted on {d}")
        return t

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """One score per class, `(n, k)`, columns in the order of `classes_`."""
        return self._scores(self._checked(X)).cpu().numpy()

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The predicted label of each row (values from `classes_`)."""
        index = self._scores(self._checked(X)).argmax(dim=1).cpu().numpy()
        return self.classes_[index]

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Top-1 accuracy in percent; a label not seen in training counts as wrong."""
        predictions = self.predict(X)
        labels = as_labels(y, len(predictions), "y")
        return float(100.0 * np.mean(predictions == labels))


def _positive(value: Any) -> bool:
    """A finite real number > 0 (numpy scalars included, booleans not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _integer(value: Any) -> bool:
    """An integer (numpy integers included, booleans not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _standardize(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Train mean and scale (population std; 1 for a constant feature, as scikit-learn's StandardScaler)."""
    mean = X.mean(dim=0)
    std = X.std(dim=0, correction=0)
    constant = std <= 1e-12 * torch.clamp(mean.abs(), min=1.0)
    return mean, torch.where(constant, torch.ones_like(std), std)


# ---------------------------------------------------------------- ridge


class RidgeProbe(_Probe):
    """Closed-form ridge classifier on standardized features, in float64 (`torch.linalg`).

    The formulation of scikit-learn's `RidgeClassifier` on `StandardScaler`-ed features: one-vs-all
    targets ±1, an unpenalized intercept, `coef_ = (XsᵀXs + αI)⁻¹ Xsᵀ(Y - Ȳ)` with `Xs` the
    standardized training features. Solved by Cholesky on the smaller of the `d × d` covariance and the
    `n × n` Gram matrix.

    `alpha=None` chooses α from `alphas` (default `DEFAULT_ALPHAS`) by generalized cross-validation
    (GCV; Golub, Heath & Wahba 1979), the rotation-invariant form of leave-one-out:
    `GCV(α) = mean((Y - Ŷ)²) / (1 - (1 + df(α))/n)²`, `df = Σ sᵢ/(sᵢ+α)` (the `+1` is the intercept).
    One eigendecomposition of the same matrix gives the residual and `df` of every α in O(rank), so the
    search costs about one fit; exact leave-one-out (scikit-learn's `RidgeClassifierCV`) would cost an
    `n × rank × k` product per α. Ties go to the first α of the grid. The standardization is
    not redone per held-out sample (as in `RidgeClassifierCV`). Learned: `classes_`, `coef_ (k, d)` and
    `intercept_ (k,)` for the standardized features, `mean_`, `scale_`, `alpha_`, and `cv_errors_`
    (one per α in the grid) when α was chosen.
    """

    name = "ridge"

    def __init__(self, *, alpha: float | None = None, alphas: Sequence[float] | None = None) -> None:
        self.alpha = alpha
        self.alphas = alphas

    def _check_params(self) -> tuple[float, ...]:
        problems = []
        grid = tuple(DEFAULT_ALPHAS if self.alphas is None else self.alphas)
        if self.alpha is not None:
            if self.alphas is not None:
                problems.append("give alpha (fixed) or alphas (a grid to choose from), not both")
            if not _positive(self.alpha):
                problems.append(f"alpha must be finite and > 0, got {self.alpha!r}")
        if not grid or not all(_positive(a) for a in grid):
            problems.append(f"alphas must be finite and > 0, got {list(grid) or 'none'}")
        if problems:
            raise ObjectiveError("invalid RidgeProbe settings: " + "; ".join(problems))
        return (float(self.alpha),) if self.alpha is not None else tuple(float(a) for a in grid)

    def fit(self, X: ArrayLike, y: ArrayLike) -> RidgeProbe:
        alphas = self._check_params()
        X = as_matrix(X, "X")
        classes, index = self._encode(X, y)
        n, d = X.shape
        mean, scale = _standardize(X)
        Xs = (X - mean) / scale
        Y = -torch.ones(n, len(classes), dtype=torch.float64, device=X.device)
        Y[torch.arange(n, device=X.device), index] = 1.0
        y_mean = Y.mean(dim=0)
        Yc = Y - y_mean
        primal = n >= d  # work with the d × d covariance, else the n × n Gram matrix

        if self.alpha is not None:
            alpha = alphas[0]
            cv_errors = None
            A = Xs.T @ Xs if primal else Xs @ Xs.T
            A.diagonal().add_(alpha)
            L, info = torch.linalg.cholesky_ex(A)
            if int(info) == 0:
                rhs = Xs.T @ Yc if primal else Yc
                solved = torch.cholesky_solve(rhs, L)
                W = solved if primal else Xs.T @ solved
            else:  # numerically not positive definite: fall back to the eigendecomposition
                W = self._eigen_solve(Xs, Yc, alpha, primal)
        else:
            alpha, cv_errors, W = self._gcv_fit(Xs, Yc, alphas, primal)

        self.mean_, self.scale_ = mean, scale
        self.classes_ = classes
        self.alpha_ = alpha
        if cv_errors is not None:
            self.cv_errors_ = cv_errors
        self.coef_ = W.T.contiguous()
        self.intercept_ = y_mean - Xs.mean(dim=0) @ W
        return self

    @staticmethod
    def _eigen(Xs: torch.Tensor, Yc: torch.Tensor, primal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(s, V, Z)`: eigenvalues and eigenvectors of `XsᵀXs` (primal) or `XsXsᵀ` (dual), and the targets
        in that basis, `Z = Vᵀ(XsᵀYc)` (primal) or `Z = VᵀYc` (dual)."""
        s, V = torch.linalg.eigh(Xs.T @ Xs if primal else Xs @ Xs.T)
        Z = V.T @ (Xs.T @ Yc) if primal else V.T @ Yc
        return s.clamp(min=0.0), V, Z

    @staticmethod
    def _weights(
        Xs: torch.Tensor, s: torch.Tensor, V: torch.Tensor, Z: torch.Tensor, alpha: float, primal: bool
    ) -> torch.Tensor:
        """`(XsᵀXs + αI)⁻¹XsᵀYc` from the eigendecomposition; `(d, k)`."""
        scaled = Z / (s + alpha)[:, None]
        return V @ scaled if primal else Xs.T @ (V @ scaled)

    @classmethod
    def _eigen_solve(cls, Xs: torch.Tensor, Yc: torch.Tensor, alpha: float, primal: bool) -> torch.Tensor:
        s, V, Z = cls._eigen(Xs, Yc, primal)
        return cls._weights(Xs, s, V, Z, alpha, primal)

    @classmethod
    def _gcv_fit(
        cls, Xs: torch.Tensor, Yc: torch.Tensor, alphas: tuple[float, ...], primal: bool
    ) -> tuple[float, tuple[float, ...], torch.Tensor]:
        """The α of least GCV, every α's GCV, and the weights for it; O(rank) per α after one eigh."""
        n, k = Yc.shape
        s, V, Z = cls._eigen(Xs, Yc, primal)
        energy = (Z * Z).sum(dim=1)  # ‖Zᵢ‖² per eigenvector
        total = float((Yc * Yc).sum())
        errors = []
        for alpha in alphas:
            if primal:  # fitted = XsV diag(1/(s+α)) Z, and ‖XsVᵢ‖² = sᵢ
                explained = energy * (s + 2 * alpha) / (s + alpha) ** 2
                dof = s / (s + alpha)
            else:  # fitted = V diag(ρ) Z with ρ = s/(s+α), V orthonormal
                rho = s / (s + alpha)
                explained = energy * rho * (2 - rho)
                dof = rho
            rss = max(total - float(explained.sum()), 0.0)
            free = 1.0 - (1.0 + float(dof.sum())) / n  # the intercept is one more degree of freedom
            errors.append(rss / (n * k) / free**2 if free > 1e-12 else math.inf)
        best = int(np.argmin(errors))  # the first minimum on ties
        alpha = alphas[best]
        return alpha, tuple(errors), cls._weights(Xs, s, V, Z, alpha, primal)

    def _scores(self, X: torch.Tensor) -> torch.Tensor:
        X = X.to(self.coef_.device)
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_


# ---------------------------------------------------------------- adam (the papers' protocol)


class AdamProbe(_Probe):
    """The papers' probe: `nn.Linear(d, k)` trained with Adam and cross-entropy on the features.

    Defaults are the protocol (lr 1e-3, 5 epochs, batch 256; raw features, `standardize=False`).
    Deterministic given `seed`: the initialization (PyTorch's default `nn.Linear` bounds ±1/√d) and
    the per-epoch shuffles come from a private generator, and the global RNG is left untouched. On
    CUDA, results are reproducible up to the usual nondeterminism of GPU kernels. Trains in float32 on
    `device`; `coef_ (k, d)` and `intercept_ (k,)` are stored in float64 for the (standardized, when
    asked) features.
    """

    name = "adam"

    def __init__(
        self,
        *,
        lr: float = 1e-3,
        epochs: int = 5,
        batch_size: int = 256,
        seed: int = 0,
        device: str | torch.device = "cpu",
        standardize: bool = False,
    ) -> None:
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.standardize = standardize

    def _check_params(self) -> torch.device:
        problems = []
        if not _positive(self.lr):
            problems.append(f"lr must be > 0, got {self.lr!r}")
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not (_integer(value) and value >= 1):
                problems.append(f"{key} must be an integer >= 1, got {value!r}")
        if not _integer(self.seed):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            problems.append(f"device {self.device!r} is not a torch device")
            device = torch.device("cpu")
        if problems:
            raise ObjectiveError("invalid AdamProbe settings: " + "; ".join(problems))
        return device

    def fit(self, X: ArrayLike, y: ArrayLike) -> AdamProbe:
        device = self._check_params()
        X = as_matrix(X, "X")
        classes, index = self._encode(X, y)
        n, d = X.shape
        k = len(classes)
        if self.standardize:
            mean, scale = _standardize(X)
        else:
            mean = torch.zeros(d, dtype=torch.float64, device=X.device)
            scale = torch.ones(d, dtype=torch.float64, device=X.device)
        features = ((X - mean) / scale).to(device=device, dtype=torch.float32)
        targets = index.to(device)

        generator = torch.Generator().manual_seed(int(self.seed))
        bound = 1.0 / math.sqrt(d)
        layer = nn.utils.skip_init(nn.Linear, d, k, device=device)  # no draw from the global RNG
        with torch.no_grad():
            layer.weight.copy_((torch.rand(k, d, generator=generator) * 2 - 1) * bound)
            layer.bias.copy_((torch.rand(k, generator=generator) * 2 - 1) * bound)
        optimizer = torch.optim.Adam(layer.parameters(), lr=self.lr)
        loss_fn = nn.CrossEntropyLoss()
        with torch.enable_grad():
            for _ in range(int(self.epochs)):
                order = torch.randperm(n, generator=generator).to(device)
                for start in range(0, n, int(self.batch_size)):
                    batch = order[start : start + int(self.batch_size)]
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(layer(features[batch]), targets[batch])
                    loss.backward()
                    optimizer.step()

        self.classes_ = classes
        self.mean_, self.scale_ = mean, scale
        self.coef_ = layer.weight.detach().to(torch.float64)
        self.intercept_ = layer.bias.detach().to(torch.float64)
        return self

    def _scores(self, X: torch.Tensor) -> torch.Tensor:
        X = ((X.to(self.mean_.device) - self.mean_) / self.scale_).to(self.coef_.device)
        return X @ self.coef_.T + self.intercept_


PROBES: dict[str, type[_Probe]] = {"ridge": RidgeProbe, "adam": AdamProbe}


# ---------------------------------------------------------------- accuracy over seeds


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """Test accuracy in % : mean and sample standard deviation (n - 1; 0 for one run) over seeds."""

    mean: float
    std: float
    per_seed: tuple[float, ...]


def probe_accuracy(
    train_X: ArrayLike,
    train_y: ArrayLike,
    test_X: ArrayLike,
    test_y: ArrayLike,
    *,
    probe: str | RidgeProbe | AdamProbe = "ridge",
    seeds: Sequence[int] = (0, 1, 2),
) -> ProbeResult:
    """Fit a linear probe on the training features and measure its test accuracy (%).

    `probe` is a name from `PROBES` (default settings) or a configured, unfitted probe used as a
    template. Ridge is deterministic: one run, `std` 0, `seeds` ignored. Adam runs once per seed (the
    papers report mean ± std over 3 seeds); `std` is the sample standard deviation.
    """
    if isinstance(probe, str):
        if probe not in PROBES:
            raise ObjectiveError(f"unknown probe {probe!r} (known: {', '.join(PROBES)})")
        template = PROBES[probe]()
    elif isinstance(probe, _Probe):
        template = probe
    else:
        raise ObjectiveError(f"probe must be a name ({', '.join(PROBES)}) or a probe instance, got {probe!r}")
    seeds = tuple(seeds)
    if isinstance(template, AdamProbe) and (not seeds or not all(_integer(s) for s in seeds)):
        raise ObjectiveError(f"seeds must be a non-empty sequence of integers, got {seeds!r}")

    train_X, test_X = as_matrix(train_X, "train_X"), as_matrix(test_X, "test_X")
    if isinstance(template, RidgeProbe):
        accuracy = type(template)(**template.get_params()).fit(train_X, train_y).score(test_X, test_y)
        return ProbeResult(mean=accuracy, std=0.0, per_seed=(accuracy,))
    per_seed = tuple(
        type(template)(**{**template.get_params(), "seed": int(seed)}).fit(train_X, train_y).score(test_X, test_y)
        for seed in seeds
    )
    std = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    return ProbeResult(mean=statistics.fmean(per_seed), std=std, per_seed=per_seed)
