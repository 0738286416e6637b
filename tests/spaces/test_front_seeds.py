"""Seeding from the statistics (issue 12, item 4): the exact dynamic programme against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toast.spaces import Plan, PlanSpace, Span, front_seed_plans, translator_class
from toast.spaces._space import predicted_front

KINDS_COST = {"identity": 0.0, "linear": 0.3, "folded": 0.0}


def setting(L: int, kinds: tuple[str, ...], seed: int):
    """Random span scores (a random subset of spans unscored) and a random additive cost per block and kind."""
    rng = np.random.default_rng(seed)
    block = rng.uniform(1.0, 2.0, L)
    ranked = []
    for s in range(-1, L - 1):
        for e in range(s + 1, L):
            for kind in kinds:
                if rng.random() < 0.15:
                    continue  # not every span is ranked (e.g. longer than the removal limit)
                ranked.append((Span(s, e, kind), float(rng.exponential(1.0) * (e - s) ** 0.5)))

    def cost(plan: Plan) -> float:
        return float(block.sum() - sum(block[b] for b in plan.removed) + sum(KINDS_COST[s.kind] for s in plan.spans))

    return ranked, cost


def brute_force(ranked, space: PlanSpace, cost, k: int, budget: float | None) -> set[float]:
    """The minimum predicted loss at each level, over every plan of the space whose spans are all ranked."""
    score = {span: s for span, s in ranked}
    candidates = []
    for plan in space.enumerate():
        if not plan.spans or any(s not in score for s in plan.spans):
            continue
        if any(translator_class(s.kind).refuse_span(s, plan) for s in plan.spans):
            continue
        candidates.append((sum(score[s] for s in plan.spans), cost(plan)))
    base, cheapest = cost(Plan((), space.num_blocks)), min(c for _, c in candidates)
    levels = [cheapest + (base - cheapest) * i / k for i in range(k)] + ([budget] if budget is not None else [])
    return {round(min(loss for loss, c in candidates if c <= level * (1 + 1e-12)), 9) for level in levels}


@pytest.mark.parametrize(
    ("L", "kinds", "max_removed", "seed", "budget"),
    [
        (5, ("identity", "linear"), None, 0, None),
        (6, ("identity", "linear"), 3, 1, 6.0),
        (5, ("identity", "linear", "folded"), None, 2, None),
        (6, ("linear", "folded"), 4, 3, 5.5),
        (4, ("identity",), None, 4, None),
    ],
)
def test_the_plan_at_each_cost_level_has_the_least_predicted_loss(L, kinds, max_removed, seed, budget):
    ranked, cost = setting(L, kinds, seed)
    space = PlanSpace(num_blocks=L, kinds=kinds, max_removed=max_removed)
    plans = front_seed_plans(ranked, space, cost, k=8, budget=budget)
    score = dict(ranked)
    assert plans and len(set(plans)) == len(plans)
    assert all(space.contains(p) and space.feasible(p) for p in plans)
    losses = {round(sum(score[s] for s in p.spans), 9) for p in plans}
    assert losses == brute_force(ranked, space, cost, 8, budget)
    assert [cost(p) for p in plans] == sorted(cost(p) for p in plans)  # cheapest level first


def test_no_ranked_span_gives_no_seeds():
    space = PlanSpace(num_blocks=4, kinds=("identity",))
    assert front_seed_plans([], space, lambda p: 1.0) == []
    assert front_seed_plans([(Span(0, 1, "identity"), math.inf)], space, lambda p: 1.0) == []


@pytest.mark.parametrize(
    ("L", "kinds", "max_removed", "seed"),
    [(5, ("identity", "linear"), None, 5), (6, ("identity", "linear"), 3, 6), (5, ("linear", "folded"), None, 7)],
)
def test_predicted_front_is_the_brute_force_pareto_set(L, kinds, max_removed, seed):
    """Every (loss, cost) pair no plan beats on both, found by the DP, and only those (ties aside)."""
    ranked, cost = setting(L, kinds, seed)
    space = PlanSpace(num_blocks=L, kinds=kinds, max_removed=max_removed)
    score = dict(ranked)
    points = []
    for plan in space.enumerate():
        if plan.spans and all(s in score for s in plan.spans) and space.contains(plan):
            points.append((sum(score[s] for s in plan.spans), cost(plan)))
    expected = {
        (round(loss, 9), round(c, 9))
        for loss, c in points
        if not any(l2 <= loss and c2 <= c and (l2 < loss or c2 < c) for l2, c2 in points)
    }
    front = predicted_front(score, space, cost)
    assert {(round(loss, 9), round(c, 9)) for loss, c, _ in front} == expected
    for loss, c, plan in front:  # each item is its plan's own predicted loss and cost, the cheapest first
        assert loss == pytest.approx(sum(score[s] for s in plan.spans)) and c == pytest.approx(cost(plan))
    assert [c for _, c, _ in front] == sorted(c for _, c, _ in front)
