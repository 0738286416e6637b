"""Block-by-block similarity of a model's hidden states, from its `ActivationStats` alone.

The papers' diagnostic figures: linear CKA over all tokens (TOAST), the [CLS] cosine matrix and the
Block Redundancy score (RBA). Every result is indexed by hidden state `h_0 … h_L`. Pure numpy, float64;
plotting lives in `_plots.py` and imports matplotlib only when called.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only for annotations: importing this module does not import torch
    from toast.spaces import ActivationStats

__all__ = ["SimilarityReport", "block_redundancy", "cka_matrix", "cosine_cls_matrix", "state_names"]


def state_names(num_states: int) -> list[str]:
    """Labels `h_0 … h_{S-1}` of the hidden states."""
    return [f"h_{k}" for k in range(num_states)]


def cka_matrix(stats: ActivationStats) -> np.ndarray:
    """Linear CKA `‖Sxy‖²_F / (‖Sxx‖_F ‖Syy‖_F)` between every pair of states, over all tokens; `(S, S)`.

    Feature-space form of Kornblith et al. (2019) with centered scatters; each Gram block is read once
    (upper triangle, mirrored). A state with no variance has NaN CKA with every state, itself included.
    """
    S = stats.num_states
    norms = np.array([np.linalg.norm(stats.scatter(i, i)) for i in range(S)])
    out = np.full((S, S), np.nan)
    for i in range(S):
        if norms[i] > 0:
            out[i, i] = 1.0
        for j in range(i + 1, S):
            denominator = norms[i] * norms[j]
            if denominator > 0:
                sxy = stats.scatter(i, j)
                out[i, j] = out[j, i] = float(np.vdot(sxy, sxy)) / denominator
    return out


def cosine_cls_matrix(stats: ActivationStats) -> np.ndarray:
    """Mean cosine similarity of the [CLS] token between every pair of states, over samples; `(S, S)`."""
    if stats.num_samples <= 0:
        raise ValueError("the statistics hold no samples, so the [CLS] cosine matrix is undefined")
    return np.asarray(stats.cls_cosine_sum, dtype=np.float64) / stats.num_samples


def block_redundancy(stats: ActivationStats) -> np.ndarray:
    """RBA's Block Redundancy per state: entry `k` is `-mean((h_k - h_{k-1})²)`, entry 0 NaN; `(S,)`.

    RBA (Eq. 1) defines BR(b) = -1/|D| Σ_x ‖h^(b)(x) - h^(b-1)(x)‖², the squared norm of a sample's whole
    representation averaged over samples. Deviation: we divide further by the feature count `d` and the
    mean number of real tokens per sample (`n / num_samples`), i.e. a true mean over tokens and features,
    so scores compare across models of different width and sequence length; within one model and data
    set this is a constant positive factor, so the ranking of blocks is the paper's. Padding tokens
    excluded by the statistics' mask do not count. Higher (closer to 0) = block `k-1` changed little.
    """
    S, d = stats.num_states, stats.dim
    out = np.full(S, np.nan)
    for k in range(1, S):
        out[k] = -max(stats.sum_sq_diff(k - 1, k), 0.0) / (stats.n * d)
    return out


def _to_json_value(array: np.ndarray) -> Any:
    """Nested lists of floats with every non-finite value as None (JSON null)."""
    if array.ndim == 0:
        value = float(array)
        return value if math.isfinite(value) else None
    return [_to_json_value(row) for row in array]


def _from_json_value(value: Any) -> np.ndarray:
    """Inverse of `_to_json_value`: None becomes NaN."""
    if isinstance(value, list):
        return np.array([_from_json_value(v) for v in value], dtype=np.float64)
    return np.float64(np.nan if value is None else value)


def _frozen(value: Any) -> np.ndarray:
    array = np.array(value, dtype=np.float64)  # a copy: later edits to the input do not leak in
    array.setflags(write=False)
    return array


@dataclass(frozen=True, kw_only=True, eq=False)
class SimilarityReport:
    """CKA and [CLS] cosine matrices `(S, S)` and Block Redundancy `(S,)`, indexed by hidden state."""

    cka: np.ndarray
    cosine_cls: np.ndarray
    block_redundancy: np.ndarray

    def __post_init__(self) -> None:
        for name in ("cka", "cosine_cls", "block_redundancy"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        S = len(self.block_redundancy)
        problems = [
            f"{name} has shape {getattr(self, name).shape}, expected {shape}"
            for name, shape in (("cka", (S, S)), ("cosine_cls", (S, S)), ("block_redundancy", (S,)))
            if getattr(self, name).shape != shape
        ]
        if problems:
            raise ValueError("inconsistent similarity report: " + "; ".join(problems))

    @property
    def num_states(self) -> int:
        """Number of hidden states `S = L + 1`."""
        return len(self.block_redundancy)

    @property
    def states(self) -> list[str]:
        """Labels `h_0 … h_L` that index every matrix."""
        return state_names(self.num_states)

    @classmethod
    def from_stats(cls, stats: ActivationStats) -> SimilarityReport:
        """Compute every similarity of the report from one `ActivationStats`."""
        return cls(cka=cka_matrix(stats), cosine_cls=cosine_cls_matrix(stats), block_redundancy=block_redundancy(stats))

    def to_json(self) -> dict[str, Any]:
        """`{"states", "cka", "cosine_cls", "block_redundancy"}` as plain lists, NaN written as None."""
        return {
            "states": self.states,
            "cka": _to_json_value(self.cka),
            "cosine_cls": _to_json_value(self.cosine_cls),
            "block_redundancy": _to_json_value(self.block_redundancy),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimilarityReport:
        """Inverse of `to_json` (null read back as NaN)."""
        missing = [key for key in ("cka", "cosine_cls", "block_redundancy") if key not in data]
        if missing:
            raise ValueError(f"similarity report JSON lacks {', '.join(missing)}")
        return cls(
            cka=_from_json_value(data["cka"]),
            cosine_cls=_from_json_value(data["cosine_cls"]),
            block_redundancy=_from_json_value(data["block_redundancy"]),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as strict JSON (no NaN tokens) to `path`; return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SimilarityReport:
        """Read a report written by `save`."""
        return cls.from_json(json.loads(Path(path).read_text()))
