"""Sufficient statistics of the hidden states: everything a closed-form fit or CKA needs.

Activations are shifted by a per-state reference (the first batch's mean) before the products are
formed, so the centered scatter matrices recovered at the end do not suffer from the cancellation
of large means; each batch product is formed in float32 (float64 on request) and summed in float64.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class PairStats:
    """Centered statistics of a pair of states (x = h_i, y = h_j) over `n` tokens."""

    n: int
    mean_x: np.ndarray
    mean_y: np.ndarray
    sxx: np.ndarray  # Σ (x - x̄)ᵀ(x - x̄)
    sxy: np.ndarray  # Σ (x - x̄)ᵀ(y - ȳ)
    syy: np.ndarray  # Σ (y - ȳ)ᵀ(y - ȳ)

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray) -> PairStats:
        """Exact statistics of two stacked activation arrays (a reference, and small-data helper)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        return cls(len(x), mx, my, xc.T @ xc, xc.T @ yc, yc.T @ yc)


@dataclass(frozen=True)
class ActivationStats:
    """Per-state sums, Gram and cross-Gram matrices of `h_0 … h_L` (all tokens), plus [CLS] cosines.

    `gram` is the `(S·d, S·d)` matrix of shifted products; block `(i, j)` is `Σ (h_i - c_i)ᵀ(h_j - c_j)`.
    It may be a read-only memory map, so reading one pair touches only that pair's blocks.
    """

    n: int
    num_samples: int
    shift: np.ndarray  # (S, d)
    sums: np.ndarray  # (S, d): Σ (h - c)
    gram: np.ndarray  # (S·d, S·d)
    cls_cosine_sum: np.ndarray  # (S, S): Σ over samples of cos(h_i[cls], h_j[cls])

    @property
    def num_states(self) -> int:
        return self.shift.shape[0]

    @property
    def dim(self) -> int:
        return self.shift.shape[1]

    def block(self, i: int, j: int) -> np.ndarray:
        d = self.dim
        return np.asarray(self.gram[i * d : (i + 1) * d, j * d : (j + 1) * d], dtype=np.float64)

    def mean(self, i: int) -> np.ndarray:
        return self.shift[i] + self.sums[i] / self.n

    def scatter(self, i: int, j: int) -> np.ndarray:
        """Centered cross-scatter `Σ (h_i - h̄_i)ᵀ(h_j - h̄_j)`."""
        return self.block(i, j) - np.outer(self.sums[i], self.sums[j]) / self.n

    def pair(self, i: int, j: int) -> PairStats:
        """Statistics for a translator from state `h_i` to state `h_j`."""
        self._check(i, j)
        return PairStats(self.n, self.mean(i), self.mean(j), self.scatter(i, i), self.scatter(i, j), self.scatter(j, j))

    def sum_sq_diff(self, i: int, j: int) -> float:
        """`Σ ||h_j - h_i||²` over all tokens, exactly from the statistics."""
        self._check(i, j)
        dc = self.shift[j] - self.shift[i]
        shifted = np.trace(self.block(i, i)) - 2 * np.trace(self.block(i, j)) + np.trace(self.block(j, j))
        return float(shifted + 2 * dc @ (self.sums[j] - self.sums[i]) + self.n * dc @ dc)

    def _check(self, i: int, j: int) -> None:
        for k in (i, j):
            if not 0 <= k < self.num_states:
                raise IndexError(f"hidden state h_{k} does not exist (states h_0 … h_{self.num_states - 1})")

    def save(self, directory: Path) -> list[str]:
        """Write to `directory` (npy files, the Gram memory-mappable); return the file names."""
        directory = Path(directory)
        np.save(directory / "gram.npy", np.ascontiguousarray(self.gram))
        np.savez(directory / "stats.npz", shift=self.shift, sums=self.sums, cls_cosine_sum=self.cls_cosine_sum)
        (directory / "stats.json").write_text(json.dumps({"n": self.n, "num_samples": self.num_samples}))
        return ["gram.npy", "stats.npz", "stats.json"]

    @classmethod
    def load(cls, directory: Path) -> ActivationStats:
        directory = Path(directory)
        meta = json.loads((directory / "stats.json").read_text())
        with np.load(directory / "stats.npz") as z:
            shift, sums, cos = z["shift"], z["sums"], z["cls_cosine_sum"]
        gram = np.load(directory / "gram.npy", mmap_mode="r")
        return cls(meta["n"], meta["num_samples"], shift, sums, gram, cos)


class StatsAccumulator:
    """Accumulates `ActivationStats` batch by batch, on the device the activations live on."""

    def __init__(self, num_states: int, dim: int, *, product_dtype: torch.dtype = torch.float32) -> None:
        self.num_states = num_states
        self.dim = dim
        self.product_dtype = product_dtype
        self.n = 0
        self.num_samples = 0
        self._shift: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None
        self._cos: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, states: list[torch.Tensor], mask: torch.Tensor | None = None, cls_index: int = 0) -> None:
        """Add one batch: `states[k]` is `h_k` of shape `(B, N, d)`; `mask` `(B, N)` marks real tokens."""
        if len(states) != self.num_states:
            raise ValueError(f"expected {self.num_states} hidden states, got {len(states)}")
        h = torch.stack(states)  # (S, B, N, d)
        S, B, N, d = h.shape
        device = h.device
        if mask is not None:
            tokens = h[:, mask.to(device=device, dtype=torch.bool)]  # (S, T, d)
        else:
            tokens = h.reshape(S, B * N, d)
        tokens64 = tokens.to(torch.float64)
        if self._shift is None:
            self._shift = tokens64.mean(1)
            self._sums = torch.zeros(S, d, dtype=torch.float64, device=device)
            self._gram = torch.zeros(S * d, S * d, dtype=torch.float64, device=device)
            self._cos = torch.zeros(S, S, dtype=torch.float64, device=device)
        x = tokens64 - self._shift[:, None, :]
        self._sums += x.sum(1)
        flat = x.permute(1, 0, 2).reshape(-1, S * d).to(self.product_dtype)
        for i in range(S):  # upper block triangle only; mirrored in `result`
            self._gram[i * d : (i + 1) * d, i * d :] += (flat[:, i * d : (i + 1) * d].T @ flat[:, i * d :]).to(
                torch.float64
            )
        cls = torch.nn.functional.normalize(h[:, :, cls_index, :].to(torch.float64), dim=-1)  # (S, B, d)
        self._cos += torch.einsum("sbd,tbd->st", cls, cls)
        self.n += tokens.shape[1]
        self.num_samples += B

    def result(self) -> ActivationStats:
        if self._gram is None:
            raise ValueError("no batch was accumulated")
        d, S = self.dim, self.num_states
        gram = self._gram.cpu().numpy()
        for i in range(S):
            for j in range(i + 1, S):
                gram[j * d : (j + 1) * d, i * d : (i + 1) * d] = gram[i * d : (i + 1) * d, j * d : (j + 1) * d].T
        return ActivationStats(
            n=self.n,
            num_samples=self.num_samples,
            shift=self._shift.cpu().numpy(),
            sums=self._sums.cpu().numpy(),
            gram=gram,
            cls_cosine_sum=self._cos.cpu().numpy(),
        )
