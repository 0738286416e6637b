"""The language-model objectives: `perplexity` on held-out sequences, `kl` from the original's next-token
distribution (EvoPress's fitness), and `top1` agreement with the original's next token.

A causal LM's evaluation sequences are full (no padding): positions `0 … T-2` predict tokens `1 … T-1`. The search
keeps the original model's next-token distribution compactly (`TokenReference`: its top-k log-probabilities per
position, from `reference_rows`), and turns each batch of a plan's logits into one row per sequence with
`token_scores`: `[nll_sum, kl_sum, top1_agreements, predicted_tokens]`, computed over chunks of positions so that
the held-out logits are never all in memory. The objectives read those rows (`TrialOutputs.token_scores`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._objectives import Display, Objective, ObjectiveError, Role, undefined_field
from ._registry import register_objective

if TYPE_CHECKING:
    from ._trial import TrialOutputs

__all__ = [
    "DEFAULT_TOP_K",
    "KL",
    "PERPLEXITY",
    "SCORE_COLUMNS",
    "TOP1",
    "KLDivergence",
    "Perplexity",
    "TokenReference",
    "TopOneAgreement",
    "reference_rows",
    "token_scores",
]

#: How many of the original's most likely next tokens `TokenReference` keeps per position (all when the vocabulary
#: is smaller: the KL is then exact).
DEFAULT_TOP_K = 64
#: The columns of `token_scores`' rows, sums over a sequence's predicted positions.
SCORE_COLUMNS = ("nll_sum", "kl_sum", "top1_agreements", "predicted_tokens")
_TINY = 1e-30  # the smallest rest mass: log(0) is never taken


def _work_dtype(logits: torch.Tensor) -> torch.dtype:
    """float64 for float64 logits, else float32 (half-precision logits are never soft-maxed in half precision)."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise ObjectiveError(
            f"logits must be a (batch, tokens, vocabulary) tensor, got {getattr(logits, 'shape', logits)!r}"
        )
    if logits.shape[1] < 2:
        raise ObjectiveError(f"a sequence needs at least two tokens to predict one, got {logits.shape[1]}")


def reference_rows(logits: torch.Tensor, k: int = DEFAULT_TOP_K, *, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The original model's top-k next tokens of one batch: `(top_ids (B, T-1, k) int32, top_logprobs (B, T-1, k)
    float32)`, log-probabilities sorted descending, for the predicting positions `0 … T-2` of `logits` `(B, T, V)`.

    `k` is capped at the vocabulary size (the KL is then exact). Soft-maxed in float32 (float64 for float64 logits),
    `chunk` positions at a time.
    """
    _check_logits(logits)
    if k < 1:
        raise ObjectiveError(f"k must be at least 1, got {k}")
    k = min(int(k), logits.shape[-1])
    ids, values = [], []
    with torch.no_grad():
        for start in range(0, logits.shape[1] - 1, chunk):
            stop = min(start + chunk, logits.shape[1] - 1)
            logprobs = torch.log_softmax(logits[:, start:stop], dim=-1, dtype=_work_dtype(logits))
            top = torch.topk(logprobs, k, dim=-1, sorted=True)
            ids.append(top.indices.to(torch.int32).cpu())
            values.append(top.values.to(torch.float32).cpu())
    return torch.cat(ids, dim=1).numpy(), torch.cat(values, dim=1).numpy()


@dataclass(frozen=True, eq=False)
class TokenReference:
    """The original model's next-token distribution on the evaluation sequences, kept compactly: for each sequence
    `n` and predicting position `t`, its `k` most likely tokens `top_ids (n, T-1, k) int32` and their
    log-probabilities `top_logprobs (n, T-1, k) float32`, sorted descending.

    Built from `reference_rows` batch by batch (`from_batches`); `rows(index)` gives `token_scores` the reference of
    a batch of sequences. `n × (T-1) × k × 8` bytes: 256 sequences of 2048 tokens at k = 64 take 268 MB.
    """

    top_ids: np.ndarray
    top_logprobs: np.ndarray

    def __post_init__(self) -> None:
        ids, logprobs = np.asarray(self.top_ids), np.asarray(self.top_logprobs)
        if ids.ndim != 3 or ids.shape != logprobs.shape:
            raise ObjectiveError(
                f"top_ids and top_logprobs must both be (sequences, positions, k), got {ids.shape} and {logprobs.shape}"
            )
        object.__setattr__(self, "top_ids", ids.astype(np.int32, copy=False))
        object.__setattr__(self, "top_logprobs", logprobs.astype(np.float32, copy=False))

    @classmethod
    def from_batches(cls, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> TokenReference:
        """The reference of every sequence, from `reference_rows` of each batch in order."""
        batches = list(batches)
        if not batches:
            raise ObjectiveError("a token reference needs at least one batch of sequences")
        return cls(np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))

    @property
    def k(self) -> int:
        """How many tokens are kept per position."""
        return int(self.top_ids.shape[-1])

    def __len__(self) -> int:
        return int(self.top_ids.shape[0])

    def rows(self, index: slice | Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(top_ids, top_logprobs)` of the sequences `index` (a slice or row numbers), for `token_scores`."""
        return self.top_ids[index], self.top_logprobs[index]


def token_scores(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    reference: tuple[Any, Any] | None,
    *,
    chunk: int = 256,
) -> np.ndarray:
    """One float64 row per sequence, `[nll_sum, kl_sum, top1_agreements, predicted_tokens]` (`SCORE_COLUMNS`), summed
    over the predicting positions `0 … T-2` of `logits` `(B, T, V)` for the tokens `1 … T-1` of `input_ids` `(B, T)`.

    - `nll_sum`: the negative log-likelihood (nats) of each actual next token;
    - `kl_sum`: KL(P_original ‖ Q_compressed) from the original's top-k (`reference`: `(top_ids, top_logprobs)` of
      these B sequences, as `reference_rows` gives them): `Σ_{i ∈ top-k} p_i (log p_i − log q_i) + p_rest (log p_rest −
      log q_rest)`, with `p_rest = 1 − Σ p_i` and `q_rest = 1 − Σ q_i` (at least 1e-30). Merging the tokens outside
      the top-k into one can only lower a KL (the log-sum inequality), so this is a lower bound of the exact KL,
      exact when k is the vocabulary size (no rest term), and close when the original puts little mass outside its
      top-k;
    - `top1_agreements`: the positions where the argmax of `logits` is the original's most likely token;
    - `predicted_tokens`: `T − 1`.

    `reference` None: these are the original model's own logits (KL 0, every position agrees). Log-softmax in
    float32 (float64 for float64 logits), `chunk` positions at a time: at most `B × chunk × V` of them at once.
    """
    _check_logits(logits)
    batch, length, vocabulary = logits.shape
    if tuple(input_ids.shape) != (batch, length):
        raise ObjectiveError(f"input_ids must be (batch, tokens) = {(batch, length)}, got {tuple(input_ids.shape)}")
    if chunk < 1:
        raise ObjectiveError(f"chunk must be at least 1, got {chunk}")
    device, predicted = logits.device, length - 1
    top_ids = top_logprobs = None
    if reference is not None:
        top_ids, top_logprobs = (torch.as_tensor(r) for r in reference)
        if top_ids.ndim != 3 or top_ids.shape[:2] != (batch, predicted) or top_ids.shape != top_logprobs.shape:
            raise ObjectiveError(
                f"the reference must be (batch, tokens - 1, k) = {(batch, predicted)} + (k,) for both arrays, got "
                f"{tuple(top_ids.shape)} and {tuple(top_logprobs.shape)}"
            )
        if top_ids.shape[-1] > vocabulary:
            raise ObjectiveError(f"the reference keeps {top_ids.shape[-1]} tokens of a {vocabulary}-token vocabulary")
    exact = top_ids is not None and top_ids.shape[-1] == vocabulary
    targets = torch.as_tensor(input_ids, device=device).long()
    sums = torch.zeros(batch, 3, dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, predicted, chunk):
            stop = min(start + chunk, predicted)
            part = logits[:, start:stop]
            logq = torch.log_softmax(part, dim=-1, dtype=_work_dtype(logits))  # (B, c, V)
            nll = -logq.gather(-1, targets[:, start + 1 : stop + 1, None]).squeeze(-1)
            sums[:, 0] += nll.double().sum(dim=1)
            if top_ids is None:
                continue
            ids = top_ids[:, start:stop].to(device).long()
            logp = top_logprobs[:, start:stop].to(device, torch.float64)
            logq_top = logq.gather(-1, ids).double()
            p = logp.exp()
            kl = torch.where(p > 0, p * (logp - logq_top), 0.0).sum(dim=-1)  # 0 log 0 = 0
            if not exact:
                p_rest = (-torch.expm1(torch.logsumexp(logp, dim=-1))).clamp_min(_TINY)
                q_rest = (-torch.expm1(torch.logsumexp(logq_top, dim=-1))).clamp_min(_TINY)
                kl = kl + p_rest * (p_rest.log() - q_rest.log())
            sums[:, 1] += kl.sum(dim=1)
            sums[:, 2] += (part.argmax(dim=-1) == ids[..., 0]).sum(dim=1).double()
    out = np.empty((batch, 4), dtype=np.float64)
    out[:, :3] = sums.cpu().numpy()
    if top_ids is None:
        out[:, 1], out[:, 2] = 0.0, predicted
    out[:, 3] = predicted
    return out


# ---------------------------------------------------------------- the objectives


def _spread(trial: TrialOutputs, column: int) -> float | None:
    """The standard error of the mean over sequences of `column` per predicted token (sequences of equal length, as
    packed ones are, weigh alike): None with fewer than two sequences. Packed sequences of one text are not fully
    independent, so it is an approximation, as every per-sample error of the multi-fidelity rule is."""
    scores = np.asarray(trial.token_scores, dtype=np.float64)
    if len(scores) < 2:
        return None
    per = scores[:, column] / np.maximum(scores[:, 3], 1.0)
    return float(per.std(ddof=1) / math.sqrt(len(per))) if np.isfinite(per).all() else None


def _totals(trial: TrialOutputs) -> tuple[np.ndarray, float]:
    """The column sums of the trial's `token_scores` and the number of predicted tokens."""
    scores = np.asarray(trial.token_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(SCORE_COLUMNS):
        raise ObjectiveError(
            f"token_scores must be (sequences, {len(SCORE_COLUMNS)}) {SCORE_COLUMNS}, got {scores.shape}"
        )
    totals = scores.sum(axis=0)
    if not totals[3] > 0:
        raise ObjectiveError("token_scores predict no token: every evaluation sequence needs at least two tokens")
    return totals, float(totals[3])


#: each objective's standard-error field (`Objective.error_field`), from the spread over the evaluation sequences
ERROR = {"perplexity": "perplexity_se", "kl": "kl_se", "top1": "top1_se"}
_SE = "standard error of {}, from its spread over the evaluation sequences (each sequence's mean per token)"

_NOT_FINITE = "the compressed model's next-token log-probabilities are not finite (NaN or infinite logits)"


class Perplexity(Objective):
    """`exp(Σ nll / Σ tokens)` over every predicted token of the evaluation sequences: the LM's task score.

    Undefined (None, ranked worst, the reason in `perplexity_undefined`) when the logits are not finite or the mean
    NLL overflows. Its standard error is not known from the value alone: `perplexity_se` carries it, from the spread
    over the evaluation sequences."""

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"perplexity": value}`, or None with `perplexity_undefined`."""
        totals, tokens = _totals(trial)
        mean = totals[0] / tokens
        value = math.exp(mean) if math.isfinite(mean) and mean < math.log(np.finfo(np.float64).max) else math.nan
        if math.isfinite(value):
            spread = _spread(trial, 0)  # the delta method: d exp(m) = exp(m) dm
            return {self.name: value, **({ERROR["perplexity"]: value * spread} if spread is not None else {})}
        reason = _NOT_FINITE if not math.isfinite(mean) else f"the mean NLL ({mean:.4g} nats) overflows exp"
        return {self.name: None, undefined_field(self.name): reason}


class KLDivergence(Objective):
    """The mean per-token KL(original ‖ compressed) of the next-token distribution (nats per token), from the
    original's top-k (`token_scores`: a lower bound, exact when k covers the vocabulary).

    Undefined (None, ranked worst, the reason in `kl_undefined`) when the logits are not finite."""

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"kl": nats per token}`, or None with `kl_undefined`."""
        totals, tokens = _totals(trial)
        value = float(max(totals[1], 0.0) / tokens) if math.isfinite(totals[1]) else math.nan
        if math.isfinite(value):
            spread = _spread(trial, 1)
            return {self.name: value, **({ERROR["kl"]: spread} if spread is not None else {})}
        return {self.name: None, undefined_field(self.name): _NOT_FINITE}


class TopOneAgreement(Objective):
    """The percentage of predicted tokens where the compressed model's most likely next token is the original's.

    Its standard error (`top1_se`) is from the spread of the sequences' agreement, not the tokens' (the tokens of a
    sequence are not independent trials)."""

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"top1": %}`."""
        totals, tokens = _totals(trial)
        spread = _spread(trial, 2)
        return {self.name: float(100.0 * totals[2] / tokens), **({ERROR["top1"]: 100 * spread} if spread else {})}


_NEEDS = frozenset({"token_scores"})

PERPLEXITY = register_objective(
    Perplexity(
        name="perplexity",
        direction="minimize",
        unit="ppl",
        description="perplexity of the evaluation sequences: exp of the mean negative log-likelihood of a next token",
        display=Display(
            title="perplexity",
            axis="perplexity (held-out sequences)",
            name="perplexity",
            fmt="{:.3f}",
            headline=True,
            delta="Δ ppl",
            delta_fmt="{:+.3f}",
        ),
        fields=(undefined_field("perplexity"), ERROR["perplexity"]),
        field_descriptions={
            undefined_field("perplexity"): "why perplexity has no value for this plan (it then ranks as the worst)",
            ERROR["perplexity"]: _SE.format("perplexity (the delta method on the mean NLL)"),
        },
        error_field=ERROR["perplexity"],
        role=Role.ACCURACY,
        rescored=True,
        needs=_NEEDS,
    )
)

KL = register_objective(
    KLDivergence(
        name="kl",
        direction="minimize",
        unit="nats/token",
        description="mean per-token KL divergence of the compressed from the original model's next-token "
        "distribution, from the original's top-k tokens (a lower bound, exact when k covers the vocabulary)",
        display=Display(title="KL nats/token", axis="KL to the original (nats/token)", name="KL", fmt="{:.4f}"),
        fields=(undefined_field("kl"), ERROR["kl"]),
        field_descriptions={
            undefined_field("kl"): "why the KL divergence has no value for this plan (it then ranks as the worst)",
            ERROR["kl"]: _SE.format("the KL divergence (nats/token)"),
        },
        error_field=ERROR["kl"],
        rescored=True,
        needs=_NEEDS,
    )
)

TOP1 = register_objective(
    TopOneAgreement(
        name="top1",
        direction="maximize",
        unit="%",
        description="next tokens where the compressed model's most likely token is the original model's",
        display=Display(
            title="top-1 agree %",
            axis="top-1 agreement with the original (%)",
            name="top-1 agreement",
            unit="%",
            fmt="{:.2f}",
        ),
        worst=0.0,  # no token agrees
        fields=(ERROR["top1"],),
        field_descriptions={ERROR["top1"]: _SE.format("top-1 agreement (%)")},
        error_field=ERROR["top1"],
        rescored=True,
        needs=_NEEDS,
    )
)
