"""Sufficient statistics of the hidden states: everything a closed-form fit or CKA needs.

Activations are shifted by a per-state reference (the first batch's mean) before the products are
formed, so the centered scatter matrices recovered at the end do not suffer from the cancellation
of large means; each batch product is formed in float32 (float64 on request) and summed in float64.

The products are held either as one all-pairs Gram `(S·d, S·d)` (small models: everything, as the
similarity map needs) or per pair of states `(i, j)`, `i <= j`, for only the pairs a search space can
use (`space_pairs`): a span `s→e` reads `(h_{s+1}, h_{e+1})`, Block Redundancy the adjacent pairs, every
fit the diagonal blocks. The MLP branch outputs `m_s` of pre-norm blocks (for `folded`) are held the same way, per
branch pair `(s, t)` (`space_branch_pairs`: a folded span `s→e` reads `(s, s)`, `(s, s+1)` and `(s, e+1)`).
`plan_passes` groups the blocks into passes over the calibration data that each fit a memory budget.
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
#: one MLP branch block `(s, t)`: `(s, s)` is `Σ (m_s - c)ᵀ(m_s - c)`, `(s, t)` with `t > s` is `Σ (m_s - c)ᵀ(h_t - c)`
BranchPair = tuple[int, int]


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
    # (S, S): Σ over real tokens of cos(h_i[t], h_j[t]), the peers' signal (ShortGPT's Block Influence, ReplaceMe's
    # window distance); None in statistics made before it was gathered
    token_cosine_sum: np.ndarray | None = None
    # The MLP branch output `m_s` of each block s (pre-norm families; None where not captured), for `folded`:
    branch_shift: np.ndarray | None = None  # (L, d)
    branch_sums: np.ndarray | None = None  # (L, d): Σ (m_s - c_s)
    # (s, s) -> Σ (m_s - c_s)ᵀ(m_s - c_s); (s, t), t > s -> Σ (m_s - c_s)ᵀ(h_t - c_t); the blocks the space reads
    branch_blocks: Mapping[BranchPair, np.ndarray] | None = None
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

    def token_cosine(self) -> np.ndarray | None:
        """Mean cosine similarity over tokens between every pair of states `(S, S)`, or None where not gathered."""
        if self.token_cosine_sum is None or self.n <= 0:
            return None
        return np.asarray(self.token_cosine_sum, dtype=np.float64) / self.n

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
        return self.branch_shift is not None

    @property
    def held_branch_pairs(self) -> frozenset[BranchPair]:
        """The MLP branch blocks `(s, t)` held (none without branches)."""
        return frozenset(self.branch_blocks or ())

    def _branch_block(self, s: int, t: int) -> np.ndarray:
        """Shifted `Σ (m_s - c)ᵀ(m_s - c)` (t = s) or `Σ (m_s - c)ᵀ(h_t - c)` (t > s)."""
        found = (self.branch_blocks or {}).get((s, t))
        if found is None:
            raise MissingStatsError(
                f"the statistics hold no MLP branch block (m_{s}, {'m' if t == s else 'h'}_{t}): the capture was "
                "planned for a narrower search space; run with the space that needs it (the capture adds the missing "
                "blocks to the cache entry)"
            )
        return np.asarray(found, dtype=np.float64)

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
        smm = self._branch_block(s, s) - np.outer(sm, sm) / n
        smt = self._branch_block(s, t) - np.outer(sm, self.sums[t]) / n
        smu = self._branch_block(s, u) - np.outer(sm, self.sums[u]) / n
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
        arrays = {"shift": self.shift, "sums": self.sums, "cls_cosine_sum": self.cls_cosine_sum}
        if self.token_cosine_sum is not None:
            arrays["token_cosine_sum"] = self.token_cosine_sum
        np.savez(directory / "stats.npz", **arrays)
        names += ["stats.npz", "stats.json"]
        if self.has_branches:
            names += save_pairs(directory, self.branch_blocks or {}, folder=BRANCH_DIR)
            np.savez(directory / "branch_stats.npz", shift=self.branch_shift, sums=self.branch_sums)
            names += ["branch_stats.npz"]
        (directory / "stats.json").write_text(
            json.dumps({"n": self.n, "num_samples": self.num_samples, "branches": self.has_branches})
        )
        return names

    @classmethod
    def load(
        cls,
        directory: Path,
        pairs: Mapping[StatePair, np.ndarray] | None = None,
        branch_blocks: Mapping[BranchPair, np.ndarray] | None = None,
    ) -> ActivationStats:
        """Read what `save` wrote (memory-mapped). Without a `gram.npy`, the pair blocks are those saved beside the
        statistics (`save_pairs`) and those of `pairs` (blocks kept elsewhere, e.g. a later pass's); the MLP branch
        blocks likewise, with those of `branch_blocks`."""
        directory = Path(directory)
        meta = json.loads((directory / "stats.json").read_text())
        with np.load(directory / "stats.npz") as z:
            shift, sums, cos = z["shift"], z["sums"], z["cls_cosine_sum"]
            token_cos = z["token_cosine_sum"] if "token_cosine_sum" in z.files else None
        gram = np.load(directory / "gram.npy", mmap_mode="r") if (directory / "gram.npy").is_file() else None
        held = None if gram is not None else _union(pairs, load_pairs(directory))
        branches = {}
        if meta.get("branches"):
            with np.load(directory / "branch_stats.npz") as z:
                branches = {"branch_shift": z["shift"], "branch_sums": z["sums"]}
            branches["branch_blocks"] = _union(branch_blocks, load_pairs(directory, folder=BRANCH_DIR))
        return cls(meta["n"], meta["num_samples"], shift, sums, gram, cos, token_cos, **branches, pairs=held)


def _union(first: Mapping | None, second: BlockFiles) -> Mapping:
    """`second`'s blocks over `first`'s (files stay files)."""
    if first is None or isinstance(first, BlockFiles):
        return (first or BlockFiles()) | second
    return {**first, **second}


PAIRS_DIR = "pairs"  # the folder of per-pair blocks, `<i>-<j>.npy`
BRANCH_DIR = "branch"  # the folder of MLP branch blocks, `<s>-<t>.npy`


def save_pairs(directory: Path, blocks: Mapping[tuple[int, int], np.ndarray], *, folder: str = PAIRS_DIR) -> list[str]:
    """Write each pair's block as its own `.npy` under `directory/<folder>/` (so reading one pair maps only its
    bytes); return the relative file names."""
    where = Path(directory) / folder
    where.mkdir(exist_ok=True)
    names = []
    for (i, j), block in sorted(blocks.items()):
        np.save(where / f"{i}-{j}.npy", np.ascontiguousarray(block))
        names.append(f"{folder}/{i}-{j}.npy")
    return names


class BlockFiles(Mapping):
    """Blocks saved as `.npy` files, keyed `(i, j)`: each read memory-mapped when asked for and let go after, so
    reading every block once (fitting every span) never holds them all mapped (resident) at once."""

    def __init__(self, paths: Mapping[tuple[int, int], Path] | None = None) -> None:
        self.paths = dict(paths or {})

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        return np.load(self.paths[key], mmap_mode="r")

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, key: object) -> bool:
        return key in self.paths

    def __or__(self, other: Mapping) -> Mapping:
        if isinstance(other, BlockFiles):
            return BlockFiles({**self.paths, **other.paths})
        return {**self, **other}


def load_pairs(directory: Path, *, folder: str = PAIRS_DIR) -> BlockFiles:
    """The blocks `save_pairs` wrote under `directory/<folder>/`, each memory-mapped read-only when read."""
    out = {}
    for path in sorted((Path(directory) / folder).glob("*.npy")):
        i, j = (int(x) for x in path.stem.split("-"))
        out[i, j] = path
    return BlockFiles(out)


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


def all_branch_pairs(num_blocks: int) -> list[BranchPair]:
    """Every MLP branch block `(s, t)`, `s <= t <= L`, in row order."""
    return [(s, t) for s in range(num_blocks) for t in range(s, num_blocks + 1)]


def space_branch_pairs(num_blocks: int, max_len: int, extra: Iterable[tuple[int, int]] = ()) -> frozenset[BranchPair]:
    """The MLP branch blocks a `folded` span can read in a space removing at most `max_len` blocks: span `s→e`
    (`e - s <= max_len`) reads `(s, s)`, `(s, s+1)` and `(s, e+1)` (none for `max_len` 0: no span); `extra` adds
    spans `(start, end)` (those of `plans`)."""
    L = num_blocks
    out = {(s, t) for s in range(L) for t in range(s, min(L, s + max_len + 1) + 1)} if max_len >= 1 else set()
    out |= {p for s, e in extra if s >= 0 for p in ((s, s), (s, s + 1), (s, e + 1))}
    bad = [p for p in out if not 0 <= p[0] <= p[1] <= L or p[0] >= L]
    if bad:
        raise IndexError(f"branch blocks {sorted(bad)} name blocks outside 0 … {L - 1}")
    return frozenset(out)


def pair_bytes(dim: int) -> int:
    """Memory of one pair's float64 accumulator."""
    return dim * dim * 8


def plan_passes(blocks: Iterable, dim: int, budget_bytes: int) -> list[list]:
    """The `(d, d)` blocks (state pairs, or any sortable keys of blocks, e.g. `("h", i, j)` / `("m", s, t)`) grouped
    into passes over the calibration data, each pass's accumulators within `budget_bytes` (at least one block a
    pass, whatever the budget): filled in sorted (row) order, so a pass holds whole rows where it can (each row's
    blocks are one product per contiguous run of columns)."""
    per_pass = max(1, budget_bytes // pair_bytes(dim))
    ordered = sorted(set(blocks))
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


class StatsAccumulator:
    """Accumulates `ActivationStats` batch by batch, on the device the activations live on.

    `pairs` None: the all-pairs Gram (today's path, what the similarity map's exact CKA reads). Else only those
    pairs `(i, j)`, `i <= j`, each its own `(d, d)` float64 block. `branch_pairs`: the MLP branch blocks `(s, t)`
    accumulated when branch outputs are given (None: every one). `shift` (S, d) and `branch_shift` (L, d): the
    references every product is shifted by, given by a later pass over the same data so that its blocks add to the
    first pass's (default: the first batch's means).
    """

    def __init__(
        self,
        num_states: int,
        dim: int,
        *,
        product_dtype: torch.dtype = torch.float32,
        pairs: Iterable[StatePair] | None = None,
        shift: np.ndarray | None = None,
        branch_pairs: Iterable[BranchPair] | None = None,
        branch_shift: np.ndarray | None = None,
    ) -> None:
        self.num_states = num_states
        self.dim = dim
        self.product_dtype = product_dtype
        self.pairs = None if pairs is None else sorted({(min(i, j), max(i, j)) for i, j in pairs})
        if self.pairs is not None and any(not 0 <= i <= j < num_states for i, j in self.pairs):
            raise IndexError(f"pairs name states outside h_0 … h_{num_states - 1}")
        L = num_states - 1
        self.branch_pairs = sorted(set(all_branch_pairs(L) if branch_pairs is None else branch_pairs))
        if any(not 0 <= s <= t <= L or s >= L for s, t in self.branch_pairs):
            raise IndexError(f"branch blocks name blocks outside 0 … {L - 1}")
        self._given_shift = None if shift is None else torch.as_tensor(np.asarray(shift), dtype=torch.float64)
        self._given_branch_shift = (
            None if branch_shift is None else torch.as_tensor(np.asarray(branch_shift), dtype=torch.float64)
        )
        self.n = 0
        self.num_samples = 0
        self._shift: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None
        self._blocks: dict[StatePair, torch.Tensor] | None = None
        self._rows = {} if self.pairs is None else _row_runs(self.pairs)
        self._branch_rows = _row_runs([(s, t) for s, t in self.branch_pairs if t > s])
        self._cos: torch.Tensor | None = None
        self._token_cos: torch.Tensor | None = None
        self._branch: dict | None = None

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
        `m_s`: its sums and the branch blocks `branch_pairs` are accumulated too (`ActivationStats.branch_pair`).
        """
        if len(states) != self.num_states:
            raise ValueError(f"expected {self.num_states} hidden states, got {len(states)}")
        if branches is not None and len(branches) != self.num_states - 1:
            raise ValueError(f"expected {self.num_states - 1} MLP branch outputs, got {len(branches)}")
        if self.n and (branches is None) != (self._branch is None):
            raise ValueError("MLP branch outputs must be given with every batch or with none")
        S, B, d = len(states), states[0].shape[0], states[0].shape[-1]
        device = states[0].device
        keep = None if mask is None else mask.to(device=device, dtype=torch.bool)
        if self._shift is None:
            self._sums = torch.zeros(S, d, dtype=torch.float64, device=device)
            if self.pairs is None:
                self._gram = torch.zeros(S * d, S * d, dtype=torch.float64, device=device)
            else:
                self._blocks = {p: torch.zeros(d, d, dtype=torch.float64, device=device) for p in self.pairs}
            self._cos = torch.zeros(S, S, dtype=torch.float64, device=device)
            self._token_cos = torch.zeros(S, S, dtype=torch.float64, device=device)
        given = None if self._given_shift is None else self._given_shift.to(device)
        shift = self._shift if self._shift is not None else given
        flat, self._shift = _shifted_tokens(states, keep, shift, self._sums, self.product_dtype)
        if self._gram is not None:
            for i in range(S):  # upper block triangle only; mirrored in `result`
                self._gram[i * d : (i + 1) * d, i * d :] += (flat[:, i * d : (i + 1) * d].T @ flat[:, i * d :]).to(
                    torch.float64
                )
        else:
            for i, runs in self._rows.items():
                _add_runs(self._blocks, i, flat[:, i * d : (i + 1) * d].T, flat, runs, d)
        if branches is not None:
            self._update_branches(branches, mask, flat, device)
        cls = torch.stack([h[:, cls_index, :].to(device=device, dtype=torch.float64) for h in states])  # (S, B, d)
        cls = torch.nn.functional.normalize(cls, dim=-1)
        self._cos += torch.einsum("sbd,tbd->st", cls, cls)
        self._token_cos += _token_cosines(states, keep, device)
        self.n += flat.shape[0]
        self.num_samples += B

    def _update_branches(
        self, branches: list[torch.Tensor], mask: torch.Tensor | None, flat: torch.Tensor, device: torch.device
    ) -> None:
        L, d = len(branches), branches[0].shape[-1]
        keep = None if mask is None else mask.to(device=device, dtype=torch.bool)
        if self._branch is None:
            given = self._given_branch_shift
            self._branch = {
                "shift": None if given is None else given.to(device),
                "sums": torch.zeros(L, d, dtype=torch.float64, device=device),
                "blocks": {p: torch.zeros(d, d, dtype=torch.float64, device=device) for p in self.branch_pairs},
            }
        acc = self._branch
        x, acc["shift"] = _shifted_tokens(
            [b.to(device) for b in branches], keep, acc["shift"], acc["sums"], self.product_dtype
        )
        blocks = acc["blocks"]
        for s in sorted({s for s, _ in self.branch_pairs}):
            rows = x[:, s * d : (s + 1) * d].T
            if (s, s) in blocks:
                blocks[s, s] += (rows @ x[:, s * d : (s + 1) * d]).to(torch.float64)
            _add_runs(blocks, s, rows, flat, self._branch_rows.get(s, ()), d)

    def pair_blocks(self) -> dict[StatePair, np.ndarray]:
        """The accumulated pair blocks (pairs mode), as float64 numpy arrays."""
        if self._blocks is None:
            raise ValueError("no batch was accumulated, or this accumulator holds the all-pairs Gram")
        return {p: b.cpu().numpy() for p, b in self._blocks.items()}

    def branch_blocks(self) -> dict[BranchPair, np.ndarray]:
        """The accumulated MLP branch blocks (empty where no branch outputs were given)."""
        if self._branch is None:
            return {}
        return {p: b.cpu().numpy() for p, b in self._branch["blocks"].items()}

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
        branch = {}
        if self._branch is not None:
            branch = {
                "branch_shift": self._branch["shift"].cpu().numpy(),
                "branch_sums": self._branch["sums"].cpu().numpy(),
                "branch_blocks": self.branch_blocks(),
            }
        return ActivationStats(
            n=self.n,
            num_samples=self.num_samples,
            shift=self._shift.cpu().numpy(),
            sums=self._sums.cpu().numpy(),
            gram=gram,
            cls_cosine_sum=self._cos.cpu().numpy(),
            token_cosine_sum=self._token_cos.cpu().numpy(),
            **branch,
            pairs=pairs,
        )


def _token_cosines(states: list[torch.Tensor], keep: torch.Tensor | None, device) -> torch.Tensor:
    """`(S, S)`: Σ over the batch's real tokens of `cos(h_i[t], h_j[t])`: each pair's row products over the rows'
    norms, in float32 with float64 sums; no unit-row copy of the states is kept."""
    S = len(states)
    rows = [h.to(device).reshape(-1, h.shape[-1]) if keep is None else h.to(device)[keep] for h in states]
    inverse = [1.0 / r.float().norm(dim=-1).clamp_min(1e-12) for r in rows]
    out = torch.zeros(S, S, dtype=torch.float64, device=device)
    for i in range(S):
        for j in range(i, S):
            dots = (rows[i].float() * rows[j].float()).sum(dim=-1)
            out[i, j] = out[j, i] = (dots * inverse[i] * inverse[j]).sum(dtype=torch.float64)
    return out


def _shifted_tokens(
    states: list[torch.Tensor],
    keep: torch.Tensor | None,
    shift: torch.Tensor | None,
    sums: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The real tokens of every state, shifted, side by side: `(T, S·d)` in the products' `dtype`, one state at a time (so a batch never holds more than one float64 state beside them);
    `Σ (h_k - c_k)` is added to `sums[k]`. `shift` None: the first batch's means, returned as the shift."""
    S, d = len(states), states[0].shape[-1]
    first = states[0][keep] if keep is not None else states[0].reshape(-1, d)
    flat = torch.empty(first.shape[0], S * d, dtype=dtype, device=first.device)
    means = []
    for k, h in enumerate(states):
        tokens = (h[keep] if keep is not None else h.reshape(-1, d)).to(torch.float64)
        if shift is None:
            means.append(tokens.mean(0))
        x = tokens - (means[k] if shift is None else shift[k])
        sums[k] += x.sum(0)
        flat[:, k * d : (k + 1) * d] = x
    return flat, torch.stack(means) if shift is None else shift


def _row_runs(pairs: Iterable[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Each row's columns as contiguous runs: `{i: [(first, stop), …]}`."""
    rows: dict[int, list[int]] = {}
    for i, j in sorted(pairs):
        rows.setdefault(i, []).append(j)
    return {i: _runs(cols) for i, cols in rows.items()}


def _add_runs(blocks: dict, i: int, rows: torch.Tensor, flat: torch.Tensor, runs, d: int) -> None:
    """`blocks[i, j] += rowsᵀ-products` with the states `j` of each run: one product per contiguous run of columns."""
    for first, stop in runs:
        product = (rows @ flat[:, first * d : stop * d]).to(torch.float64)
        for j in range(first, stop):
            blocks[i, j] += product[:, (j - first) * d : (j - first + 1) * d]
