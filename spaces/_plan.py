"""Spans and plans in the papers' `s→e` notation, validated with errors that name the broken rule."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import PlanError
from ._kinds import kind_class, kind_names

ARROWS = ("→", "->")


@dataclass(frozen=True, order=True)
class Span:
    """Blocks `start+1 … end` replaced by a translator from `h_{start+1}` to `h_{end+1}`.

    `start = -1` is the embeddings' output, so block 0 can be removed too.
    """

    start: int
    end: int
    kind: str = "linear"

    def __post_init__(self) -> None:
        if not isinstance(self.start, int) or not isinstance(self.end, int):
            raise PlanError(f"span {self.start}→{self.end}: start and end must be integers")
        if self.start < -1:
            raise PlanError(f"span {self}: start must be >= -1 (-1 is the embeddings' output)")
        if self.end <= self.start:
            raise PlanError(f"span {self}: end must be greater than start (it removes blocks start+1 … end)")

    @property
    def removed(self) -> range:
        """The blocks this span removes."""
        return range(self.start + 1, self.end + 1)

    @property
    def source(self) -> int:
        """Index of the hidden state the translator reads (`h_{start+1}`)."""
        return self.start + 1

    @property
    def target(self) -> int:
        """Index of the hidden state the translator approximates (`h_{end+1}`)."""
        return self.end + 1

    def __str__(self) -> str:
        return f"{self.start}→{self.end}"

    def to_json(self) -> list:
        return [self.start, self.end, self.kind]

    @classmethod
    def parse(cls, text: str, default_kind: str = "linear") -> Span:
        """Parse `"9→11:linear"`, `"9->11"` (ASCII arrow) or `"9→11 linear"`; a parametrized kind as `"9→11:lowrank:96"`."""
        m = re.fullmatch(r"\s*(-?\d+)\s*(?:→|->)\s*(-?\d+)\s*(?:[:\s]\s*([A-Za-z_][\w-]*(?::[\w.-]+)?))?\s*", text)
        if not m:
            raise PlanError(
                f"cannot read span {text!r}: write it as 's→e:kind', e.g. '9→11:linear' (ASCII '->' works too)"
            )
        return cls(int(m.group(1)), int(m.group(2)), m.group(3) or default_kind)


@dataclass(frozen=True)
class Plan:
    """Spans with disjoint removed blocks, sorted by start, for a model of `num_blocks` blocks."""

    spans: tuple[Span, ...]
    num_blocks: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "spans", tuple(sorted(self.spans)))
        problems = []
        if self.num_blocks < 1:
            problems.append(f"num_blocks must be >= 1, got {self.num_blocks}")
        for span in self.spans:
            if span.end > self.num_blocks - 1:
                problems.append(f"span {span} ends past the last block ({self.num_blocks - 1})")
        kinds = kind_names()
        for span in self.spans:
            if span.kind.partition(":")[0] not in kinds:
                problems.append(f"span {span} has unknown translator kind {span.kind!r} (known: {', '.join(kinds)})")
                continue
            try:  # a parametrized kind's parameter (`lowrank:96`), or none where none is taken
                kind_class(span.kind)
            except PlanError as e:
                problems.append(f"span {span}: {e}")
        for a, b in zip(self.spans, self.spans[1:]):
            if b.start < a.end:
                problems.append(
                    f"spans {a} and {b} overlap: removed blocks must be disjoint (a span may start where another ends)"
                )
        if problems:
            raise PlanError("invalid plan: " + "; ".join(problems))

    @classmethod
    def of(cls, spans: Iterable[Span | Sequence | str], num_blocks: int) -> Plan:
        """Build a plan from `Span`s, `[s, e, kind]` lists or `"s→e:kind"` strings."""
        out = []
        for s in spans:
            if isinstance(s, Span):
                out.append(s)
            elif isinstance(s, str):
                out.append(Span.parse(s))
            else:
                if len(s) not in (2, 3):
                    raise PlanError(f"span {s!r}: expected [start, end, kind]")
                out.append(Span(int(s[0]), int(s[1]), *(s[2:] or ())))
        return cls(tuple(out), num_blocks)

    @classmethod
    def parse(cls, text: str, num_blocks: int, default_kind: str = "linear") -> Plan:
        """Parse `"9→11:linear,3→4:identity"`; an empty string (or `"original"`, as `str` prints it) is the original model."""
        if text.strip() == "original":
            text = ""
        parts = [p for p in text.split(",") if p.strip()]
        return cls(tuple(Span.parse(p, default_kind) for p in parts), num_blocks)

    @property
    def removed(self) -> frozenset[int]:
        return frozenset(b for s in self.spans for b in s.removed)

    @property
    def kept(self) -> tuple[int, ...]:
        removed = self.removed
        return tuple(b for b in range(self.num_blocks) if b not in removed)

    def steps(self) -> list[tuple[str, int | Span]]:
        """Execution order: `("block", b)` for kept blocks and `("span", span)` for translators."""
        starts = {s.start: s for s in self.spans}
        out: list[tuple[str, int | Span]] = []
        b = -1
        while b < self.num_blocks - 1:
            # chained spans (0→2, 2→4) run one after the other
            if b in starts:
                span = starts[b]
                out.append(("span", span))
                b = span.end
                continue
            b += 1
            out.append(("block", b))
        return out

    def to_json(self) -> list[list]:
        return [s.to_json() for s in self.spans]

    def __str__(self) -> str:
        if not self.spans:
            return "original"
        return ", ".join(f"{s}:{s.kind}" for s in self.spans)

    def dumps(self) -> str:
        return json.dumps({"num_blocks": self.num_blocks, "spans": self.to_json()})

    @classmethod
    def loads(cls, text: str) -> Plan:
        try:
            d = json.loads(text)
            spans, num_blocks = d["spans"], d["num_blocks"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PlanError(
                f'cannot read plan {text!r}: expected {{"num_blocks": L, "spans": [[s, e, kind], ...]}} ({e})'
            ) from None
        return cls.of(spans, num_blocks)
