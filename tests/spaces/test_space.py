"""The search space: the genome read by hand, its round trips, counts against brute force over every
genome and an independent recursive enumeration of plans, constraints, and the seeds ranked from
statistics checked against least squares on the raw activations."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from toast.errors import SpaceError
from toast.spaces import (
    Plan,
    PlanError,
    PlanSpace,
    Span,
    StatsAccumulator,
    ToastError,
    list_translators,
    rank_spans,
    seed_plans,
)
from toast.spaces._space import canonical

KINDS = ("identity", "linear")


def plan(text: str, num_blocks: int) -> Plan:
    return Plan.parse(text, num_blocks)


def random_genes(rng: np.random.Generator, space: PlanSpace) -> list[str]:
    return [space.choices[i] for i in rng.integers(0, len(space.choices), space.num_blocks)]


# ================================================================ settings


def test_defaults_and_kinds_as_text():
    space = PlanSpace(num_blocks=12)
    assert space.kinds == KINDS and space.max_removed is None and space.min_kept is None
    assert PlanSpace(num_blocks=4, kinds="linear, identity").kinds == ("linear", "identity")
    assert PlanSpace(num_blocks=4, kinds=["ridge"]).kinds == ("ridge",)
    with pytest.raises(TypeError):
        PlanSpace(12)  # keyword-only


def test_unknown_kind_names_the_known_ones():
    known = ", ".join(list_translators())  # every registered kind, so a new kind needs no edit here
    assert {"identity", "linear", "ridge"} <= set(list_translators())
    with pytest.raises(SpaceError, match=re.escape(f"unknown translator kind 'no_such_kind' (known: {known})")):
        PlanSpace(num_blocks=4, kinds=("linear", "no_such_kind"))


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpaceError) as info:
        PlanSpace(num_blocks=4, kinds=("linear", "no_such_kind", "linear", "keep"), max_removed=7, min_kept=-1)
    message = str(info.value)
    for part in [
        "'no_such_kind'",
        "'linear' more than once",
        "'keep' is the gene of a kept block",
        "`max_removed` must be between 0 and the model's 4 blocks, got 7",
        "`min_kept` must be between 0 and the model's 4 blocks, got -1",
    ]:
        assert part in message
    assert isinstance(info.value, ToastError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "kwargs, rule",
    [
        (dict(num_blocks=0), "num_blocks must be an integer >= 1"),
        (dict(num_blocks=2.0), "num_blocks must be an integer >= 1"),
        (dict(num_blocks=4, kinds=()), "at least one translator kind"),
        (dict(num_blocks=4, max_removed=1.5), "`max_removed` must be an integer"),
        (dict(num_blocks=4, min_kept=True), "`min_kept` must be an integer"),
        (dict(num_blocks=4, min_kept=5), "`min_kept` must be between 0 and the model's 4 blocks"),
    ],
)
def test_each_rule(kwargs, rule):
    with pytest.raises(SpaceError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        PlanSpace(**kwargs)


def test_import_does_not_load_optuna():
    code = "import sys, toast.spaces; print('optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ================================================================ the genome


def test_distributions_one_categorical_per_block_in_sorting_order():
    from optuna.distributions import CategoricalDistribution

    for L, first, last in [(1, "b00", "b00"), (12, "b00", "b11"), (101, "b000", "b100")]:
        space = PlanSpace(num_blocks=L, kinds=("linear", "identity"))
        dists = space.distributions()
        names = list(dists)
        assert len(dists) == L and names[0] == first and names[-1] == last
        assert sorted(names) == names == list(space.param_names)
        assert all(
            isinstance(d, CategoricalDistribution) and d.choices == ("keep", "linear", "identity")
            for d in dists.values()
        )


L6 = PlanSpace(num_blocks=6)
K, Id, Li = "keep", "identity", "linear"


@pytest.mark.parametrize(
    "genes, expected",
    [
        ([K, K, K, K, K, K], ""),  # the original model
        ([K, K, K, Li, Li, Li], "2→5:linear"),  # a run ending at the last block
        ([Li, K, K, K, K, K], "-1→0:linear"),  # block 0: from the embeddings' output
        ([Id, Id, K, K, K, K], "-1→1:identity"),
        ([K, Id, Id, Li, Li, K], "0→2:identity,2→4:linear"),  # runs of different kinds chain
        ([Li, Id, Li, K, Id, K], "-1→0:linear,0→1:identity,1→2:linear,3→4:identity"),
        ([Li, Li, Li, Li, Li, Li], "-1→5:linear"),  # every block
        ([Id, K, Id, K, Id, K], "-1→0:identity,1→2:identity,3→4:identity"),
    ],
)
def test_decode_by_hand(genes, expected):
    assert L6.decode(genes) == plan(expected, 6)
    assert L6.decode(dict(zip(L6.param_names, genes))) == plan(expected, 6)
    assert L6.encode(plan(expected, 6)) == dict(zip(L6.param_names, genes))


def test_decode_reads_only_the_genes_of_a_mapping():
    genome = {**L6.encode(plan("2→4:linear", 6)), "probe_lr": 0.1}
    assert L6.decode(genome) == plan("2→4:linear", 6)


@pytest.mark.parametrize(
    "genome, rule",
    [
        (["keep"] * 5, "5 genes, expected one per block (6)"),
        (["keep"] * 5 + ["ridge"], "unknown genes 'ridge' (choices: keep, identity, linear)"),
        ({"b00": "keep"}, "lacks the genes b01, b02"),
        ("keepkeep", "not the string"),
    ],
)
def test_bad_genomes(genome, rule):
    with pytest.raises(PlanError, match=rule.replace("(", r"\(").replace(")", r"\)")):
        L6.decode(genome)


def test_random_genomes_decode_to_valid_plans_that_encode_back():
    rng = np.random.default_rng(0)
    for L, kinds in [(1, KINDS), (6, KINDS), (12, ("identity", "linear", "ridge")), (24, ("linear",))]:
        space = PlanSpace(num_blocks=L, kinds=kinds)
        for _ in range(500):
            genes = random_genes(rng, space)
            p = space.decode(genes)
            assert isinstance(p, Plan) and p.num_blocks == L
            # removed blocks are exactly the non-keep genes, and each carries its span's kind
            assert p.removed == {b for b, g in enumerate(genes) if g != "keep"}
            for s in p.spans:
                assert all(genes[b] == s.kind for b in s.removed)
            assert list(space.encode(p).values()) == genes
            assert space.decode(space.encode(p)) == p


def random_canonical_plan(rng: np.random.Generator, L: int, kinds: tuple[str, ...]) -> Plan:
    """Spans placed left to right without the genome: random gaps, lengths and kinds."""
    spans: list[Span] = []
    s = -1
    while s < L - 1:
        s += int(rng.integers(0, 3))  # keep 0, 1 or 2 blocks (0 chains onto the previous span)
        if s >= L - 1:
            break
        e = int(rng.integers(s + 1, min(L, s + 4)))
        choices = [k for k in kinds if not (spans and spans[-1].end == s and spans[-1].kind == k)]
        spans.append(Span(s, e, choices[int(rng.integers(len(choices)))]))
        s = e
    return Plan(tuple(spans), L)


def test_encode_decode_round_trip_on_random_plans():
    rng = np.random.default_rng(1)
    for L in (1, 3, 12, 24):
        space = PlanSpace(num_blocks=L, kinds=("identity", "linear", "ridge"))
        for _ in range(300):
            p = random_canonical_plan(rng, L, space.kinds)
            assert space.decode(space.encode(p)) == p


def test_same_kind_chains_have_no_genome_and_canonical_merges_them():
    p = plan("0→2:linear,2→4:linear,5→6:identity", 8)
    with pytest.raises(PlanError, match=r"0→2:linear and 2→4:linear chain with the same kind.*canonical"):
        PlanSpace(num_blocks=8).encode(p)
    merged = canonical(p)
    assert merged == plan("0→4:linear,5→6:identity", 8)
    assert PlanSpace(num_blocks=8).decode(PlanSpace(num_blocks=8).encode(merged)) == merged
    assert canonical(plan("-1→0:identity,0→1:identity,1→3:identity", 8)) == plan("-1→3:identity", 8)
    assert canonical(merged) == merged
    # different kinds chained, or same kinds apart, are already canonical
    for text in ["0→2:linear,2→4:identity", "0→2:linear,3→4:linear", ""]:
        assert canonical(plan(text, 8)) == plan(text, 8)


def test_plans_outside_the_space_are_refused():
    space = PlanSpace(num_blocks=6, kinds=("linear",))
    with pytest.raises(PlanError, match="uses kind 'identity', not in this space's kinds"):
        space.encode(plan("1→2:identity", 6))
    with pytest.raises(PlanError, match="for 8 blocks, the space for 6"):
        space.encode(plan("1→2:linear", 8))
    assert not space.contains(plan("1→2:identity", 6))
    assert space.contains(plan("1→2:linear", 6))


class FakeTrial:
    def __init__(self, genes):
        self.genes, self.asked = genes, {}

    def suggest_categorical(self, name, choices):
        self.asked[name] = tuple(choices)
        return self.genes[len(self.asked) - 1]


def test_suggest_asks_each_gene_with_its_choices():
    trial = FakeTrial([K, Id, Id, Li, Li, K])
    assert L6.suggest(trial) == plan("0→2:identity,2→4:linear", 6)
    assert trial.asked == {name: ("keep", "identity", "linear") for name in L6.param_names}


# ================================================================ constraints


def test_constraint_violations_follow_optunas_sign():
    space = PlanSpace(num_blocks=6, max_removed=3, min_kept=4)
    assert space.removal_limit == 2
    assert space.constraint_violations(plan("", 6)) == [-3.0, -2.0]
    assert space.constraint_violations(plan("1→3:linear", 6)) == [-1.0, 0.0]
    assert space.constraint_violations(plan("-1→2:linear", 6)) == [0.0, 1.0]
    assert space.constraint_violations(plan("-1→4:linear", 6)) == [2.0, 3.0]
    assert [space.feasible(plan(t, 6)) for t in ["", "1→3:linear", "-1→2:linear"]] == [True, True, False]
    assert PlanSpace(num_blocks=6).constraint_violations(plan("-1→5", 6)) == []
    assert PlanSpace(num_blocks=6, min_kept=1).constraint_violations(plan("-1→5", 6)) == [1.0]
    # constraints read removed blocks, not the genome: a same-kind chain is still measured
    assert space.constraint_violations(plan("0→1:linear,1→2:linear", 6)) == [-1.0, 0.0]


# ================================================================ counting and enumeration


def all_plans(L: int, kinds: tuple[str, ...]) -> set[Plan]:
    """Every canonical plan, built span by span without the genome (an independent reference)."""
    out: set[Plan] = set()

    def walk(pos: int, spans: tuple[Span, ...]) -> None:  # blocks up to `pos` are decided
        if pos == L - 1:
            out.add(Plan(spans, L))
            return
        walk(pos + 1, spans)  # keep block pos + 1
        for e in range(pos + 1, L):
            for kind in kinds:
                if spans and spans[-1].end == pos and spans[-1].kind == kind:
                    continue
                walk(e, spans + (Span(pos, e, kind),))

    walk(-1, ())
    return out


@pytest.mark.parametrize(
    "L, kinds, max_removed, min_kept",
    [
        (1, KINDS, None, None),
        (4, KINDS, None, None),
        (5, KINDS, 2, None),
        (5, KINDS, None, 2),
        (6, KINDS, 4, 3),
        (4, ("identity", "linear", "ridge"), None, 1),
        (6, ("linear",), 0, None),
        (5, KINDS, None, 5),
    ],
)
def test_size_equals_brute_force_over_every_genome(L, kinds, max_removed, min_kept):
    space = PlanSpace(num_blocks=L, kinds=kinds, max_removed=max_removed, min_kept=min_kept)
    genomes = list(itertools.product(space.choices, repeat=L))
    assert len(genomes) == (1 + len(kinds)) ** L
    decoded = [space.decode(g) for g in genomes]
    assert len(set(decoded)) == len(genomes)  # distinct genomes, distinct plans
    assert set(decoded) == all_plans(L, kinds)  # and every plan has a genome

    limit = min(max_removed if max_removed is not None else L, L - (min_kept or 0))
    feasible = {p for p in decoded if len(p.removed) <= limit}
    assert {p for p in decoded if space.feasible(p)} == feasible
    listed = list(space.enumerate())
    assert space.size() == len(listed) == len(feasible)
    assert set(listed) == feasible


def test_size_of_large_spaces_without_enumerating():
    assert PlanSpace(num_blocks=24).size() == 3**24
    assert PlanSpace(num_blocks=24, max_removed=2).size() == 1 + 24 * 2 + 276 * 4
    assert PlanSpace(num_blocks=24, min_kept=24).size() == 1


def test_enumerate_refuses_spaces_over_the_limit():
    space = PlanSpace(num_blocks=12, max_removed=3)
    assert space.size() == 1 + 12 * 2 + 66 * 4 + 220 * 8
    with pytest.raises(SpaceError, match=r"holds 2049 plans, more than the 2000 .*max_removed"):
        space.enumerate(limit=2000)
    with pytest.raises(SpaceError, match="more than the 5000"):
        PlanSpace(num_blocks=12).enumerate()
    assert len(list(space.enumerate(limit=2049))) == 2049


# ================================================================ ranking and seeding


def synthetic_stats(L: int = 6, d: int = 4, seed: int = 0):
    """States h_0 … h_L of independent noise, except h_4 = h_2·W + b exactly (span 1→3 is linear) and
    h_6 = h_5 + small noise (span 4→5 is nearly the identity)."""
    g = torch.Generator().manual_seed(seed)
    B, N = 6, 20
    states = [torch.randn(B, N, d, generator=g, dtype=torch.float64) * (1 + k) + k for k in range(L + 1)]
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    states[4] = states[2] @ W + 3.0
    states[6] = states[5] + 0.01 * torch.randn(B, N, d, generator=g, dtype=torch.float64)
    acc = StatsAccumulator(L + 1, d, product_dtype=torch.float64)
    acc.update(states[:], None)
    return acc.result(), [s.reshape(-1, d).numpy() for s in states]


def relative_residual(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Reference: the fit on the stacked activations, its squared error over y's centered sum of squares."""
    if kind == "identity":
        pred = x
    else:
        xb = np.hstack([x, np.ones((len(x), 1))])
        pred = xb @ np.linalg.lstsq(xb, y, rcond=None)[0]
    return float(((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def test_rank_spans_puts_the_exact_linear_span_first():
    stats, arrays = synthetic_stats()
    ranked = rank_spans(stats)
    assert len(ranked) == 6 * 7 // 2  # every span s in -1…4, e in s+1…5
    assert {span for span, _ in ranked} == {Span(s, e, "linear") for s in range(-1, 5) for e in range(s + 1, 6)}
    (best, score), (second, _) = ranked[0], ranked[1]
    assert best == Span(1, 3, "linear") and score < 1e-10
    assert second == Span(4, 5, "linear")
    assert [s for _, s in ranked] == sorted(s for _, s in ranked)
    for span, score in ranked:
        assert score == pytest.approx(
            relative_residual(arrays[span.source], arrays[span.target], "linear"), rel=1e-8, abs=1e-10
        )


def test_rank_spans_identity_and_max_len():
    stats, arrays = synthetic_stats()
    ranked = rank_spans(stats, kinds=("identity", "linear"), max_len=2)
    assert all(span.end - span.start <= 2 for span, _ in ranked)
    assert len(ranked) == 2 * (6 + 5)
    scores = dict(ranked)
    assert scores[Span(4, 5, "identity")] == pytest.approx(
        relative_residual(arrays[5], arrays[6], "identity"), rel=1e-8
    )
    assert scores[Span(4, 5, "identity")] < 1e-3
    assert scores[Span(1, 3, "identity")] == pytest.approx(
        relative_residual(arrays[2], arrays[4], "identity"), rel=1e-8
    )
    assert scores[Span(1, 3, "identity")] > 0.5


def kept_cost(p: Plan) -> float:
    """A GFLOPs-like cost: one per kept block, a tenth per linear translator."""
    return len(p.kept) + 0.1 * sum(s.kind == "linear" for s in p.spans)


def test_seed_plans_by_hand():
    space = PlanSpace(num_blocks=6, kinds=KINDS, max_removed=4)
    ranked = [
        (Span(1, 3, "linear"), 0.0),
        (Span(-1, 5, "linear"), 0.01),  # infeasible: removes 6 blocks
        (Span(3, 4, "linear"), 0.02),  # chains onto 1→3 with the same kind: no genome, skipped
        (Span(4, 5, "identity"), 0.03),
        (Span(2, 4, "linear"), 0.04),
        (Span(-1, 0, "identity"), 0.05),
    ]
    got = seed_plans(None, space, kept_cost, 3.5, k=3, ranked=ranked)
    assert got == [
        plan("1→3:linear", 6),  # the 3 best feasible singles
        plan("3→4:linear", 6),
        plan("4→5:identity", 6),
        plan("1→3:linear,4→5:identity", 6),  # from 1→3 (cost 4.1): 3→4 skipped, 4→5 added; 3.1 <= 3.5, stop
        plan("3→4:linear,4→5:identity", 6),  # from 3→4 (5.1): 1→3 skipped, 4→5 added; 4.1, go on
        plan("-1→0:identity,3→4:linear,4→5:identity", 6),  # 2→4 overlaps, -1→0 added; 3.1, stop
        # from 4→5 (5.0): 1→3 gives 1→3,4→5, already listed; 3.1, stop
    ]
    # without a budget, grow while feasible: 1→3 then 4→5 then -1→0 (4 blocks removed), then nothing fits
    assert seed_plans(None, space, kept_cost, None, k=1, ranked=ranked) == [
        plan("1→3:linear", 6),
        plan("1→3:linear,4→5:identity", 6),
        plan("-1→0:identity,1→3:linear,4→5:identity", 6),
    ]
    tighter = PlanSpace(num_blocks=6, kinds=KINDS, max_removed=3)
    assert seed_plans(None, tighter, kept_cost, None, k=1, ranked=ranked) == [
        plan("1→3:linear", 6),
        plan("1→3:linear,4→5:identity", 6),
    ]
    # spans of kinds outside the space are never used
    only_linear = PlanSpace(num_blocks=6, kinds=("linear",), max_removed=4)
    assert all(
        s.kind == "linear" for p in seed_plans(None, only_linear, kept_cost, None, ranked=ranked) for s in p.spans
    )


def check_seeds(seeds, space, cost, budget, k, ranked):
    assert len(seeds) == len(set(seeds))
    singles = [Plan((s,), space.num_blocks) for s, _ in ranked if space.feasible(Plan((s,), space.num_blocks))][:k]
    assert seeds[: len(singles)] == singles
    for p in seeds:
        assert space.feasible(p)
        assert space.decode(space.encode(p)) == p  # encodable, so canonical
        assert canonical(p) == p
        if budget is not None and len(p.spans) > 1:
            # grown one span at a time from a plan still over the budget
            assert any(cost(Plan(tuple(s for s in p.spans if s != x), p.num_blocks)) > budget for x in p.spans)


@pytest.mark.parametrize("budget", [None, 3.5, 1.0])
def test_seed_plans_from_statistics(budget):
    stats, _ = synthetic_stats()
    space = PlanSpace(num_blocks=6, kinds=KINDS, max_removed=4)
    ranked = rank_spans(stats, kinds=space.kinds)
    seeds = seed_plans(stats, space, kept_cost, budget, k=5)
    check_seeds(seeds, space, kept_cost, budget, 5, ranked)
    assert seeds[0] == plan("1→3:linear", 6)
    if budget == 3.5:
        assert any(kept_cost(p) <= budget for p in seeds)
    if budget is None:  # grown until nothing fits: the best seed ends with 4 blocks removed
        assert any(len(p.removed) == 4 and set(plan("1→3:linear", 6).spans) <= set(p.spans) for p in seeds)
