"""`SpanData` over the activation cache: one span's token batches streamed from the memory-mapped Arrow shards.

A trained translator (`mlp`, `resmlp`) reads its `(x, y)` batches here, never the whole state: each epoch
visits the shards' record batches in a seeded random order, keeps the rows of the requested part (the
held-out calibration samples, or the others: split by sample id, not by token), and shuffles them in a
buffer of a few batches. Only the selected rows are copied out of the memory map (and widened to float32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import cached_property

import numpy as np
import pyarrow as pa
import torch

from toast.spaces import HOLDOUT_FRACTION, PairStats, Part, Span, SpanData, holdout_samples, part_mask

from ._cache import CapturedActivations, decode_state

SHUFFLE_BATCHES = 4  # the shuffle buffer holds at least this many batches' tokens


class CapturedSpanData(SpanData):
    """The calibration activations of `span` (source `h_{start+1}`, target `h_{end+1}`) in `captured`."""

    def __init__(
        self,
        captured: CapturedActivations,
        span: Span,
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
        holdout: float = HOLDOUT_FRACTION,
    ) -> None:
        self.captured, self.span = captured, span
        self.device, self.seed, self.holdout = torch.device(device), seed, holdout

    @cached_property
    def _index(self) -> tuple[list[tuple[int, int]], np.ndarray]:
        """(shard, record batch) of every stored record batch, and the held-out sample ids (read on first use:
        a closed-form fit needs neither)."""
        records, samples = [], []
        for f, path in enumerate(self.captured.files):
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    records.append((f, i))
                    samples.append(np.unique(reader.get_batch(i).column("sample").to_numpy()))
        everyone = np.concatenate(samples) if samples else np.zeros(0, np.int64)
        return records, holdout_samples(everyone, self.holdout, self.seed)

    @property
    def held(self) -> np.ndarray:
        """The held-out calibration sample ids."""
        return self._index[1]

    @cached_property
    def stats(self) -> PairStats:
        return self.captured.stats.pair(self.span.source, self.span.target)

    @cached_property
    def branch_stats(self) -> PairStats:
        if self.span.start < 0 or not self.captured.stats.has_branches:
            return super().branch_stats
        return self.captured.stats.branch_pair(self.span.start, self.span.target)

    @property
    def dim(self) -> int:
        return int(self.captured.manifest["dim"])

    def batches(
        self, tokens_per_batch: int, *, part: Part = "train", seed: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self.seed if seed is None else seed)
        dim, dtype = self.dim, self.captured.manifest["dtype"]
        dst = f"h_{self.span.target}"
        want = SHUFFLE_BATCHES * tokens_per_batch
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        held = 0
        with ExitStack() as stack:
            readers = [pa.ipc.open_file(stack.enter_context(pa.memory_map(str(p)))) for p in self.captured.files]
            source = self._source_rows(stack)
            records = self._index[0]
            for r in rng.permutation(len(records)):
                f, i = records[r]
                batch = readers[f].get_batch(i)
                keep = part_mask(batch.column("sample").to_numpy(), self.held, part)
                if not keep.any():
                    continue
                xs.append(np.asarray(source(int(r), batch)[keep], dtype=np.float32))
                ys.append(np.asarray(decode_state(batch.column(dst), dim, dtype)[keep], dtype=np.float32))
                held += len(xs[-1])
                if held >= want:
                    x, y = self._shuffled(xs, ys, rng)
                    full = len(x) - len(x) % tokens_per_batch
                    yield from self._split(x[:full], y[:full], tokens_per_batch)
                    xs, ys, held = [x[full:]], [y[full:]], len(x) - full
        if held:
            x, y = self._shuffled(xs, ys, rng)
            yield from self._split(x, y, tokens_per_batch)

    def _source_rows(self, stack: ExitStack) -> Callable[[int, pa.RecordBatch], np.ndarray]:
        """`(record index, the capture's record batch) -> its tokens' source states`: here the capture's own
        `h_source` column; a subclass may read them elsewhere (`refit` sequential: the compressed prefix's)."""
        dim, dtype, src = self.dim, self.captured.manifest["dtype"], f"h_{self.span.source}"
        return lambda _r, batch: decode_state(batch.column(src), dim, dtype)

    @staticmethod
    def _shuffled(
        xs: list[np.ndarray], ys: list[np.ndarray], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.concatenate(xs), np.concatenate(ys)
        order = rng.permutation(len(x))
        return x[order], y[order]

    def _split(self, x: np.ndarray, y: np.ndarray, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(x), size):
            yield torch.from_numpy(x[i : i + size]).to(self.device), torch.from_numpy(y[i : i + size]).to(self.device)
