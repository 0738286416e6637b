"""The `fidelity` objective: how close compressed features are to the original's, without labels."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ._objectives import Display, Objective, ObjectiveError, undefined_field
from ._probes import ArrayLike, as_matrix
from ._registry import register_objective

if TYPE_CHECKING:
    from ._trial import TrialOutputs

__all__ = ["FIDELITY", "FIDELITY_UNDEFINED", "Fidelity", "feature_fidelity", "linear_cka", "mean_cosine"]

FIDELITY_UNDEFINED = (
    "linear CKA is undefined: the features are constant over the evaluation samples; ranked as the worst agreement"
)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two float64 `(n, ·)` feature matrices (Kornblith et al., 2019), centered.

    Feature-space form `‖XcᵀYc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F)`, or the equal kernel form
    `⟨Kc, Lc⟩ / (‖Kc‖ ‖Lc‖)` on the `n × n` Gram matrices when that is smaller. NaN when either side
    has no variance (as `cka_matrix`).
    """
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    n = x.shape[0]
    if x.shape[1] * y.shape[1] <= n * n:
        cross = torch.linalg.matrix_norm(x.T @ y) ** 2
        denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    else:
        kx, ky = x @ x.T, y @ y.T
        cross = torch.sum(kx * ky)
        denominator = torch.linalg.matrix_norm(kx) * torch.linalg.matrix_norm(ky)
    return float(cross / denominator) if float(denominator) > 0 else float("nan")


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean row-wise cosine similarity; a pair of zero rows counts as 1, one zero row against another as 0."""
    nx, ny = torch.linalg.vector_norm(x, dim=1), torch.linalg.vector_norm(y, dim=1)
    both = (nx > 0) & (ny > 0)
    cos = torch.where(both, (x * y).sum(dim=1) / torch.where(both, nx * ny, 1.0), 0.0)
    cos = torch.where((nx == 0) & (ny == 0), 1.0, cos)
    return float(cos.mean())


def feature_fidelity(original: ArrayLike, compressed: ArrayLike) -> dict[str, float]:
    """`{"cka": linear CKA, "cosine": mean row-wise cosine}` of compressed vs original features, float64.

    Both are `(n, d)` arrays or tensors with rows for the same samples. CKA is invariant to rotations and
    isotropic scaling of the features; cosine compares each sample's feature vector as is.
    """
    x, y = as_matrix(original, "original"), as_matrix(compressed, "compressed")
    if x.shape != y.shape:
        raise ObjectiveError(
            f"original and compressed features must have the same shape (same samples, same width), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    y = y.to(x.device)
    return {"cka": linear_cka(x, y), "cosine": mean_cosine(x, y)}


class Fidelity(Objective):
    """Linear CKA of the compressed against the original model's evaluation features, with their mean cosine.

    CKA is undefined (0/0) when the features are constant over the samples: the value is then None, ranked as
    `worst`, with the reason in `fidelity_undefined`."""

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"fidelity": CKA or None, "cosine": mean cosine}`, and `fidelity_undefined` when CKA is undefined."""
        compressed = trial.eval_features
        fid = feature_fidelity(trial.original_features, compressed)
        out: dict[str, Any] = {self.name: fid["cka"] if math.isfinite(fid["cka"]) else None}
        if out[self.name] is None:
            out[undefined_field(self.name)] = FIDELITY_UNDEFINED
        out["cosine"] = fid["cosine"]
        return out


FIDELITY = register_objective(
    Fidelity(
        name="fidelity",
        direction="maximize",
        unit="CKA",
        description="linear CKA between the compressed and the original model's final features; no labels",
        display=Display(title="fidelity", axis="fidelity (linear CKA to the original)", name="fidelity", fmt="{:.4f}"),
        fields=(undefined_field("fidelity"), "cosine"),
        field_descriptions={
            undefined_field("fidelity"): "why fidelity has no value for this plan (it then ranks as the worst)",
            "cosine": "mean cosine similarity, sample by sample, between the compressed and the original model's "
            "final features (1: the same directions); no labels",
        },
        worst=0.0,  # no agreement
        rescored=True,
        needs=frozenset({"eval_features", "original_features"}),
    )
)
