"""Block-by-block similarity of a model's hidden states: exactly from its `ActivationStats`, or from a token sample.

The papers' diagnostic figures: linear CKA over all tokens (TOAST), the [CLS] cosine matrix and the
Block Redundancy score (RBA). Every result is indexed by hidden state `h_0 … h_L`. Pure numpy, float64;
plotting lives in `_plots.py` and imports matplotlib only when called.

Two ways to the CKA matrix (issue 22):

- `cka_matrix(stats)`: exact, over all tokens, from the all-pairs Gram of `ActivationStats` (memory `(S·d)²`): the
  path for small models, checked against a numpy reference.
- `SampledSimilarity`: a streaming accumulator fed the hidden states batch by batch during the calibration pass; it
  keeps a seeded, bounded token sample and computes CKA on it in memory `O(S·n·d)` for `n` sampled tokens. It also
  accumulates the [CLS] cosines and the Block Redundancy exactly over all tokens (they cost `O(S²)` and `O(S)`).

`SimilarityReport.cka_tokens` says which one a report holds (`"all"` or `"sample:<n>"`).
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

__all__ = [
    "SampledSimilarity",
    "SimilarityReport",
    "block_redundancy",
    "cka_matrix",
    "cosine_cls_matrix",
    "state_names",
]

#: `SimilarityReport.cka_tokens` of a CKA computed over every token (`cka_matrix`)
ALL_TOKENS = "all"


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


def _numpy(array: Any) -> np.ndarray:
    """A host numpy view of a numpy array or a torch tensor (any device; bfloat16 widened to float32)."""
    if isinstance(array, np.ndarray):
        return array
    array = array.detach()
    if str(array.dtype) == "torch.bfloat16":  # numpy has no bfloat16
        array = array.float()
    return array.cpu().numpy()


@dataclass(frozen=True)
class _Kept:
    """One sample in the token sample: its reservoir key, its sampled tokens `(S, t, d)` and their weights `(t,)`."""

    key: float
    tokens: np.ndarray
    weights: np.ndarray


class SampledSimilarity:
    """Linear CKA between every pair of hidden states from a seeded, bounded token sample, fed batch by batch.

    What the capture pass calls: `update(states, mask)` once per batch with the `S` hidden states `h_0 … h_L`, each
    `(batch, tokens, d)` (torch tensors on any device, or numpy arrays) and the mask of real tokens; then `cka()`,
    `cosine_cls()` and `block_redundancy()`, or `SimilarityReport.from_sample(self)`. It needs no `ActivationStats`,
    never imports the capture package, and imports torch only when it is fed torch tensors.

    **The sample.** Sample `g` (counted over every `update`) draws from its own generator, seeded by `(seed, g)`:
    a reservoir key in `[0, 1)` and its tokens: the [CLS] token (`cls_index`, when `keep_cls` and it is real) plus
    `tokens_per_sample - 1` distinct other real tokens drawn uniformly (`tokens_per_sample` uniform real tokens
    without `keep_cls`; every real token when `tokens_per_sample` is None or the sample has no more). The samples
    kept are those of smallest key whose tokens fit `max_tokens` together: the longest prefix of all samples seen,
    ordered by key, whose token count is within the budget (a bottom-k reservoir, so a uniform subset of samples
    once the budget is full). Each sample's draw depends only on `(seed, g)`, never on the batch it came in, so
    the result is the same for every batch size.

    **The estimator.** Each sampled token carries a Horvitz–Thompson weight, the inverse of its chance of being
    drawn within its sample: 1 for [CLS], `(m - 1) / k` for each of `k` tokens drawn from the `m - 1` other real
    tokens (`m / k` without `keep_cls`). With `X_i` the sampled tokens of state `h_i` (`n × d`) and `w` the
    weights, `X̃_i = diag(√w) (X_i - 1 x̄_iᵀ)` with the weighted mean `x̄_i`, so `X̃_iᵀ X̃_j` estimates the
    all-token centered scatter `Σ (h_i - h̄_i)ᵀ(h_j - h̄_j)` up to a common factor (unbiased per sample for the
    uncentered part; the mean is a ratio estimate), and

        CKA(i, j) = ‖X̃_iᵀ X̃_j‖²_F / (‖X̃_iᵀ X̃_i‖_F ‖X̃_jᵀ X̃_j‖_F) = ⟨K_i, K_j⟩_F / (‖K_i‖_F ‖K_j‖_F),  K_i = X̃_i X̃_iᵀ,

    the formula of `cka_matrix` on the sample: when every token of every sample is kept (all weights 1) it is the
    exact all-token CKA. Like any plug-in CKA it is biased by O(1/n) (toward higher values for unrelated states);
    `bench/bench_similarity.py` measures its distance from the exact CKA on the demo and on MiniLM. A state with
    no variance on the sample has NaN CKA with every state, itself included. `tokens_per_sample=1` with `keep_cls`
    keeps the [CLS] tokens only: the [CLS] CKA, a different quantity (no weight makes it estimate all tokens).

    **Memory.** The sample holds at most `S · max_tokens · d` values (float32, float64 for float64 inputs) plus a
    weight per token; `update` copies only the drawn tokens to the host, one sample at a time. `cka()` works in
    `O(S·n·d)`: with `n ≤ d` the `S` sample-space kernels `K_i` (`S · n² · 8` bytes), else one `d × d`
    cross-scatter at a time (`d² · 8`), plus two centered states (`2 · n · d · 8`) and `O(n + S² + d)` small terms;
    never the `(S·d)²` all-pairs Gram. `memory_bound(...)` gives the whole figure in bytes, for a planner. The [CLS] cosines (`S × S`) and the
    Block Redundancy sums (`S`) are accumulated exactly over every token (float64), as `ActivationStats` does.

    **Defaults** (8 tokens per sample, 4,096 in all): the calibration default of 500 samples fits whole. On the demo
    (65 tokens per image) many samples with few tokens each beat fewer whole samples at one budget (tokens of one
    input are correlated); MiniLM's texts are short (about 20 tokens), so there the choice matters little. Measured
    (`bench/RESULTS.md`, 2026-12-06, 512 samples, 3 seeds): max |ΔCKA| 0.023 / 0.017, mean 0.004 / 0.004 against
    the exact all-token CKA on the demo / MiniLM.
    """

    def __init__(
        self,
        num_states: int,
        *,
        tokens_per_sample: int | None = 8,
        max_tokens: int = 4096,
        seed: int = 0,
        cls_index: int = 0,
        keep_cls: bool = True,
    ) -> None:
        if num_states < 1:
            raise ValueError(f"`num_states` must be at least 1, got {num_states}")
        if tokens_per_sample is not None and tokens_per_sample < 1:
            raise ValueError(f"`tokens_per_sample` must be at least 1 (or None: every token), got {tokens_per_sample}")
        if max_tokens < 1 or (tokens_per_sample is not None and max_tokens < tokens_per_sample):
            raise ValueError(
                f"`max_tokens` ({max_tokens}) must be at least 1 and at least `tokens_per_sample` ({tokens_per_sample})"
            )
        self.num_states = num_states
        self.tokens_per_sample = tokens_per_sample
        self.max_tokens = max_tokens
        self.seed = seed
        self.cls_index = cls_index
        self.keep_cls = keep_cls
        self.dim: int | None = None
        self.num_samples = 0  # samples seen
        self.num_tokens = 0  # real tokens seen
        self._dtype: type[np.floating] | None = None
        self._kept: dict[int, _Kept] = {}  # sample index -> its sampled tokens
        self._kept_tokens = 0
        self._closed_key = math.inf  # the smallest key of a sample left out: every larger key is left out too
        self._cos_sum = np.zeros((num_states, num_states))
        self._sq_diff = np.zeros(num_states)  # entry k: Σ ‖h_k - h_{k-1}‖² over real tokens

    # ---- feeding ---------------------------------------------------------------------------------------------------
    def update(self, states: list[Any], mask: Any | None = None) -> None:
        """Add one batch: `states[k]` is `h_k`, `(batch, tokens, d)`; `mask` `(batch, tokens)` marks real tokens
        (None: every token is real). Torch tensors stay on their device: only the drawn tokens are copied."""
        if len(states) != self.num_states:
            raise ValueError(f"expected {self.num_states} hidden states, got {len(states)}")
        B, N, d = (int(v) for v in states[0].shape)
        if any(tuple(int(v) for v in h.shape) != (B, N, d) for h in states):
            raise ValueError("every hidden state of a batch must have the same shape (batch, tokens, d)")
        if self.dim is None:
            self.dim = d
            self._dtype = np.float64 if "float64" in str(states[0].dtype) else np.float32
        elif d != self.dim:
            raise ValueError(f"hidden states of width {d}, earlier batches had width {self.dim}")
        real = np.ones((B, N), dtype=bool) if mask is None else _numpy(mask).astype(bool).reshape(B, N)
        self._update_exact(states, real)
        for b in range(B):
            self._offer(self.num_samples + b, states, b, np.flatnonzero(real[b]))
        self.num_samples += B
        self.num_tokens += int(real.sum())

    def _update_exact(self, states: list[Any], real: np.ndarray) -> None:
        """[CLS] cosines and consecutive squared differences over every real token, in float64 where the states are."""
        if isinstance(states[0], np.ndarray):
            cls = np.stack([np.asarray(h[:, self.cls_index, :], dtype=np.float64) for h in states])  # (S, B, d)
            cls /= np.linalg.norm(cls, axis=-1, keepdims=True)
            self._cos_sum += np.einsum("sbd,tbd->st", cls, cls)
            for k in range(1, self.num_states):
                diff = np.asarray(states[k], dtype=np.float64) - np.asarray(states[k - 1], dtype=np.float64)
                self._sq_diff[k] += float(np.einsum("bnd,bnd,bn->", diff, diff, real))
            return
        import torch  # the states are torch tensors: reduce on their device

        with torch.no_grad():
            device = states[0].device
            cls = torch.stack([h[:, self.cls_index, :] for h in states]).to(torch.float64)
            cls = torch.nn.functional.normalize(cls, dim=-1)
            self._cos_sum += torch.einsum("sbd,tbd->st", cls, cls).cpu().numpy()
            weight = torch.from_numpy(real).to(device=device, dtype=torch.float64)
            for k in range(1, self.num_states):
                diff = states[k].to(torch.float64) - states[k - 1].to(torch.float64)
                self._sq_diff[k] += float(((diff * diff).sum(-1) * weight).sum())

    def _draw(self, g: int, real: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Sample `g`'s reservoir key, its drawn token positions and their Horvitz–Thompson weights."""
        rng = np.random.default_rng((self.seed, g))
        key = float(rng.random())
        m, k = len(real), self.tokens_per_sample
        if k is None or k >= m:
            return key, real, np.ones(m)
        if self.keep_cls and self.cls_index in real:
            others = real[real != self.cls_index]
            chosen = np.sort(rng.choice(len(others), size=k - 1, replace=False))
            positions = np.concatenate([[self.cls_index], others[chosen]]).astype(np.int64)
            weights = np.concatenate([[1.0], np.full(k - 1, len(others) / max(k - 1, 1))])
            return key, positions, weights
        chosen = np.sort(rng.choice(m, size=k, replace=False))
        return key, real[chosen], np.full(k, m / k)

    def _offer(self, g: int, states: list[Any], b: int, real: np.ndarray) -> None:
        """Sample `g` (row `b` of the batch) enters the reservoir if its key is in the kept prefix; evict what falls
        out, before copying its tokens, so the sample never holds more than `max_tokens` tokens."""
        key, positions, weights = self._draw(g, real)
        if key >= self._closed_key or len(positions) == 0:
            return
        order = sorted([(kept.key, h, len(kept.weights)) for h, kept in self._kept.items()] + [(key, g, len(weights))])
        total, keep = 0, set()
        for entry_key, h, count in order:
            if total + count > self.max_tokens:
                self._closed_key = min(self._closed_key, entry_key)
                break
            total += count
            keep.add(h)
        for h in [h for h in self._kept if h not in keep]:
            self._kept_tokens -= len(self._kept.pop(h).weights)
        if g not in keep:
            return
        if isinstance(states[0], np.ndarray):
            tokens = np.stack([h[b, positions] for h in states]).astype(self._dtype)
        else:
            import torch

            index = torch.as_tensor(positions, device=states[0].device)
            tokens = _numpy(torch.stack([h[b].index_select(0, index) for h in states])).astype(self._dtype)
        self._kept[g] = _Kept(key, tokens, weights)
        self._kept_tokens += len(weights)

    # ---- results ---------------------------------------------------------------------------------------------------
    @property
    def sampled_tokens(self) -> int:
        """Number `n` of tokens in the sample (over `sampled_samples` samples)."""
        return self._kept_tokens

    @property
    def sampled_samples(self) -> int:
        """Number of samples with tokens in the sample."""
        return len(self._kept)

    @property
    def nbytes(self) -> int:
        """Bytes the sample holds now (tokens and weights)."""
        return sum(kept.tokens.nbytes + kept.weights.nbytes for kept in self._kept.values())

    @staticmethod
    def memory_bound(num_states: int, dim: int, max_tokens: int, *, itemsize: int = 4) -> int:
        """Upper bound in bytes of what the accumulator holds plus what `cka()` allocates, for `S` states of width
        `d` and a budget of `n = max_tokens` tokens stored with `itemsize` bytes (4: float32, 8: float64 inputs):
        the tokens and weights held, two centered states, the kernels or one cross-scatter, and the small terms
        (weight vectors, the `S × S` result, the list of kept samples, numpy's buffers: `O(n + S² + d)`)."""
        S, d, n = num_states, dim, max_tokens
        held = S * n * d * itemsize + n * 8
        working = 2 * n * d * 8 + (S * n * n * 8 if n <= d else d * d * 8)
        small = 64 * n + 8 * S * S + 32 * d + 2**18  # the last: numpy's ufunc buffers, at most a few 64 KiB
        return held + working + small

    def _centered(self, k: int, order: list[int], weights: np.ndarray) -> np.ndarray:
        """`X̃_k = diag(√w)(X_k - 1 x̄_kᵀ)`: state `k`'s sampled tokens, weighted and centered, `(n, d)` float64."""
        x = np.empty((len(weights), self.dim), dtype=np.float64)
        start = 0
        for g in order:
            part = self._kept[g].tokens[k]
            x[start : start + len(part)] = part
            start += len(part)
        x -= (weights @ x) / weights.sum()
        x *= np.sqrt(weights)[:, None]
        return x

    def cka(self) -> np.ndarray:
        """Linear CKA `(S, S)` of every pair of states on the token sample (the estimator of the class doc)."""
        if not self._kept:
            raise ValueError("no token was sampled: feed at least one batch with a real token to `update`")
        S, n, d = self.num_states, self._kept_tokens, self.dim
        order = sorted(self._kept)
        weights = np.concatenate([self._kept[g].weights for g in order])
        out = np.full((S, S), np.nan)
        if n <= d:  # sample space: S kernels of n × n
            kernels = np.empty((S, n, n))
            for k in range(S):
                x = self._centered(k, order, weights)
                np.matmul(x, x.T, out=kernels[k])
                del x
            norms = np.array([np.linalg.norm(kernels[k]) for k in range(S)])
            products = lambda i, j: float(np.vdot(kernels[i], kernels[j]))  # noqa: E731
        else:  # feature space: one d × d cross-scatter at a time
            norms = np.empty(S)
            for k in range(S):
                x = self._centered(k, order, weights)
                norms[k] = np.linalg.norm(x.T @ x)
                del x

            def products(i: int, j: int) -> float:
                cross = self._centered(i, order, weights).T @ self._centered(j, order, weights)
                return float(np.vdot(cross, cross))

        for i in range(S):
            if norms[i] > 0:
                out[i, i] = 1.0
            for j in range(i + 1, S):
                if norms[i] * norms[j] > 0:
                    out[i, j] = out[j, i] = products(i, j) / (norms[i] * norms[j])
        return out

    def cosine_cls(self) -> np.ndarray:
        """Mean cosine of the [CLS] token between every pair of states over every sample; `(S, S)`, exact."""
        if self.num_samples <= 0:
            raise ValueError("no sample was fed, so the [CLS] cosine matrix is undefined")
        return self._cos_sum / self.num_samples

    def block_redundancy(self) -> np.ndarray:
        """Block Redundancy per state over every real token, exact: `block_redundancy(stats)`'s definition; `(S,)`."""
        if self.num_tokens <= 0:
            raise ValueError("no token was fed, so the Block Redundancy is undefined")
        out = np.full(self.num_states, np.nan)
        out[1:] = -np.maximum(self._sq_diff[1:], 0.0) / (self.num_tokens * self.dim)
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
    """CKA and [CLS] cosine matrices `(S, S)` and Block Redundancy `(S,)`, indexed by hidden state.

    `cka_tokens` says what the CKA was computed over: `"all"` (every token, `cka_matrix`) or `"sample:<n>"` (a
    token sample of `n` tokens, `SampledSimilarity`). The JSON holds it only for a sample (a report without the key
    is an all-token one, as every report written before the key existed).
    """

    cka: np.ndarray
    cosine_cls: np.ndarray
    block_redundancy: np.ndarray
    cka_tokens: str = ALL_TOKENS

    def __post_init__(self) -> None:
        for name in ("cka", "cosine_cls", "block_redundancy"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        kind, _, count = self.cka_tokens.partition(":")
        if not (self.cka_tokens == ALL_TOKENS or (kind == "sample" and count.isdigit() and int(count) > 0)):
            raise ValueError(f'`cka_tokens` must be "all" or "sample:<n>" with n > 0, got {self.cka_tokens!r}')
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

    @classmethod
    def from_sample(
        cls,
        sampled: SampledSimilarity,
        cosine_cls: np.ndarray | None = None,
        block_redundancy: np.ndarray | None = None,
    ) -> SimilarityReport:
        """The report of a `SampledSimilarity`: CKA on its token sample (`cka_tokens` `"sample:<n>"`); the [CLS]
        cosines and Block Redundancy given, or else the sampler's own (exact over every token)."""
        return cls(
            cka=sampled.cka(),
            cosine_cls=sampled.cosine_cls() if cosine_cls is None else cosine_cls,
            block_redundancy=sampled.block_redundancy() if block_redundancy is None else block_redundancy,
            cka_tokens=f"sample:{sampled.sampled_tokens}",
        )

    def to_json(self) -> dict[str, Any]:
        """`{"states", "cka", "cosine_cls", "block_redundancy"}` as plain lists, NaN written as None, and
        `"cka_tokens"` when the CKA is a token sample's."""
        data = {
            "states": self.states,
            "cka": _to_json_value(self.cka),
            "cosine_cls": _to_json_value(self.cosine_cls),
            "block_redundancy": _to_json_value(self.block_redundancy),
        }
        if self.cka_tokens != ALL_TOKENS:
            data["cka_tokens"] = self.cka_tokens
        return data

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
            cka_tokens=data.get("cka_tokens", ALL_TOKENS),
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
