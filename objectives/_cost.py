"""Exact cost of any plan, instantly: per-component FLOPs and params summed along the plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from toast.spaces import Plan

from ._latency_table import LatencyTable


@dataclass(frozen=True)
class Cost:
    """FLOPs (fvcore convention: one multiply-add = one flop) and parameters of one model; `latency_ms` its
    estimated milliseconds per batch when its cost table carries a latency table (else None)."""

    flops: int
    params: int
    latency_ms: float | None = None

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


@dataclass(frozen=True, kw_only=True)
class CostTable:
    """Per-component counts of a model at one input size, measured once with fvcore.

    `tail` is the final norm, pooling and head; translator costs are per kind string (all spans of a kind
    cost the same: one map of the hidden width over every token). `translators` holds the kinds measured
    up front; with `width` and `tokens` set, any other kind string (`lowrank:48`) is costed on demand by
    its own class (`translator_class(kind).cost(width, tokens)`, the count the measured ones come from).
    `latency`, when set (`dataclasses.replace(table, latency=...)`), gives every `cost(plan)` its estimated
    milliseconds (`Cost.latency_ms`).
    """

    embed: Cost
    blocks: tuple[Cost, ...]
    tail: Cost
    translators: Mapping[str, Cost] = field(default_factory=dict)
    input_description: str = ""
    width: int | None = None  # the hidden width translators map
    tokens: int | None = None  # the tokens each translator maps per input
    latency: LatencyTable | None = None  # the device's latency model, when the run needs one

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def cost(self, plan: Plan) -> Cost:
        """Cost of the compressed model for `plan` (a sum: no model is built or run)."""
        if plan.num_blocks != self.num_blocks:
            raise ValueError(f"plan is for {plan.num_blocks} blocks, the cost table for {self.num_blocks}")
        parts = [self.embed, self.tail, *(self.blocks[b] for b in plan.kept)]
        parts += [self.translator(span.kind) for span in plan.spans]
        latency = self.latency.estimate(plan) if self.latency is not None else None
        return Cost(sum(p.flops for p in parts), sum(p.params for p in parts), latency)

    def translator(self, kind: str) -> Cost:
        """The cost of one span of kind string `kind`: as measured, else from its class at `width` and `tokens`."""
        if kind in self.translators:
            return self.translators[kind]
        if self.width is None or self.tokens is None:
            raise ValueError(f"no cost measured for translator kind {kind!r}")
        from toast.spaces import translator_class

        return Cost(*translator_class(kind).cost(self.width, self.tokens))

    @property
    def original(self) -> Cost:
        return self.cost(Plan((), self.num_blocks))

    def to_json(self) -> dict:
        c = lambda x: {"flops": x.flops, "params": x.params}  # noqa: E731
        return {
            "embed": c(self.embed),
            "blocks": [c(b) for b in self.blocks],
            "tail": c(self.tail),
            "translators": {k: c(v) for k, v in self.translators.items()},
            "input": self.input_description,
            **({"latency": self.latency.to_json()} if self.latency is not None else {}),
        }
