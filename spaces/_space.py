"""The search space: plans encoded for samplers as one categorical per block, with constraints,
counting and enumeration, and the seed plans that the similarity analysis ranks best.

The genome has one gene per block, `"keep"` or a translator kind. A run of consecutive blocks with
the same kind is one span (its translator maps the state before the run to the state after it);
adjacent runs of different kinds chain. Every genome decodes to a valid plan, so crossover and
mutation never produce an invalid one; and distinct genomes decode to distinct plans, so the space
holds exactly `(1 + K)^L` plans before constraints.

Plans in which two chained spans share a kind (`0→2:linear, 2→4:linear`) have no genome: `encode`
raises, and `canonical` merges such spans into one (`0→4:linear`). The merge is exact for
`identity`; for a fitted kind it is a different translator (one map fitted over the whole run).

A kind that folds into its source block (`needs_source_block`: `folded`) is not a choice of the first gene
(its span would start at -1), and a genome whose run of such a kind directly follows another run (its source
block removed) violates a constraint of the space: it is infeasible, counted out of `size` and `enumerate`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PlanError, SpaceError
from ._plan import Plan, Span
from ._translators import create_translator, list_translators, translator_class

if TYPE_CHECKING:  # optuna is imported only where a distribution is built
    from optuna.distributions import CategoricalDistribution

    from ._stats import ActivationStats

KEEP = "keep"
ENUMERATION_LIMIT = 5000


def canonical(plan: Plan) -> Plan:
    """The plan with every chain of same-kind spans (`0→2:linear, 2→4:linear`) merged into one span (`0→4:linear`)."""
    merged: list[Span] = []
    for span in plan.spans:
        last = merged[-1] if merged else None
        if last is not None and last.end == span.start and last.kind == span.kind:
            merged[-1] = Span(last.start, span.end, span.kind)
        else:
            merged.append(span)
    return Plan(tuple(merged), plan.num_blocks)


@dataclass(frozen=True, kw_only=True)
class PlanSpace:
    """Plans of `num_blocks` blocks whose spans use `kinds`, within `max_removed` / `min_kept`.

    `kinds` may also be given as `"identity,linear"`; it is stored as a tuple, in the order given
    (the order of each gene's choices after `"keep"`).
    """

    num_blocks: int
    kinds: tuple[str, ...] = ("identity", "linear")
    max_removed: int | None = None
    min_kept: int | None = None

    def __post_init__(self) -> None:
        kinds = self.kinds
        if isinstance(kinds, str):
            kinds = [k.strip() for k in kinds.split(",") if k.strip()]
        object.__setattr__(self, "kinds", tuple(kinds))
        problems = []
        L = self.num_blocks
        if not _is_int(L) or L < 1:
            problems.append(f"num_blocks must be an integer >= 1, got {L!r}")
            L = None
        known = list_translators()
        if not self.kinds:
            problems.append(f"`kinds` must name at least one translator kind (known: {', '.join(known)})")
        for kind in self.kinds:
            if kind == KEEP:
                problems.append(
                    f"{KEEP!r} is the gene of a kept block, not a translator kind (known: {', '.join(known)})"
                )
            elif kind.partition(":")[0] not in known:
                problems.append(f"unknown translator kind {kind!r} (known: {', '.join(known)})")
            else:
                try:
                    translator_class(kind)  # `lowrank:32` and `lowrank:96` are two kinds; a bare `lowrank` is none
                except PlanError as e:
                    problems.append(str(e))
        duplicates = sorted({k for k in self.kinds if self.kinds.count(k) > 1})
        if duplicates:
            problems.append(f"kinds lists {', '.join(map(repr, duplicates))} more than once")
        for name in ("max_removed", "min_kept"):
            value = getattr(self, name)
            if value is None:
                continue
            if not _is_int(value):
                problems.append(f"`{name}` must be an integer or None, got {value!r}")
            elif value < 0 or (L is not None and value > L):
                problems.append(
                    f"`{name}` must be between 0 and the model's {L if L is not None else 'num_blocks'} blocks, got {value}"
                )
        if problems:
            raise SpaceError("invalid search space: " + "; ".join(problems))

    # ------------------------------------------------------------ the genome

    @property
    def param_names(self) -> tuple[str, ...]:
        """`b00 … b{L-1}`, zero-padded so that they sort in block order."""
        width = max(2, len(str(self.num_blocks - 1)))
        return tuple(f"b{b:0{width}d}" for b in range(self.num_blocks))

    @property
    def choices(self) -> tuple[str, ...]:
        """A gene's choices: `"keep"` then the kinds (the first gene's, `gene_choices(0)`, may hold fewer)."""
        return (KEEP, *self.kinds)

    @property
    def sourced_kinds(self) -> frozenset[str]:
        """The kinds whose span needs its source block kept (`needs_source_block`)."""
        return frozenset(k for k in self.kinds if translator_class(k).needs_source_block)

    def gene_choices(self, b: int) -> tuple[str, ...]:
        """Gene `b`'s choices: `choices`, less the kinds that need a source block for the first gene."""
        return tuple(c for c in self.choices if b > 0 or c not in self.sourced_kinds)

    def distributions(self) -> dict[str, CategoricalDistribution]:
        """Optuna distributions of the genome, one categorical per block."""
        from optuna.distributions import CategoricalDistribution

        return {name: CategoricalDistribution(self.gene_choices(b)) for b, name in enumerate(self.param_names)}

    def suggest(self, trial) -> Plan:
        """Ask an Optuna trial for a genome and decode it."""
        return self.decode(
            {name: trial.suggest_categorical(name, self.gene_choices(b)) for b, name in enumerate(self.param_names)}
        )

    def refusals(self, plan: Plan) -> list[str]:
        """One line per span of `plan` whose kind refuses it there (a folded span with no kept source block)."""
        out = []
        for span in plan.spans:
            reason = translator_class(span.kind).refuse_span(span, plan)
            if reason:
                out.append(reason)
        return out

    def decode(self, genome: Mapping[str, str] | Sequence[str]) -> Plan:
        """The plan of a genome: a mapping from `param_names` (other keys are ignored) or a sequence of genes."""
        genes = self._genes(genome)
        spans = []
        b = 0
        while b < self.num_blocks:
            kind = genes[b]
            if kind == KEEP:
                b += 1
                continue
            first = b
            while b + 1 < self.num_blocks and genes[b + 1] == kind:
                b += 1
            spans.append(Span(first - 1, b, kind))
            b += 1
        return Plan(tuple(spans), self.num_blocks)

    def encode(self, plan: Plan) -> dict[str, str]:
        """The genome of a plan (inverse of `decode`); raises `PlanError` for a plan the space cannot hold."""
        self._check_plan(plan)
        problems = [
            f"spans {a}:{a.kind} and {b}:{b.kind} chain with the same kind, which the genome reads as one span "
            f"{a.start}→{b.end}:{a.kind} (use canonical(plan) to merge them)"
            for a, b in zip(plan.spans, plan.spans[1:])
            if a.end == b.start and a.kind == b.kind
        ]
        problems += [  # a span at -1 of a kind that needs a source block: the first gene cannot hold it
            translator_class(s.kind).refuse_span(s) for s in plan.spans if s.start < 0 and s.kind in self.sourced_kinds
        ]
        if problems:
            raise PlanError(f"plan {plan} has no genome: " + "; ".join(problems))
        genes = [KEEP] * self.num_blocks
        for span in plan.spans:
            for b in span.removed:
                genes[b] = span.kind
        return dict(zip(self.param_names, genes))

    def contains(self, plan: Plan) -> bool:
        """Whether `plan` has a genome in this space and satisfies its constraints."""
        try:
            self.encode(plan)
        except PlanError:
            return False
        return self.feasible(plan)

    # ------------------------------------------------------------ constraints

    @property
    def removal_limit(self) -> int:
        """The most blocks a feasible plan removes (both constraints together)."""
        limit = self.num_blocks
        if self.max_removed is not None:
            limit = min(limit, self.max_removed)
        if self.min_kept is not None:
            limit = min(limit, self.num_blocks - self.min_kept)
        return limit

    def constraint_violations(self, plan: Plan) -> list[float]:
        """One value per set constraint (`max_removed`, then `min_kept`); `<= 0` is satisfied (Optuna's convention)."""
        self._check_plan(plan, kinds=False)
        removed = len(plan.removed)
        out = []
        if self.max_removed is not None:
            out.append(float(removed - self.max_removed))
        if self.min_kept is not None:
            out.append(float(self.min_kept - (self.num_blocks - removed)))
        if self.sourced_kinds:
            out.append(float(len(self.refusals(plan))))
        return out

    def feasible(self, plan: Plan) -> bool:
        return all(v <= 0 for v in self.constraint_violations(plan))

    # ------------------------------------------------------------ counting and enumeration

    def size(self) -> int:
        """The number of distinct feasible plans.

        Genomes and plans correspond one to one, and a genome's plan removes exactly its non-keep
        genes, so the count is `Σ_{r ≤ limit} C(L, r)·K^r` (no enumeration).
        """
        K, L = len(self.kinds), self.num_blocks
        if not self.sourced_kinds:
            return sum(math.comb(L, r) * K**r for r in range(self.removal_limit + 1))
        return self._sourced_size()

    def _sourced_size(self) -> int:
        """`size` when some kinds need a kept source block: genomes counted by their last gene and removals."""
        sourced, L, limit = self.sourced_kinds, self.num_blocks, self.removal_limit
        plain = len(self.kinds) - len(sourced)
        # state: KEEP, "" (a run of a plain kind, or the start), or a sourced kind; value: count per removals
        counts: dict[str, list[int]] = {"": [1] + [0] * L}

        def add(into: dict[str, list[int]], state: str, row: list[int], shift: int, times: int) -> None:
            acc = into.setdefault(state, [0] * (L + 1))
            for r, c in enumerate(row[: L + 1 - shift]):
                acc[r + shift] += c * times

        for _ in range(L):
            nxt: dict[str, list[int]] = {}
            for state, row in counts.items():
                add(nxt, KEEP, row, 0, 1)
                add(nxt, "", row, 1, plain)
                for kind in sourced:
                    if state in (KEEP, kind):
                        add(nxt, kind, row, 1, 1)
            counts = nxt
        return sum(row[r] for row in counts.values() for r in range(limit + 1))

    def enumerate(self, limit: int = ENUMERATION_LIMIT) -> Iterator[Plan]:
        """Every feasible plan, fewest removed blocks first; raises `SpaceError` if there are more than `limit`."""
        size = self.size()
        if size > limit:
            raise SpaceError(
                f"the search space holds {size} plans, more than the {limit} that exhaustive enumeration allows: "
                "narrow it (max_removed, min_kept, fewer translator kinds) or use a sampler"
            )
        return self._enumerate()

    def _enumerate(self) -> Iterator[Plan]:
        for r in range(self.removal_limit + 1):
            for blocks in itertools.combinations(range(self.num_blocks), r):
                for kinds in itertools.product(*(self.gene_choices(b)[1:] for b in blocks)):
                    genes = [KEEP] * self.num_blocks
                    for b, kind in zip(blocks, kinds):
                        genes[b] = kind
                    plan = self.decode(genes)
                    if not self.sourced_kinds or self.feasible(plan):
                        yield plan

    # ------------------------------------------------------------ helpers

    def _genes(self, genome: Mapping[str, str] | Sequence[str]) -> list[str]:
        if isinstance(genome, Mapping):
            missing = [n for n in self.param_names if n not in genome]
            if missing:
                raise PlanError(
                    f"genome lacks the genes {', '.join(missing)} (expected {self.param_names[0]} … {self.param_names[-1]})"
                )
            genes = [genome[n] for n in self.param_names]
        elif isinstance(genome, (str, bytes)):
            raise PlanError(f"a genome is a mapping or a sequence of genes, not the string {genome!r}")
        else:
            genes = list(genome)
            if len(genes) != self.num_blocks:
                raise PlanError(f"genome has {len(genes)} genes, expected one per block ({self.num_blocks})")
        bad = sorted({repr(g) for g in genes if g not in self.choices})
        if bad:
            raise PlanError(f"genome has unknown genes {', '.join(bad)} (choices: {', '.join(self.choices)})")
        if genes and genes[0] in self.sourced_kinds:
            raise PlanError(f"{translator_class(genes[0]).refuse_span(Span(-1, 0, genes[0]))} (the first gene)")
        return genes

    def _check_plan(self, plan: Plan, kinds: bool = True) -> None:
        problems = []
        if plan.num_blocks != self.num_blocks:
            problems.append(f"it is for {plan.num_blocks} blocks, the space for {self.num_blocks}")
        if kinds:
            problems += [
                f"span {s} uses kind {s.kind!r}, not in this space's kinds ({', '.join(self.kinds)})"
                for s in plan.spans
                if s.kind not in self.kinds
            ]
        if problems:
            raise PlanError(f"plan {plan} does not belong to this space: " + "; ".join(problems))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ================================================================ seeding from the similarity analysis


def rank_spans(
    stats: ActivationStats, kinds: Iterable[str] = ("linear",), max_len: int | None = None
) -> list[tuple[Span, float]]:
    """Every single span of every kind scored by its relative fit residual, best first.

    The score is the translator's mean squared error divided by the target state's mean variance
    (`1 - R²` for a least-squares fit), all from the statistics. `max_len` bounds the blocks a span
    removes. Ties go to the longer span (it saves more), then the earlier one.
    """
    kinds = tuple(kinds)
    L = stats.num_states - 1
    out = []
    for s in range(-1, L - 1):
        for e in range(s + 1, L):
            if max_len is not None and e - s > max_len:
                break
            target = stats.pair(s + 1, e + 1)
            variance = float(target.syy.trace()) / (target.n * target.syy.shape[0])
            for kind in kinds:
                cls = translator_class(kind)
                if cls.refuse_span(Span(s, e, kind)):
                    continue
                pair = cls.span_stats(stats, Span(s, e, kind))
                residual = create_translator(kind).fit(pair).residual(pair)
                score = residual / variance if variance > 0 else (0.0 if residual == 0 else math.inf)
                out.append((Span(s, e, kind), score))
    order = {kind: i for i, kind in enumerate(kinds)}
    out.sort(key=lambda item: (item[1], -(item[0].end - item[0].start), item[0].start, order[item[0].kind]))
    return out


def seed_plans(
    stats: ActivationStats | None,
    space: PlanSpace,
    cost: Callable[[Plan], float],
    budget: float | None,
    k: int = 10,
    *,
    ranked: Sequence[tuple[Span, float]] | None = None,
) -> list[Plan]:
    """Plans to enqueue before the search: the `k` best single spans, then greedy combinations.

    Each of the `k` single-span plans (feasible in `space`, lowest relative residual first) is grown
    by repeatedly adding the best-ranked span whose removed blocks are disjoint from the plan's
    (chaining allowed; a span that would chain with one of the same kind is skipped, since the
    genome cannot hold that plan), while the plan stays feasible and, when a `budget` is given, until
    `cost(plan) <= budget`; every intermediate plan is returned. No duplicates; every plan is in
    `space`. `ranked` (from `rank_spans`) replaces the analysis of `stats`.
    """
    if ranked is None:
        ranked = rank_spans(stats, kinds=space.kinds, max_len=space.removal_limit)
    ranked = [(span, score) for span, score in ranked if span.kind in space.kinds and span.end < space.num_blocks]
    out: list[Plan] = []
    seen: set[Plan] = set()

    def add(plan: Plan) -> None:
        if plan not in seen:
            seen.add(plan)
            out.append(plan)

    singles = []
    for span, _ in ranked:
        if len(singles) == k:
            break
        plan = Plan((span,), space.num_blocks)
        if space.feasible(plan):
            singles.append(plan)
    for plan in singles:
        add(plan)
    for plan in singles:
        while budget is None or cost(plan) > budget:
            grown = _grow(plan, ranked, space)
            if grown is None:
                break
            plan = grown
            add(plan)
    return out


def _grow(plan: Plan, ranked: Sequence[tuple[Span, float]], space: PlanSpace) -> Plan | None:
    """`plan` with the best-ranked span that keeps it disjoint, encodable and feasible; None if there is none."""
    removed = plan.removed
    for span, _ in ranked:
        if removed.intersection(span.removed):
            continue
        if any((s.end == span.start or span.end == s.start) and s.kind == span.kind for s in plan.spans):
            continue
        grown = Plan(plan.spans + (span,), plan.num_blocks)
        if space.feasible(grown):
            return grown
    return None


def predicted_front(
    scores: Mapping[Span, float], space: PlanSpace, cost: Callable[[Plan], float]
) -> list[tuple[float, float, Plan]]:
    """Every plan of `space` that no other beats on both predicted loss and cost, as `(loss, cost, plan)`.

    A plan's predicted loss is the sum of its spans' `scores` (spans without a finite score are never used) and its
    cost is `cost`, taken as additive over spans (a span's cost is `cost(plan with that span) - cost(empty plan)`).
    A dynamic programme over block positions keeps, per (state reached, last step, blocks removed), the partial
    plans no other beats on both, so the front is exact under that model. Only plans with spans, feasible and
    encodable in `space`, are returned, cheapest first.
    """
    L = space.num_blocks
    scores = {
        span: score
        for span, score in scores.items()
        if span.kind in space.kinds and span.end < L and math.isfinite(score) and not _span_refused(span)
    }
    if not scores:
        return []
    base = cost(Plan((), L))
    delta = {span: cost(Plan((span,), L)) - base for span in scores}
    starting: dict[int, list[Span]] = {}
    for span in sorted(scores, key=lambda s: (s.start, s.end, s.kind)):
        starting.setdefault(span.start, []).append(span)
    # partial plans reaching state h_{p+1} (after block p; p = -1: the embeddings), keyed by
    # (p, last step: KEEP or the last span's kind, blocks removed): (predicted loss, cost delta, spans)
    fronts: dict[tuple[int, str, int], list[tuple[float, float, tuple[Span, ...]]]] = {(-1, KEEP, 0): [(0.0, 0.0, ())]}
    for p in range(-1, L - 1):
        for (q, last, removed), items in sorted(fronts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            if q != p:
                continue
            for loss, d, spans in _pareto(items):
                _push(fronts, (p + 1, KEEP, removed), (loss, d, spans))
                for span in starting.get(p, ()):
                    if span.kind == last:  # two chained spans of one kind have no genome
                        continue
                    if translator_class(span.kind).needs_source_block and last != KEEP:
                        continue  # its source block is removed by the span before it
                    n = removed + span.end - span.start
                    if n > space.removal_limit:
                        continue
                    _push(fronts, (span.end, span.kind, n), (loss + scores[span], d + delta[span], spans + (span,)))
    candidates = []
    for (p, _, _), items in fronts.items():
        if p != L - 1:
            continue
        for loss, _, spans in _pareto(items):
            plan = Plan(spans, L)
            if spans and space.feasible(plan) and space.contains(plan):
                candidates.append((loss, cost(plan), plan))
    return _pareto(candidates)


def front_seed_plans(
    ranked: Sequence[tuple[Span, float]],
    space: PlanSpace,
    cost: Callable[[Plan], float],
    k: int = 10,
    budget: float | None = None,
) -> list[Plan]:
    """The predicted-best plan at each of `k` cost levels, exactly, under an additive model of a plan's loss.

    A plan's predicted loss is the sum of its spans' scores (`rank_spans`: relative fit residuals, from the
    statistics alone, no forward pass): `predicted_front` finds the minimum predicted loss at every cost exactly.
    Levels run evenly from the cheapest feasible plan's cost to the original's (exclusive), plus `budget` when
    given; every plan is in `space`, feasible, without duplicates, cheapest level first.
    """
    if k <= 0:
        return []
    candidates = predicted_front(dict(ranked), space, cost)
    if not candidates:
        return []
    base = cost(Plan((), space.num_blocks))
    cheapest = min(c for _, c, _ in candidates)
    levels = [cheapest + (base - cheapest) * i / k for i in range(k)]
    if budget is not None:
        levels.append(budget)
    out: list[Plan] = []
    for level in sorted(levels):
        within = [(loss, c, str(plan), plan) for loss, c, plan in candidates if c <= level * (1 + 1e-12)]
        if within:
            best = min(within)[3]
            if best not in out:
                out.append(best)
    return out


def _span_refused(span: Span) -> bool:
    """Whether `span`'s kind refuses it on its own (e.g. `folded` from the embeddings)."""
    return bool(translator_class(span.kind).refuse_span(span))


def _push(fronts: dict, key: tuple, item: tuple) -> None:
    fronts.setdefault(key, []).append(item)


def _pareto(items: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """The `(loss, cost, spans or plan)` items no other beats on both, cheapest first (ties: the first in plan
    order)."""
    out, best = [], math.inf
    for item in sorted(items, key=lambda it: (it[1], it[0], str(it[2]))):
        if item[0] < best:
            out.append(item)
            best = item[0]
    return out
