"""The peers' methods as strategies of the study (issue 24): ShortGPT, SLEB, ReplaceMe and EvoPress, each checked
against its published rule computed here independently (from the raw hidden states, or by brute force)."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

from toast.errors import SettingsError
from toast.objectives import get_objectives
from toast.search.samplers import PROPOSED_BY, SamplerContext, get_sampler, list_samplers, one_shot_plans
from toast.search.samplers.testing import check_sampler, synthetic_scores, synthetic_stats
from toast.spaces import Plan, PlanSpace

L = 6


def context(space: PlanSpace, trials: int = 40, seed: int = 0, objectives="accuracy,gflops", **options):
    stats, states = synthetic_stats(space.num_blocks, seed=seed)
    ctx = SamplerContext(
        space=space, seed=seed, trials=trials, objectives=get_objectives(objectives), stats=stats, options=options
    )
    return ctx, states


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean())


def removed_sets(plans) -> list[frozenset[int]]:
    return [p.removed for p in plans]


def run(name: str, ctx: SamplerContext, score=None) -> optuna.Study:
    """A study of the strategy `name` for as many trials as its rule plans, scored by `score` (synthetic default)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec, space = get_sampler(name), ctx.space
    score = score or synthetic_scores(space, ctx.seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=spec.build(ctx))

    def objective(trial):
        return score(space.suggest(trial))

    study.optimize(objective, n_trials=min(ctx.trials, spec.planned(ctx)))
    return study


@pytest.mark.parametrize("name", list_samplers())
def test_every_registered_sampler_passes_the_conformance_suite(name):
    check_sampler(name, num_blocks=4 if get_sampler(name).enumerates else 5, trials=16)


def test_the_peers_are_registered_with_their_kinds():
    assert {"shortgpt", "sleb", "replaceme", "evopress"} <= set(list_samplers())
    assert list_samplers()[0] == "tpe-local"  # the default first, as --help lists them
    for name in ("shortgpt", "sleb", "evopress"):
        assert get_sampler(name).kinds == ("identity",) and not get_sampler(name).seeded
    assert get_sampler("replaceme").kinds[0] == "linear"
    assert get_sampler("sleb").sequential and get_sampler("evopress").sequential


def test_shortgpt_removes_the_blocks_of_least_block_influence():
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"))
    ctx, states = context(space)
    influence = [1 - mean_cosine(states[b], states[b + 1]) for b in range(L)]  # Men et al., Eq. 1
    order = sorted(range(L), key=lambda b: influence[b])
    assert len(set(order[:3])) == 3 and influence[order[0]] < influence[order[-1]]
    study = run("shortgpt", ctx)
    plans = [space.decode(t.params) for t in study.trials]
    assert removed_sets(plans) == [frozenset(order[:k]) for k in range(1, L)]
    assert all(s.kind == "identity" for p in plans for s in p.spans)
    assert all(t.system_attrs[PROPOSED_BY] == "shortgpt" for t in study.trials)


@pytest.mark.parametrize("kinds", [("identity", "linear"), ("identity", "linear", "folded")])
def test_replaceme_takes_the_closest_window_of_each_length(kinds):
    space = PlanSpace(num_blocks=L, kinds=kinds)
    ctx, states = context(space)
    plans = one_shot_plans(get_sampler("replaceme").build(ctx))
    expected = []
    for n in range(1, L):
        for kind in ("linear", "folded"):
            if kind not in kinds:
                continue
            first = 1 if kind == "folded" else 0  # folded multiplies into block i-1: it needs one before the window
            starts = range(first, L - n + 1)
            if not starts:
                continue
            i = min(starts, key=lambda i: 1 - mean_cosine(states[i], states[i + n]))
            expected.append(Plan.of([(i - 1, i + n - 1, kind)], L))
    assert plans == expected
    assert len(run("replaceme", ctx).trials) == len(expected)


def test_sleb_is_greedy_on_the_model_pruned_so_far():
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"), max_removed=4)
    ctx, _ = context(space, trials=100)
    score = synthetic_scores(space, seed=3)
    study = run("sleb", ctx, score)
    removed: set[int] = set()
    expected = []
    for _ in range(4):  # Song et al., Algorithm 1, by brute force over the same scoring
        candidates = [frozenset(removed | {b}) for b in range(L) if b not in removed]
        expected += candidates
        accuracy = {c: score(Plan.of([(b - 1, b, "identity") for b in sorted(c)], L))[0] for c in candidates}
        removed = set(max(candidates, key=lambda c: (accuracy[c], -sorted(c - removed)[0])))
    assert removed_sets(space.decode(t.params) for t in study.trials) == expected
    assert len(study.trials) == get_sampler("sleb").planned(ctx) == 6 + 5 + 4 + 3


def test_evopress_mutates_one_block_at_a_time_and_keeps_the_fittest():
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"), max_removed=3)
    ctx, _ = context(space, trials=60, offspring=4, generations=3)
    score = synthetic_scores(space, seed=1)
    study = run("evopress", ctx, score)
    assert get_sampler("evopress").planned(ctx) == 3 * (1 + 3 * 4)
    plans = [space.decode(t.params) for t in study.trials]
    levels = [len(p.removed) for p in plans]
    assert levels == sorted(levels) and set(levels) == {1, 2, 3}  # one search per level, in order
    sampler = get_sampler("evopress").build(ctx)
    parent = [0, 2, 4]
    for _ in range(20):  # level switch: one removed block swapped for a kept one
        child = sampler.mutate(parent)
        assert len(child) == 3 and len(set(child) ^ set(parent)) in (0, 2)
    for k in (1, 2):  # the level's winner is at least as fit as its first parent (elitism)
        at_k = [p for p in plans if len(p.removed) == k]
        assert max(score(p)[0] for p in at_k) >= score(at_k[0])[0]
    best = {k: max(score(p)[0] for p in plans if len(p.removed) == k) for k in (1, 2)}
    exhaustive = {
        k: max(score(p)[0] for p in space.enumerate() if len(p.removed) == k and not _linear(p)) for k in (1, 2)
    }
    assert best[1] == pytest.approx(exhaustive[1])  # 13 plans for 6 single blocks: it finds the best one


def _linear(plan: Plan) -> bool:
    return any(s.kind != "identity" for s in plan.spans)


def test_evopress_uses_kl_as_fitness_where_the_run_scores_it():
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"))
    ctx, _ = context(space, objectives="perplexity,kl,gflops")
    assert get_sampler("evopress").build(ctx).fitness_index == 1
    ctx, _ = context(space, objectives="perplexity,gflops")
    assert get_sampler("evopress").build(ctx).fitness_index == 0


def test_a_rule_reads_maximised_and_minimised_objectives_the_right_way():
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"))
    ctx, _ = context(space, objectives="perplexity,gflops")
    sampler = get_sampler("sleb").build(ctx)
    trial = optuna.trial.create_trial(values=[12.0, 1.0], params={}, distributions={})
    assert sampler.fitness(trial) == 12.0  # perplexity: lower is better as is
    ctx, _ = context(space)
    sampler = get_sampler("sleb").build(ctx)
    trial = optuna.trial.create_trial(values=[91.0, 1.0], params={}, distributions={})
    assert sampler.fitness(trial) == -91.0  # accuracy: negated
    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={}, distributions={})
    assert sampler.fitness(failed) == math.inf


def test_statistics_without_token_cosines_are_refused_in_one_line():
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"))
    ctx, _ = context(space)
    from dataclasses import replace

    old = replace(ctx, stats=replace(ctx.stats, token_cosine_sum=None))
    for name in ("shortgpt", "replaceme"):
        with pytest.raises(SettingsError, match="--cache-dir") as info:
            get_sampler(name).build(old)
        assert "\n" not in str(info.value)


def test_a_sampler_registered_after_import_is_accepted_by_the_settings(tmp_path):
    from toast.search import SearchSettings
    from toast.search.samplers import SAMPLERS, Sampler, register_sampler
    from toast.search.samplers._registry import _REGISTRY

    register_sampler(
        Sampler(name="my-random", build=lambda ctx: optuna.samplers.RandomSampler(seed=ctx.seed), help="x")
    )
    try:
        settings = SearchSettings.from_flat(model="demo-vit", dataset="digits", sampler="my-random", out=tmp_path)
        assert settings.study.sampler == "my-random" and "my-random" in SAMPLERS
        check_sampler("my-random", num_blocks=4, trials=6)
    finally:
        del _REGISTRY["my-random"]
