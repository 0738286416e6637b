"""A plan's forward pass over a set of inputs, starting from the deepest stored prefix state.

`plan_forward` runs a compressed model over one input group (rows of the probe or evaluation inputs, in
length-sorted batches): where the `PrefixStore` holds the state before one of the plan's translators for the
same steps and rows, it starts there instead of at the embeddings, and it stores the states at the plan's later
points for the trials after it (the empty plan stores the original model's states at every block). It counts
the block forwards run and skipped (`ForwardCount`, in samples × blocks), which the bench reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from toast.spaces import translator_class

from ..capture import PrefixStore, PrefixWriter
from ..data import PreprocessedInputs
from ..models import CompressedModel

__all__ = ["ForwardCount", "plan_forward"]


@dataclass
class ForwardCount:
    """Block forwards of one trial, in samples × blocks: `run` computed, `reused` skipped thanks to stored states."""

    run: int = 0
    reused: int = 0

    def add(self, other: ForwardCount) -> None:
        self.run += other.run
        self.reused += other.reused


def step_names(model: CompressedModel) -> list[tuple[str, str]]:
    """The plan's steps as the prefix store names them: a kept block by its index, a translator by its span and
    kind (two kinds on one span are different states after it). A kept block that a span folds its map into
    (`folded`) is another block than the original one: it is named with that span, so the state after it is never
    taken for the original's."""
    folds = {s.start: s for s in model.plan.spans if translator_class(s.kind).needs_source_block}

    def span_name(span) -> str:
        return f"{span.start}->{span.end}:{span.kind}"

    return [
        ("block", str(x) if x not in folds else f"{x}<{span_name(folds[x])}")
        if kind == "block"
        else ("span", span_name(x))
        for kind, x in model.plan.steps()
    ]


def _points(steps: Sequence[tuple[str, str]]) -> list[int]:
    """Where a stored state can stand in for a prefix: before each translator; for the empty plan (the original
    model), before every block but the first (each a span's source)."""
    if not any(kind == "span" for kind, _ in steps):
        return list(range(1, len(steps)))
    return [i for i, (kind, _) in enumerate(steps) if kind == "span" and i > 0]


def plan_forward(
    model: CompressedModel,
    inputs: PreprocessedInputs,
    rows: np.ndarray,
    group: str,
    store: PrefixStore | None,
    *,
    device: torch.device,
    outputs: Callable[[torch.Tensor, torch.Tensor | None, np.ndarray], tuple[torch.Tensor | np.ndarray, ...]],
) -> tuple[np.ndarray, list[list[np.ndarray]], ForwardCount]:
    """Run `model` over the samples at positions `rows` of `inputs`: the positions in pass order, and per
    batch the arrays `outputs(last hidden state, token mask, the batch's row positions)` returns. `group` names the rows (the store keys
    states by it: the same rows, in the same batches, every time)."""
    steps = step_names(model)
    blocks_after = np.cumsum([0] + [kind == "block" for kind, _ in steps][::-1])[::-1]  # blocks in steps[i:]
    points = _points(steps) if store is not None and store.enabled else []
    width = int(model.config.hidden_size)
    dtype = next(model.parameters()).dtype
    size = inputs.batch_size
    expected = [min(size, len(rows) - i) for i in range(0, len(rows), size)]  # the rows of each batch
    start, stored = 0, None
    for p in reversed(points):  # the deepest stored state (of these rows' batches)
        name = PrefixStore.entry(steps, p, group)
        stored = store.read(name, dtype, width)
        if stored is not None and [len(t) for t in stored] == expected:
            start = p
            break
        if stored is not None:  # written for other batches: not these states
            store.drop(name)
        stored = None
    writers: dict[int, PrefixWriter] = {}
    for p in points:
        if p > start:
            w = store.writer(PrefixStore.entry(steps, p, group), dtype, batches=len(expected))
            if w is not None:
                writers[p] = w
    count = ForwardCount()
    positions, results = [], []
    try:
        names = ("attention_mask",) if stored is not None else None  # from a stored state: the token mask only
        for b, (pos, batch) in enumerate(inputs.length_batches(rows=rows, names=names)):
            batch = {k: v.to(device) for k, v in batch.items()}
            if stored is not None:
                h, mask, first = stored[b].to(device), model.token_mask(batch), start
            else:  # no state stored: from the embeddings
                h, mask = model.family.embed(model.embeddings, batch)
                first = 0
            hook = (lambda i, state: writers[i + 1].write(state) if i + 1 in writers else None) if writers else None
            h = model.run_steps(h, mask, start=first, on_state=hook)
            count.run += int(blocks_after[first]) * len(pos)
            count.reused += int(blocks_after[0] - blocks_after[first]) * len(pos)
            results.append([_numpy(t) for t in outputs(h, mask, pos)])
            positions.append(pos)
        for w in writers.values():
            w.commit()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    return np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64), results, count


def _numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else t.float().cpu().numpy()
