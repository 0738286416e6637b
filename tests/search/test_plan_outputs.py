"""The search's `TrialOutputs`: each model pass on first use, features and logits from one pass, the original's features kept."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from toast.objectives import Cost, CostTable, compute_objectives, get_objectives
from toast.search._context import PlanOutputs
from toast.search._forward import ForwardCount
from toast.search._stages import FULL, SUBSET
from toast.spaces import Plan

L = 4


class FakeContext:
    """What `PlanOutputs` reads of a `SearchContext`, with model passes recorded instead of run."""

    def __init__(self, objectives: tuple[str, ...], head: str = "probe") -> None:
        self.settings = SimpleNamespace(scoring=SimpleNamespace(objectives=objectives, head=head))
        self.costs = CostTable(
            embed=Cost(10, 1),
            blocks=tuple(Cost(100, 10) for _ in range(L)),
            tail=Cost(5, 1),
            translators={"identity": Cost(0, 0), "linear": Cost(20, 3)},
        )
        rng = np.random.default_rng(0)
        self.eval_labels, self.probe_labels = rng.integers(0, 3, 30), np.arange(60) % 3
        self.features = {"eval": rng.normal(size=(30, 8)), "probe": rng.normal(size=(60, 8))}
        self.eval_inputs, self.probe_inputs = "eval", "probe"
        self.original_eval_features = None
        self.passes: list[tuple[str, bool]] = []
        self.groups: dict = {}  # one stage: every row

    def original_features(self, own=None):
        """`SearchContext.original_features`: computed once, here by the first plan to ask (the baseline's own pass)."""
        if self.original_eval_features is None:
            self.original_eval_features = own()
        return self.original_eval_features

    def group_outputs(self, model, which, group, logits=False, *, tokens=False):
        name, rows = group
        self.passes.append((which, logits) if name == which else (name, logits))
        features = self.features[which][rows]
        return rows, features, features[:, :3] if logits else None, ForwardCount(run=len(rows)), None


def score(ctx: FakeContext, plan: Plan) -> dict:
    return compute_objectives(
        PlanOutputs(ctx, plan, model=None, probe="ridge"), get_objectives(ctx.settings.scoring.objectives)
    )


def test_the_original_head_reads_features_and_logits_in_one_pass():
    ctx = FakeContext(("accuracy", "gflops"), head="original")
    values = score(ctx, Plan((), L))
    assert ctx.passes == [("eval", True)]
    assert values["accuracy"] == float((ctx.features["eval"][:, :3].argmax(1) == ctx.eval_labels).mean() * 100)
    assert values["fidelity"] == 1.0  # the original model against itself


def test_a_probe_reads_both_feature_sets_once_and_the_baseline_keeps_its_features():
    ctx = FakeContext(("accuracy", "gflops"))
    score(ctx, Plan((), L))
    assert ctx.passes == [("eval", False), ("probe", False)]
    assert np.array_equal(ctx.original_eval_features, ctx.features["eval"])
    ctx.passes.clear()
    values = score(ctx, Plan.parse("0→2:linear", L))
    assert ctx.passes == [("eval", False), ("probe", False)]
    assert np.array_equal(ctx.original_eval_features, ctx.features["eval"])
    assert values["gflops"] == ctx.costs.cost(Plan.parse("0→2:linear", L)).gflops


def test_costs_alone_run_no_pass_and_labels_are_read_only_when_needed():
    ctx = FakeContext(("gflops", "params"))
    values = score(ctx, Plan((), L))
    assert (
        {"gflops", "params"} <= set(values)
        and not {"accuracy", "fidelity", "latency"} & set(values)
        and ctx.passes == []
    )
    outputs = PlanOutputs(FakeContext(("fidelity", "params")), Plan((), L), model=None, probe="ridge")
    assert (
        not outputs.has_labels
        and PlanOutputs(FakeContext(("accuracy", "params")), Plan((), L), model=None, probe="ridge").has_labels
    )


def test_the_subset_stage_reads_its_rows_and_the_full_stage_only_the_rest():
    ctx = FakeContext(("accuracy", "gflops"))
    score(ctx, Plan((), L))  # the original's features, on every row
    sub_e, sub_p = np.array([1, 4, 7, 20]), np.arange(0, 60, 4)
    rest = lambda n, sub: np.setdiff1d(np.arange(n), sub)  # noqa: E731
    ctx.groups = {
        "eval": (("eval-subset", sub_e), ("eval-rest", rest(30, sub_e))),
        "probe": (("probe-subset", sub_p), ("probe-rest", rest(60, sub_p))),
    }
    ctx.passes.clear()
    plan, done = Plan.parse("0→2:linear", L), {}
    objectives = get_objectives(ctx.settings.scoring.objectives)
    subset = PlanOutputs(ctx, plan, model=None, probe="ridge", stage=SUBSET, done=done)
    compute_objectives(subset, objectives)
    assert ctx.passes == [("eval-subset", False), ("probe-subset", False)]
    assert np.array_equal(subset.eval_labels, ctx.eval_labels[sub_e]) and len(subset.probe_labels) == len(sub_p)
    assert np.array_equal(subset.original_features, ctx.features["eval"][sub_e])
    full = PlanOutputs(ctx, plan, model=None, probe="ridge", stage=FULL, done=done)
    compute_objectives(full, objectives)
    assert ctx.passes[2:] == [("eval-rest", False), ("probe-rest", False)]  # the subset's rows are not run again
    assert np.array_equal(full.eval_features, ctx.features["eval"])  # every row, back in the stored order
    assert np.array_equal(full.probe_features, ctx.features["probe"])
    assert subset.count.run + full.count.run == 90
