"""What a translator of one span is fitted from: the span's statistics, and its token batches for trained kinds.

`Translator.fit_span(data)` receives a `SpanData`. Closed-form kinds read `data.stats` only (the default
`fit_span` is `fit(data.stats)`); trained kinds (`mlp`, `resmlp`) stream `data.batches(...)`: float32
`(x, y)` token batches of the source and target hidden states, real tokens only (padding is never stored),
split into a training and a held-out part **by calibration sample**, so no sample's tokens fall on both
sides. `ArraySpanData` holds the activations in memory (tests, small data); the search streams them from
the memory-mapped activation cache (`toast.capture.CapturedSpanData`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import cached_property
from typing import Literal

import numpy as np
import torch

from ._plan import Span
from ._stats import PairStats

Part = Literal["train", "holdout", "all"]
PARTS = ("train", "holdout", "all")
HOLDOUT_FRACTION = 0.1  # of the calibration samples, held out for early stopping


def holdout_samples(samples: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The sorted sample ids held out: `round(fraction · n)` of the distinct `samples`, drawn with `seed`.

    At least one sample is held out when there are two or more and `fraction > 0`; at least one is
    always left for training.
    """
    ids = np.unique(np.asarray(samples, dtype=np.int64))
    if not 0 <= fraction < 1:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    n = len(ids)
    k = 0 if fraction == 0 or n < 2 else min(max(int(round(fraction * n)), 1), n - 1)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, size=k, replace=False)) if k else ids[:0]


def part_mask(samples: np.ndarray, held: np.ndarray, part: Part) -> np.ndarray:
    """Which rows (by their sample id) belong to `part`."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    if part == "all":
        return np.ones(len(samples), dtype=bool)
    inside = np.isin(samples, held)
    return inside if part == "holdout" else ~inside


class SpanData(ABC):
    """The data a translator of `span` is fitted from, on `device`, with `seed`.

    `stats` is the pair's `PairStats` (computed on first use); `batches` yields `(x, y)` float32 tensors
    of shape `(tokens, d)` on `device`; `holdout` is the fraction of samples held out.
    """

    span: Span | None
    device: torch.device
    seed: int
    holdout: float

    @property
    @abstractmethod
    def stats(self) -> PairStats:
        """The statistics of the (source, target) pair over every token (both parts)."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """The width of the source (and target) state."""

    @property
    def branch_stats(self) -> PairStats:
        """The statistics of `(m_s, h_{e+1} - r_s)`: block s's MLP branch output and what the span's target adds
        to block s's residual stream after attention (what `folded` is fitted from)."""
        raise ValueError(
            "this span's data hold no MLP branch statistics (captured for pre-norm families, spans with s >= 0)"
        )

    @abstractmethod
    def batches(
        self, tokens_per_batch: int, *, part: Part = "train", seed: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over `part`'s tokens in `(x, y)` batches of `tokens_per_batch` rows (the last may be
        shorter), shuffled with `seed` (default: `self.seed`); float32, on `self.device`."""


class ArraySpanData(SpanData):
    """`SpanData` over in-memory arrays: `x`, `y` of shape `(tokens, d)` and each token's `samples` id.

    Without `samples`, every row is its own sample. `stats` defaults to the arrays' exact statistics;
    `branch` is what `branch_stats` returns (None: none held).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        samples: np.ndarray | None = None,
        *,
        span: Span | None = None,
        stats: PairStats | None = None,
        branch: PairStats | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        holdout: float = HOLDOUT_FRACTION,
    ) -> None:
        if x.ndim != 2 or x.shape != y.shape:
            raise ValueError(f"x and y must be (tokens, d) arrays of one shape, got {x.shape} and {y.shape}")
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.samples = np.arange(len(x)) if samples is None else np.asarray(samples, dtype=np.int64)
        if self.samples.shape != (len(x),):
            raise ValueError(f"samples must give one id per row ({len(x)}), got shape {self.samples.shape}")
        self.span, self.device, self.seed, self.holdout = span, torch.device(device), seed, holdout
        self._stats, self._branch = stats, branch
        self.held = holdout_samples(self.samples, holdout, seed)

    @cached_property
    def stats(self) -> PairStats:
        return self._stats if self._stats is not None else PairStats.from_arrays(self.x, self.y)

    @property
    def branch_stats(self) -> PairStats:
        return self._branch if self._branch is not None else super().branch_stats

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def batches(
        self, tokens_per_batch: int, *, part: Part = "train", seed: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = np.flatnonzero(part_mask(self.samples, self.held, part))
        rows = rows[np.random.default_rng(self.seed if seed is None else seed).permutation(len(rows))]
        for i in range(0, len(rows), tokens_per_batch):
            take = rows[i : i + tokens_per_batch]
            yield (
                torch.from_numpy(np.asarray(self.x[take], dtype=np.float32)).to(self.device),
                torch.from_numpy(np.asarray(self.y[take], dtype=np.float32)).to(self.device),
            )
