"""A latency model of the target device and runtime: per-component milliseconds, summed along a plan, as the cost
table sums FLOPs.

A `LatencyTable` holds what was measured once on one device, in one runtime (PyTorch eager, `torch.compile`, ONNX
Runtime …), dtype, batch size and input size: the fixed part of a forward (embeddings, final norm and head, and the
runtime's own per-call work: `embed_ms`, with `tail_ms` where it was timed apart), the kept blocks by how many are
kept (`kept_ms`: a runtime's cost per block can grow with the depth it runs; or a kept block's own `blocks_ms`), and
one span of each translator kind at the model's width. `estimate(plan)` is the sum of the parts the compressed model
runs: instant, no model built. `margin` is how far below the measured time the estimate fell on the table's check
plans (whole models timed besides the probes): a latency budget holds estimates to `budget / (1 + margin)`
(`held_limit`), so that a plan chosen within it meets the budget when run. `toast.search`
measures the table (`measure_latency_table`: whole models timed in the runtime, the parts solved from their
differences) and writes it as a portable file (`toast-search latency-table`), which names the model's architecture
(`fingerprint`), the runtime and its versions, the device and the thread count; here it is data only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from toast.spaces import Plan

__all__ = ["LatencyTable", "held_budgets"]


@dataclass(frozen=True, kw_only=True)
class LatencyTable:
    """Milliseconds of each component of a model on one device, per batch of `batch_size` inputs (solved from whole
    models' fastest rounds: what they cost on the machine itself, without a shared machine's slow spells).

    `kept_ms[k]` is the milliseconds of the kept blocks when `k` of them are kept (k = 0 … L; measured at a few depths,
    linear between them): a block does not cost the same at every depth. In demo-lm's onnxruntime decoding step each
    added block cost 0.09 ms with 1–5 kept and 0.15 ms with 9–12 (more weights and cache read per step than the CPU's
    caches hold), so a sum of equal blocks put plans keeping 1–9 blocks 13–28% high. Where given, the kept blocks
    cost `kept_ms[k]` plus each kept block's offset from the original's mean block (`blocks_ms[b]` less their mean: 0
    where every block costs alike; Gemma 2's full-attention layers past the window cost more than its sliding ones);
    empty in older tables, where each kept block costs its `blocks_ms`.

    `translators` maps a kind string to the milliseconds of one span of that kind (every span of a kind maps the
    same tensor, so they cost the same). `device` names the hardware (CPU model or GPU name), `threads` is the CPU
    thread count the parts were timed with, `input_description` the batch's shapes, `runtime` what ran the model
    (`toast.search.runtimes`) with the `versions` of its packages, and `fingerprint` the model's architecture
    (`architecture_fingerprint`: its config; the weights' values do not change a latency). `margin` is the largest
    relative under-estimate over the check plans timed with the table (0: none ran, or none ran slower than estimated),
    `drift` how much the machine's own speed changed while the table was timed (`toast.search._latency.Timings`): a
    table timed on an unsteady machine is off by about that much.
    """

    embed_ms: float
    blocks_ms: tuple[float, ...]
    tail_ms: float
    kept_ms: tuple[float, ...] = ()
    translators_ms: Mapping[str, float] = field(default_factory=dict)
    device: str = ""
    dtype: str = "float32"
    batch_size: int = 1
    seq_len: int | None = None  # text encoders: tokens per input; None for images
    threads: int = 1
    torch_version: str = ""
    input_description: str = ""
    mode: str = "prefill"  # causal LMs: "decode", one new token per sequence after `seq_len` cached ones
    runtime: str = "eager"
    versions: Mapping[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    margin: float = 0.0  # how much slower than their estimates the table's check plans ran, at most (relative)
    drift: float = 0.0  # how much slower (> 0) the machine ran at the end of the table's timing than at its start

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks_ms", tuple(float(b) for b in self.blocks_ms))
        object.__setattr__(self, "kept_ms", tuple(float(b) for b in self.kept_ms))
        object.__setattr__(self, "translators_ms", {str(k): float(v) for k, v in self.translators_ms.items()})
        object.__setattr__(self, "versions", {str(k): str(v) for k, v in self.versions.items()})
        object.__setattr__(self, "margin", float(self.margin))
        object.__setattr__(self, "drift", float(self.drift))
        bad = [
            name
            for name, v in (
                ("embed_ms", self.embed_ms),
                ("tail_ms", self.tail_ms),
                ("margin", self.margin),
                *(("blocks_ms", b) for b in self.blocks_ms),
                *(("kept_ms", b) for b in self.kept_ms),
            )
            if not 0 <= v < math.inf
        ]
        bad += [f"translators_ms[{k!r}]" for k, v in self.translators_ms.items() if not 0 <= v < math.inf]
        bad += ["drift"] if not -1 < self.drift < math.inf else []
        if len(self.kept_ms) not in (0, len(self.blocks_ms) + 1):
            bad.append("kept_ms (one per count of kept blocks, 0 to L)")
        if bad or not self.blocks_ms:
            raise ValueError(
                f"a latency table needs blocks and finite non-negative times and margin; bad: {', '.join(bad) or 'no blocks'}"
            )

    @property
    def num_blocks(self) -> int:
        return len(self.blocks_ms)

    def translator(self, kind: str) -> float:
        """Milliseconds of one span of kind string `kind`; a `ValueError` naming the kinds timed when it was not."""
        try:
            return self.translators_ms[kind]
        except KeyError:
            raise ValueError(
                f"no latency measured for translator kind {kind!r} (measured: {', '.join(self.translators_ms) or 'none'})"
            ) from None

    def estimate(self, plan: Plan) -> float:
        """Estimated milliseconds per batch of the compressed model for `plan`: embeddings + tail + kept blocks
        (`kept_blocks`) + one translator per span (a sum: no model is built or run)."""
        if plan.num_blocks != self.num_blocks:
            raise ValueError(f"plan is for {plan.num_blocks} blocks, the latency table for {self.num_blocks}")
        return (
            self.embed_ms
            + self.tail_ms
            + self.kept_blocks(plan.kept)
            + sum(self.translator(span.kind) for span in plan.spans)
        )

    def kept_blocks(self, kept: tuple[int, ...]) -> float:
        """Milliseconds of the blocks `kept`: by their count (`kept_ms`) with each one's offset from the mean block,
        or each its own `blocks_ms` in a table without `kept_ms`."""
        if not self.kept_ms:
            return sum(self.blocks_ms[b] for b in kept)
        mean = sum(self.blocks_ms) / self.num_blocks
        return max(self.kept_ms[len(kept)] + sum(self.blocks_ms[b] - mean for b in kept), 0.0)

    def bound(self, plan: Plan) -> float:
        """`estimate(plan)` with the table's `margin` added: what a latency budget holds the plan to, so that a plan
        within the budget by this bound meets it when run (as the table's check plans did)."""
        return self.estimate(plan) * (1.0 + self.margin)

    def held_limit(self, budget_ms: float) -> float:
        """The largest estimate that meets a budget of `budget_ms` with the table's `margin`: `budget / (1 + margin)`."""
        return budget_ms / (1.0 + self.margin)

    @property
    def original_ms(self) -> float:
        """The estimate for the original model (every block kept)."""
        return self.estimate(Plan((), self.num_blocks))

    def describe(self) -> str:
        """One line: where and how it was measured."""
        threads = f", {self.threads} CPU threads" if self.device.startswith("cpu") else ""
        step = f", one decoding step after {self.seq_len} cached tokens" if self.mode == "decode" else ""
        return (
            f"{self.runtime} on {self.device}, {self.dtype}, batch {self.batch_size} ({self.input_description}{step})"
            f"{threads}"
        )

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["blocks_ms"] = list(self.blocks_ms)
        doc["kept_ms"] = list(self.kept_ms)
        doc["translators_ms"] = dict(self.translators_ms)
        doc["versions"] = dict(self.versions)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LatencyTable:
        known = {f for f in cls.__dataclass_fields__}
        lists = ("blocks_ms", "kept_ms")
        bad = [k for k in lists if k in doc and not isinstance(doc[k], list | tuple)]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be a list of milliseconds")
        return cls(**{k: (tuple(v) if k in lists else v) for k, v in doc.items() if k in known})


def held_budgets(budgets: Mapping[str, float], table: LatencyTable | None) -> dict[str, float]:
    """The limits the plans' estimates are held to: a latency budget less the latency table's margin
    (`LatencyTable.held_limit`: how much slower than estimated its check plans ran), the others as given."""
    out = dict(budgets)
    if table is not None and "latency" in out:
        out["latency"] = table.held_limit(out["latency"])
    return out
