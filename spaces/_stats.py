"""Sufficient statistics of the hidden states: everything a closed-form fit or CKA needs.

Activations are shifted by a per-state reference (the first batch's mean) before the products are
formed, so the centered scatter matrices recovered at the end do not suffer from the cancellation
of large means; each batch product is formed in float32 (float64 on request) and summed in float64.

The products are held either as one all-pairs Gram `(S·d, S·d)` (small models: everything, as the
similarity map needs) or per pair of states `(i, j)`, `i <= j`, for only the pairs a search space can
use (`space_pairs`): a span `s→e` reads `(h_{s+1}, h_{e+1})`, Block Redundancy the adjacent pairs, every
fit the diagonal blocks. `plan_passes` groups the pairs into passes over the calibration data that
each fit a memory budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingStatsError

#: one pair of hidden states `(i, j)` with `i <= j`: the block `Σ (h_i - c_i)ᵀ(h_j - c_j)`
StatePair = tuple[int, int]


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
    It may be a read-only memory map, so reading one pair touches only that pair's blocks. A capture planned
    for a search space holds only some pairs: then `gram` is None and `pairs` maps each `(i, j)`, `i <= j`, to
    its `(d, d)` block (memory maps too); asking for another pair raises `MissingStatsError`.
    """

    n: int
    num_samples: int
    shift: np.ndarray  # (S, d)
    sums: np.ndarray  # (S, d): Σ (h - c)
    gram: np.ndarray | None  # (S·d, S·d); None: the blocks are in `pairs`
    cls_cosine_sum: np.ndarray  # (S, S): Σ over samples of cos(h_i[cls], h_j[cls])
    # The MLP branch output `m_s` of each block s (pre-norm families; None where not captured), for `folded`:
    branch_shift: np.ndarray | None = None  # (L, d)
    branch_sums: np.ndarray | None = None  # (L, d): Σ (m_s - c_s)
    branch_gram: np.ndarray | None = None  # (L, d, d): Σ (m_s - c_s)ᵀ(m_s - c_s)
    branch_cross: np.ndarray | None = None  # (L(L+1)/2, d, d): Σ (m_s - c_s)ᵀ(h_t - c_t) for t = s+1 … L only
    pairs: Mapping[StatePair, np.ndarray] | None = None  # (i, j), i <= j -> (d, d) block, when `gram` is None

    def __post_init__(self) -> None:
        if (self.gram is None) == (self.pairs is None):
            raise ValueError(
                "ActivationStats holds its products either as `gram` (all pairs) or as `pairs`, one of them"
            )

    @property
    def num_states(self) -> int:
        return self.shift.shape[0]

    @property
    def dim(self) -> int:
        return self.shift.shape[1]

    @property
    def all_pairs(self) -> bool:
        """Whether every pair of states is held (the all-pairs Gram, or every block in `pairs`)."""
        S = self.num_states
        return self.gram is not None or len(self.pairs) == S * (S + 1) // 2

    @property
    def held_pairs(self) -> frozenset[StatePair]:
        """The pairs `(i, j)`, `i <= j`, whose statistics are held."""
        if self.gram is not None:
            return frozenset(all_pairs(self.num_states))
        return frozenset(self.pairs)

    def has_pair(self, i: int, j: int) -> bool:
        """Whether the statistics of `(h_i, h_j)` are held."""
        return self.gram is not None or (min(i, j), max(i, j)) in self.pairs

    def block(self, i: int, j: int) -> np.ndarray:
        d = self.dim
        if self.gram is not None:
            return np.asarray(self.gram[i * d : (i + 1) * d, j * d : (j + 1) * d], dtype=np.float64)
        found = self.pairs.get((min(i, j), max(i, j)))
        if found is None:
            raise MissingStatsError(
                f"the statistics hold no pair (h_{i}, h_{j}): the capture was planned for a narrower search space "
                f"({len(self.pairs)} of {self.num_states * (self.num_states + 1) // 2} pairs); run with the space "
                "that needs it (the capture adds the missing pairs to the cache entry)"
            )
        return np.asarray(found if i <= j else found.T, dtype=np.float64)

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

    @property
    def has_branches(self) -> bool:
        """Whether the MLP branch outputs were captured (pre-norm families only)."""
        return self.branch_gram is not None

    def _cross(self, s: int, t: int) -> np.ndarray:
        """Shifted `Σ (m_s - c)ᵀ(h_t - c)` for `t > s`."""
        L = self.num_states - 1
        return np.asarray(self.branch_cross[branch_cross_index(L, s, t)], dtype=np.float64)

    def branch_pair(self, s: int, t: int) -> PairStats:
        """Statistics of x = `m_s` (block s's MLP branch output) and y = `h_t - r_s`, where `r_s = h_{s+1} - m_s`
        is block s's residual stream after attention: what `r_s + m_s A + b ≈ h_t` is fitted from (`folded`)."""
        L = self.num_states - 1
        if not self.has_branches:
            raise ValueError("these statistics hold no MLP branch outputs (captured for pre-norm families only)")
        if not 0 <= s < L or not s + 1 <= t <= L:
            raise IndexError(f"no branch pair (m_{s}, h_{t}): blocks 0 … {L - 1}, targets h_(s+1) … h_{L}")
        n, u = self.n, s + 1
        sm = self.branch_sums[s]
        mean_m = self.branch_shift[s] + sm / n
        smm = np.asarray(self.branch_gram[s], dtype=np.float64) - np.outer(sm, sm) / n
        smt = self._cross(s, t) - np.outer(sm, self.sums[t]) / n
        smu = self._cross(s, u) - np.outer(sm, self.sums[u]) / n
        sxy = smt - smu + smm
        syy = (
            self.scatter(t, t)
            - self.scatter(t, u)
            - self.scatter(u, t)
            + self.scatter(u, u)
            + smt
            + smt.T
            - smu
            - smu.T
            + smm
        )
        mean_y = self.mean(t) - self.mean(u) + mean_m
        return PairStats(n, mean_m, mean_y, smm, sxy, syy)

    def _check(self, i: int, j: int) -> None:
        for k in (i, j):
            if not 0 <= k < self.num_states:
                raise IndexError(f"hidden state h_{k} does not exist (states h_0 … h_{self.num_states - 1})")

    def save(self, directory: Path) -> list[str]:
        """Write to `directory` (npy files, the Gram or each pair's block memory-mappable); return the file names."""
        directory = Path(directory)
        if self.gram is not None:
            np.save(directory / "gram.npy", np.ascontiguousarray(self.gram))
            names = ["gram.npy"]
        else:
            names = save_pairs(directory, self.pairs)
        np.savez(directory / "stats.npz", shift=self.shift, sums=self.sums, cls_cosine_sum=self.cls_cosine_sum)
        names += ["stats.npz", "stats.json"]
        if self.has_branches:
            np.save(directory / "branch_gram.npy", np.ascontiguousarray(self.branch_gram))
            np.save(directory / "branch_cross.npy", np.ascontiguousarray(self.branch_cross))
            np.savez(directory / "branch_stats.npz", shift=self.branch_shift, sums=self.branch_sums)
            names += ["branch_gram.npy", "branch_cross.npy", "branch_stats.npz"]
        (directory / "stats.json").write_text(
            json.dumps({"n": self.n, "num_samples": self.num_samples, "branches": self.has_branches})
        )
        return names

    @classmethod
    def load(cls, directory: Path, pairs: Mapping[StatePair, np.ndarray] | None = None) -> ActivationStats:
        """Read what `save` wrote (memory-mapped). Without a `gram.npy`, the pair blocks are those saved beside the
        statistics (`save_pairs`) and those of `pairs` (blocks kept elsewhere, e.g. a later pass's)."""
        directory = Path(directory)
        meta = json.loads((directory / "stats.json").read_text())
        with np.load(directory / "stats.npz") as z:
            shift, sums, cos = z["shift"], z["sums"], z["cls_cosine_sum"]
        gram = np.load(directory / "gram.npy", mmap_mode="r") if (directory / "gram.npy").is_file() else None
        held = None if gram is not None else {**(pairs or {}), **load_pairs(directory)}
        branches = {}
        if meta.get("branches"):
            with np.load(directory / "branch_stats.npz") as z:
                branches = {"branch_shift": z["shift"], "branch_sums": z["sums"]}
            branches["branch_gram"] = np.load(directory / "branch_gram.npy", mmap_mode="r")
            branches["branch_cross"] = np.load(directory / "branch_cross.npy", mmap_mode="r")
        return cls(meta["n"], meta["num_samples"], shift, sums, gram, cos, **branches, pairs=held)


PAIRS_DIR = "pairs"  # the folder of per-pair blocks, `<i>-<j>.npy`


def save_pairs(directory: Path, blocks: Mapping[StatePair, np.ndarray]) -> list[str]:
    """Write each pair's block as its own `.npy` under `directory/pairs/` (so reading one pair maps only its
    bytes); return the relative file names."""
    folder = Path(directory) / PAIRS_DIR
    folder.mkdir(exist_ok=True)
    names = []
    for (i, j), block in sorted(blocks.items()):
        np.save(folder / f"{i}-{j}.npy", np.ascontiguousarray(block))
        names.append(f"{PAIRS_DIR}/{i}-{j}.npy")
    return names


def load_pairs(directory: Path) -> dict[StatePair, np.ndarray]:
    """The pair blocks `save_pairs` wrote under `directory`, memory-mapped read-only."""
    out = {}
    for path in sorted((Path(directory) / PAIRS_DIR).glob("*.npy")):
        i, j = (int(x) for x in path.stem.split("-"))
        out[i, j] = np.load(path, mmap_mode="r")
    return out


def all_pairs(num_states: int) -> list[StatePair]:
    """Every pair `(i, j)`, `0 <= i <= j < num_states`, in row order."""
    return [(i, j) for i in range(num_states) for j in range(i, num_states)]


def space_pairs(num_blocks: int, max_len: int, extra: Iterable[StatePair] = ()) -> frozenset[StatePair]:
    """The pairs of states a search space can read: every span `s→e` removing at most `max_len` blocks reads
    `(h_{s+1}, h_{e+1})` (its fit and the `folded` branch statistics alike), Block Redundancy the adjacent pairs,
    and every fit the diagonal blocks of both states; `extra` adds pairs (e.g. the spans of `plans`)."""
    S = num_blocks + 1
    out = {(k, k) for k in range(S)} | {(k - 1, k) for k in range(1, S)}
    out |= {(i, j) for i in range(S) for j in range(i + 1, min(S, i + max_len + 1))}
    out |= {(min(i, j), max(i, j)) for i, j in extra}
    bad = [p for p in out if not 0 <= p[0] <= p[1] < S]
    if bad:
        raise IndexError(f"pairs {sorted(bad)} name states outside h_0 … h_{S - 1}")
    return frozenset(out)


def pair_bytes(dim: int) -> int:
    """Memory of one pair's float64 accumulator."""
    return dim * dim * 8


def plan_passes(pairs: Iterable[StatePair], dim: int, budget_bytes: int) -> list[list[StatePair]]:
    """The pairs grouped into passes over the calibration data, each pass's accumulators within `budget_bytes`
    (at least one pair a pass, whatever the budget): filled in row order, so a pass holds whole rows where it can
    (each row's blocks are one product per contiguous run of columns)."""
    per_pass = max(1, budget_bytes // pair_bytes(dim))
    ordered = sorted(set(pairs))
    return [ordered[k : k + per_pass] for k in range(0, len(ordered), per_pass)]


def _runs(columns: list[int]) -> list[tuple[int, int]]:
    """Sorted columns as maximal contiguous runs `[first, last + 1)`."""
    runs: list[tuple[int, int]] = []
    for c in columns:
        if runs and runs[-1][1] == c:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


def branch_cross_index(num_blocks: int, s: int, t: int) -> int:
    """Where `Σ m_sᵀ h_t` (t = s+1 … L) sits in `ActivationStats.branch_cross`: block s's L - s entries follow
    those of blocks 0 … s-1."""
    return s * num_blocks - s * (s - 1) // 2 + (t - s - 1)


class StatsAccumulator:
    """Accumulates `ActivationStats` batch by batch, on the device the activations live on.

    `pairs` None: the all-pairs Gram (today's path, what the similarity map's exact CKA reads). Else only those
    pairs `(i, j)`, `i <= j`, each its own `(d, d)` float64 block. `shift` (S, d): the reference every product is
    shifted by, given by a later pass over the same data so that its blocks add to the first pass's (default: the
    first batch's mean).
    """

    def __init__(
        self,
        num_states: int,
        dim: int,
        *,
        product_dtype: torch.dtype = torch.float32,
        pairs: Iterable[StatePair] | None = None,
        shift: np.ndarray | None = None,
    ) -> None:
        self.num_states = num_states
        self.dim = dim
        self.product_dtype = product_dtype
        self.pairs = None if pairs is None else sorted({(min(i, j), max(i, j)) for i, j in pairs})
        if self.pairs is not None and any(not 0 <= i <= j < num_states for i, j in self.pairs):
            raise IndexError(f"pairs name states outside h_0 … h_{num_states - 1}")
        self._given_shift = None if shift is None else torch.as_tensor(np.asarray(shift), dtype=torch.float64)
        self.n = 0
        self.num_samples = 0
        self._shift: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None
        self._blocks: dict[StatePair, torch.Tensor] | None = None
        self._rows: dict[int, list[tuple[int, int]]] = {}
        if self.pairs is not None:
            for i, j in self.pairs:
                self._rows.setdefault(i, []).append(j)
            self._rows = {i: _runs(cols) for i, cols in self._rows.items()}
        self._cos: torch.Tensor | None = None
        self._branch: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(
        self,
        states: list[torch.Tensor],
        mask: torch.Tensor | None = None,
        cls_index: int = 0,
        branches: list[torch.Tensor] | None = None,
    ) -> None:
        """Add one batch: `states[k]` is `h_k` of shape `(B, N, d)`; `mask` `(B, N)` marks real tokens.

        `branches[s]` (optional, one per block, given with every batch or never) is block s's MLP branch output
        `m_s`: its sums, Gram and cross-Gram with `h_{s+1} … h_L` are accumulated too (`ActivationStats.branch_pair`).
        """
        if len(states) != self.num_states:
            raise ValueError(f"expected {self.num_states} hidden states, got {len(states)}")
        if branches is not None and len(branches) != self.num_states - 1:
            raise ValueError(f"expected {self.num_states - 1} MLP branch outputs, got {len(branches)}")
        if self.n and (branches is None) != (self._branch is None):
            raise ValueError("MLP branch outputs must be given with every batch or with none")
        h = torch.stack(states)  # (S, B, N, d)
        S, B, N, d = h.shape
        device = h.device
        if mask is not None:
            tokens = h[:, mask.to(device=device, dtype=torch.bool)]  # (S, T, d)
        else:
            tokens = h.reshape(S, B * N, d)
        tokens64 = tokens.to(torch.float64)
        if self._shift is None:
            self._shift = tokens64.mean(1) if self._given_shift is None else self._given_shift.to(device)
            self._sums = torch.zeros(S, d, dtype=torch.float64, device=device)
            if self.pairs is None:
                self._gram = torch.zeros(S * d, S * d, dtype=torch.float64, device=device)
            else:
                self._blocks = {p: torch.zeros(d, d, dtype=torch.float64, device=device) for p in self.pairs}
            self._cos = torch.zeros(S, S, dtype=torch.float64, device=device)
        x = tokens64 - self._shift[:, None, :]
        self._sums += x.sum(1)
        flat = x.permute(1, 0, 2).reshape(-1, S * d).to(self.product_dtype)
        if self._gram is not None:
            for i in range(S):  # upper block triangle only; mirrored in `result`
                self._gram[i * d : (i + 1) * d, i * d :] += (flat[:, i * d : (i + 1) * d].T @ flat[:, i * d :]).to(
                    torch.float64
                )
        else:
            for i, runs in self._rows.items():  # one product per contiguous run of a row's columns
                rows = flat[:, i * d : (i + 1) * d].T
                for first, stop in runs:
                    product = (rows @ flat[:, first * d : stop * d]).to(torch.float64)
                    for j in range(first, stop):
                        self._blocks[i, j] += product[:, (j - first) * d : (j - first + 1) * d]
        if branches is not None:
            self._update_branches(branches, mask, flat, device)
        cls = torch.nn.functional.normalize(h[:, :, cls_index, :].to(torch.float64), dim=-1)  # (S, B, d)
        self._cos += torch.einsum("sbd,tbd->st", cls, cls)
        self.n += tokens.shape[1]
        self.num_samples += B

    def _update_branches(
        self, branches: list[torch.Tensor], mask: torch.Tensor | None, flat: torch.Tensor, device: torch.device
    ) -> None:
        m = torch.stack([b.to(device) for b in branches])  # (L, B, N, d)
        L, B, N, d = m.shape
        tokens = m[:, mask.to(device=device, dtype=torch.bool)] if mask is not None else m.reshape(L, B * N, d)
        tokens64 = tokens.to(torch.float64)
        if self._branch is None:
            self._branch = {
                "shift": tokens64.mean(1),
                "sums": torch.zeros(L, d, dtype=torch.float64, device=device),
                "gram": torch.zeros(L, d, d, dtype=torch.float64, device=device),
                "cross": torch.zeros(L * (L + 1) // 2, d, d, dtype=torch.float64, device=device),
            }
        acc = self._branch
        x = tokens64 - acc["shift"][:, None, :]
        acc["sums"] += x.sum(1)
        x = x.to(self.product_dtype)
        for s in range(L):
            acc["gram"][s] += (x[s].T @ x[s]).to(torch.float64)
            cross = (x[s].T @ flat[:, (s + 1) * d :]).to(torch.float64)  # (d, (L - s)·d): h_{s+1} … h_L
            first = branch_cross_index(L, s, s + 1)
            acc["cross"][first : first + L - s] += cross.reshape(d, L - s, d).permute(1, 0, 2)

    def pair_blocks(self) -> dict[StatePair, np.ndarray]:
        """The accumulated pair blocks (pairs mode), as float64 numpy arrays."""
        if self._blocks is None:
            raise ValueError("no batch was accumulated, or this accumulator holds the all-pairs Gram")
        return {p: b.cpu().numpy() for p, b in self._blocks.items()}

    def result(self) -> ActivationStats:
        if self._shift is None:
            raise ValueError("no batch was accumulated")
        d, S = self.dim, self.num_states
        gram = pairs = None
        if self._gram is not None:
            gram = self._gram.cpu().numpy()
            for i in range(S):
                for j in range(i + 1, S):
                    gram[j * d : (j + 1) * d, i * d : (i + 1) * d] = gram[i * d : (i + 1) * d, j * d : (j + 1) * d].T
        else:
            pairs = self.pair_blocks()
        return ActivationStats(
            n=self.n,
            num_samples=self.num_samples,
            shift=self._shift.cpu().numpy(),
            sums=self._sums.cpu().numpy(),
            gram=gram,
            cls_cosine_sum=self._cos.cpu().numpy(),
            **({} if self._branch is None else {f"branch_{k}": v.cpu().numpy() for k, v in self._branch.items()}),
            pairs=pairs,
        )
