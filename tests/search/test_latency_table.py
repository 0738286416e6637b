"""The latency table: an estimate is the sum of its parts, measured once per machine and runtime and cached (a second
run measures nothing), and the cheapest plan of a space is found without enumerating it. No timed assertions: values
are only checked for being positive and consistent (the parts' solution is checked exactly in test_runtimes.py)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from toast.models import CompressedModel, load_model, measure_cost_table
from toast.objectives import LatencyTable, held_budgets
from toast.search import _latency as latency_module
from toast.search._latency import (
    CHECK_PLANS,
    architecture_fingerprint,
    cheapest_latency_plan,
    check_margin,
    check_plans,
    depth_knots,
    depth_parts,
    latency_inputs,
    measure_end_to_end,
    measure_latency_table,
    probe_plans,
    unsteady,
)
from toast.search.runtimes import Runtime
from toast.spaces import Plan, PlanSpace

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread

TABLE = LatencyTable(
    embed_ms=0.5,
    blocks_ms=(2.0, 2.0, 3.0, 2.0, 1.0),
    tail_ms=0.25,
    translators_ms={"identity": 0.001, "linear": 0.3},
    device="cpu: made up",
)


@pytest.fixture(scope="module")
def demo():
    return load_model("demo-vit")


@pytest.mark.parametrize("text", ["", "1→3:linear", "-1→0:identity,2→4:linear", "0→4:identity"])
def test_estimate_is_the_sum_of_the_parts_the_plan_runs(text):
    plan = Plan.parse(text, TABLE.num_blocks)
    by_hand = TABLE.embed_ms + TABLE.tail_ms
    by_hand += sum(TABLE.blocks_ms[b] for b in range(TABLE.num_blocks) if b not in plan.removed)
    by_hand += sum(TABLE.translators_ms[s.kind] for s in plan.spans)
    assert TABLE.estimate(plan) == pytest.approx(by_hand)
    assert TABLE.original_ms == pytest.approx(0.75 + 10.0)


def test_estimate_refuses_unmeasured_kinds_and_other_models():
    with pytest.raises(ValueError, match="no latency measured for translator kind 'mlp'"):
        TABLE.estimate(Plan.parse("0→1:mlp", 5))
    with pytest.raises(ValueError, match="plan is for 6 blocks"):
        TABLE.estimate(Plan((), 6))
    with pytest.raises(ValueError, match="non-negative"):
        LatencyTable(embed_ms=-1.0, blocks_ms=(1.0,), tail_ms=0.0)


def test_json_round_trip():
    assert LatencyTable.from_json(TABLE.to_json()) == TABLE


DEPTH = dataclasses.replace(TABLE, kept_ms=(0.0, 1.0, 2.5, 4.5, 7.0, 10.0))  # each added block costs more


@pytest.mark.parametrize("text", ["", "1→3:linear", "-1→0:identity,2→4:linear", "0→4:identity"])
def test_a_table_by_depth_estimates_the_kept_blocks_by_their_count(text):
    """The kept blocks cost `kept_ms` of their count plus each one's offset from the mean block (blocks of unequal
    cost: 2, 2, 3, 2 and 1 ms, mean 2)."""
    plan = Plan.parse(text, DEPTH.num_blocks)
    by_hand = DEPTH.embed_ms + DEPTH.tail_ms + DEPTH.kept_ms[len(plan.kept)]
    by_hand += sum(DEPTH.blocks_ms[b] - 2.0 for b in plan.kept)
    by_hand += sum(DEPTH.translators_ms[s.kind] for s in plan.spans)
    assert DEPTH.estimate(plan) == pytest.approx(by_hand)
    assert LatencyTable.from_json(DEPTH.to_json()) == DEPTH
    assert LatencyTable.from_json({k: v for k, v in TABLE.to_json().items() if k != "kept_ms"}) == TABLE  # older files


@pytest.mark.parametrize("kept", [(0.0, 1.0), (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0), (0.0, 1.0, -1.0, 3.0, 4.0, 5.0)])
def test_a_depth_curve_of_another_length_or_a_negative_time_is_refused(kept):
    with pytest.raises(ValueError, match="kept_ms"):
        dataclasses.replace(TABLE, kept_ms=kept)


def test_the_depth_curve_is_linear_between_the_knots_and_never_falls():
    """Knots at 1, 3, 6, 9 and 12 kept of 12 blocks: the kept blocks' cost between them is on the line joining them,
    the fixed part is where the first two knots' line meets 0 kept, and a dip (noise) is flattened."""
    assert depth_knots(12) == (1, 3, 6, 9, 12) and depth_knots(3) == (1, 3) and depth_knots(2) == (0, 2)
    parts = {"kept@1": 1.5, "kept@3": 2.5, "kept@6": 5.5, "kept@9": 8.0, "kept@12": 14.0}
    fixed, kept = depth_parts(parts, 12)
    assert fixed == pytest.approx(1.0)
    assert kept[0] == 0 and kept[1] == pytest.approx(0.5) and kept[2] == pytest.approx(1.0)
    assert kept[5] == pytest.approx(3.5) and kept[12] == pytest.approx(13.0) and kept[10] == pytest.approx(9.0)
    _, dipped = depth_parts({**parts, "kept@6": 1.0}, 12)
    assert list(dipped) == sorted(dipped) and dipped[6] == pytest.approx(1.5)  # held at kept@3's level


@pytest.mark.parametrize("table", [TABLE, DEPTH], ids=["per block", "by depth"])
def test_cheapest_plan_is_the_brute_force_minimum(table):
    """Blocks of unequal cost (2, 2, 3, 2, 1 ms): the costliest ones are not consecutive."""
    for space in (
        PlanSpace(num_blocks=5, kinds=("identity", "linear")),
        PlanSpace(num_blocks=5, kinds=("linear",), max_removed=2),
        PlanSpace(num_blocks=5, kinds=("identity", "linear"), min_kept=3),
    ):
        plan, ms = cheapest_latency_plan(table, space)
        assert space.contains(plan)
        assert ms == pytest.approx(min(table.estimate(p) for p in space.enumerate()))


def test_measured_once_then_read_from_the_cache(demo, tmp_path, monkeypatch):
    kinds = ("identity", "linear")
    table, measured = measure_latency_table(demo, kinds=kinds, cache_dir=tmp_path)
    assert measured
    # solved from whole models: the fixed part (embeddings, head, per-call work) in embed_ms, one block time
    assert table.embed_ms > 0 and table.tail_ms == 0 and all(b > 0 for b in table.blocks_ms)
    assert len(set(table.blocks_ms)) == 1  # the demo's blocks share one shape
    assert set(table.translators_ms) == set(kinds) and all(v >= 0 for v in table.translators_ms.values())
    assert table.batch_size == 1 and table.threads == 1 and table.device.startswith("cpu")
    assert table.runtime == "eager" and table.versions == {"torch": torch.__version__}
    assert table.fingerprint == architecture_fingerprint(demo.config)
    assert table.input_description == "pixel_values (1, 3, 32, 32)"  # the processor's crop

    def no_timing(*args, **kwargs):
        raise AssertionError("a cached latency table was measured again")

    monkeypatch.setattr(latency_module, "measure_latency", no_timing)
    again, measured = measure_latency_table(demo, kinds=kinds, cache_dir=tmp_path)
    assert not measured and again == table
    monkeypatch.undo()
    # another batch size (or thread count, dtype, device ...) is another key: measured
    other, measured = measure_latency_table(demo, kinds=kinds, batch_size=2, cache_dir=tmp_path)
    assert measured and other.batch_size == 2
    assert len(list((tmp_path / "latency").iterdir())) == 2


def test_a_corrupt_entry_is_measured_again(demo, tmp_path):
    table, _ = measure_latency_table(demo, kinds=("identity",), cache_dir=tmp_path)
    (entry,) = (tmp_path / "latency").iterdir()
    (entry / "latency.json").write_text("{}")
    with pytest.warns(UserWarning, match="measuring the latency table again"):
        _, measured = measure_latency_table(demo, kinds=("identity",), cache_dir=tmp_path)
    assert measured


def test_the_cost_table_carries_the_estimate_and_the_model_runs_on_its_inputs(demo):
    table, _ = measure_latency_table(demo, kinds=("identity",))
    costs = dataclasses.replace(measure_cost_table(demo, kinds=("identity",)), latency=table)
    plan = Plan.parse("1→3:identity", demo.num_blocks)
    assert costs.cost(plan).latency_ms == pytest.approx(table.estimate(plan))
    assert measure_cost_table(demo).cost(plan).latency_ms is None
    inputs = latency_inputs(demo, batch_size=3)
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)
    assert measure_end_to_end(CompressedModel.from_model(demo, plan), inputs, warmup=1, repeats=2) > 0


def test_the_margin_is_validated_and_holds_a_budget():
    table = dataclasses.replace(TABLE, margin=0.25)
    plan = Plan.parse("1→3:linear", TABLE.num_blocks)
    assert table.estimate(plan) == TABLE.estimate(plan)  # the estimate is the parts' sum, with or without a margin
    assert table.bound(plan) == pytest.approx(1.25 * TABLE.estimate(plan))
    assert table.held_limit(10.0) == pytest.approx(8.0)
    assert LatencyTable.from_json(table.to_json()) == table
    old = TABLE.to_json()
    del old["margin"]  # a table written before margins: none
    assert LatencyTable.from_json(old).margin == 0.0
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="bad: margin"):
            dataclasses.replace(TABLE, margin=bad)


def test_held_budgets_lower_the_latency_budget_only():
    table = dataclasses.replace(TABLE, margin=0.25)
    assert held_budgets({"gflops": 2.0, "latency": 10.0}, table) == {"gflops": 2.0, "latency": pytest.approx(8.0)}
    assert held_budgets({"latency": 10.0}, None) == {"latency": 10.0}
    assert held_budgets({"gflops": 2.0}, table) == {"gflops": 2.0}


@pytest.mark.parametrize("num_blocks", [2, 3, 4, 7, 12])
def test_check_plans_are_seeded_plans_of_the_space_that_no_probe_is(num_blocks):
    kinds = ("linear", "folded")
    plans = check_plans(num_blocks, kinds)
    assert len(set(plans)) == CHECK_PLANS == len(plans)
    space = PlanSpace(num_blocks=num_blocks, kinds=("identity", *kinds))
    probes = probe_plans(num_blocks, kinds)
    assert all(plan.spans and space.contains(plan) and plan not in probes for plan in plans)
    assert check_plans(num_blocks, kinds) == plans


def test_check_margin_is_the_largest_relative_underestimate():
    a, b = Plan.parse("1→3:linear", 5), Plan.parse("0→4:identity", 5)
    assert check_margin(TABLE, {a: 1.2 * TABLE.estimate(a), b: 0.9 * TABLE.estimate(b)}) == pytest.approx(0.2)
    assert check_margin(TABLE, {b: 0.9 * TABLE.estimate(b)}) == 0.0
    assert check_margin(TABLE, {}) == 0.0


def test_the_table_is_solved_from_the_probes_and_its_margin_from_the_check_plans(demo, monkeypatch):
    """Made-up times, exact sums of known parts for the probes and 10% over them for the check plans: the parts come
    back exactly, and the margin is 10%."""
    parts = {"fixed": 1.0, "block": 2.0, "identity": 0.01, "linear": 0.5}
    L, kinds = demo.num_blocks, ("identity", "linear")
    checks, timed = check_plans(L, kinds), []

    def made_up(runtime, models, inputs, **kwargs):
        timed.append(set(models))
        ms = {p: parts["fixed"] + parts["block"] * len(p.kept) + sum(parts[s.kind] for s in p.spans) for p in models}
        return {p: t * (1.1 if p in checks else 1.0) for p, t in ms.items()}

    monkeypatch.setattr(latency_module, "time_models", made_up)
    table, measured = measure_latency_table(demo, kinds=kinds)
    assert measured and table.margin == pytest.approx(0.1)
    assert table.embed_ms == pytest.approx(1.0) and table.blocks_ms == pytest.approx((2.0,) * L)
    assert table.translators_ms == pytest.approx({"identity": 0.01, "linear": 0.5})
    table, _ = measure_latency_table(demo, kinds=kinds, checks=0)
    assert table.margin == 0.0
    assert timed == [set(probe_plans(L, kinds)) | set(checks), set(probe_plans(L, kinds))]  # timed together


def test_a_block_that_costs_more_the_more_are_kept_is_estimated_at_every_depth(demo, monkeypatch):
    """Made-up times where each added block costs more (as demo-lm's onnxruntime decoding step measured: 0.09 ms a
    block with 1–5 kept, 0.15 ms with 9–12), linear between the table's knots: every plan of the space is estimated
    exactly, where one cost per block would be off by up to a fifth."""
    L, kinds = demo.num_blocks, ("identity", "linear")
    knots = depth_knots(L)
    at_knots = {k: 0.03 + 0.09 * k + 0.006 * k * k for k in knots}

    def depth(k):  # linear between the knots, and along the first two below the first
        (a, b), (ya, yb) = knots[:2], (at_knots[knots[0]], at_knots[knots[1]])
        return ya - (a - k) * (yb - ya) / (b - a) if k < a else float(np.interp(k, knots, [at_knots[n] for n in knots]))

    def made_up(runtime, models, inputs, **kwargs):
        return {p: depth(len(p.kept)) + 0.01 * len(p.spans) for p in models}

    monkeypatch.setattr(latency_module, "time_models", made_up)
    table, _ = measure_latency_table(demo, kinds=kinds)
    assert table.margin == pytest.approx(0.0, abs=1e-9) and len(table.kept_ms) == L + 1
    space = PlanSpace(num_blocks=L, kinds=kinds)
    plans = list(space.enumerate())
    truth = {p: depth(len(p.kept)) + 0.01 * len(p.spans) for p in plans}
    assert all(table.estimate(p) == pytest.approx(truth[p]) for p in plans)
    linear = dataclasses.replace(table, kept_ms=(), blocks_ms=(table.kept_ms[L] / L,) * L)
    assert max(abs(linear.estimate(p) / truth[p] - 1) for p in plans) > 0.1


class _Scripted:
    """`measure_latency` replaced by scripted milliseconds: each call's time is the next of `times`."""

    def __init__(self, times):
        self.times = iter(times)

    def __call__(self, fn, **kwargs):
        return SimpleNamespace(median_ms=next(self.times))


def test_side_by_side_each_model_is_its_fastest_round_and_the_drift_the_later_rounds_against_the_earlier(monkeypatch):
    calls = {"a": lambda: None, "b": lambda: None}
    rounds = [(1.0, 3.0)] * 3 + [(1.5, 4.5)] * 5  # a slow spell (50% slower) over the last 5 rounds of 8
    monkeypatch.setattr(latency_module, "measure_latency", _Scripted([10.0, 10.0, *(t for r in rounds for t in r)]))
    out = latency_module.interleaved_times(calls, warmup=0, repeats=8, device="cpu", burst_ms=0.0)
    # The machine's own speed, not the spell's: the median (1.5 and 4.5) would be the spell's.
    assert out == {"a": pytest.approx(1.0), "b": pytest.approx(3.0)}
    assert out.drift == pytest.approx(0.5)  # the later half's totals (6.0) against the earlier half's (4.0)
    monkeypatch.setattr(latency_module, "measure_latency", _Scripted([10.0, 1.0, 1.0, 1.0]))
    assert latency_module.interleaved_times({"a": calls["a"]}, warmup=0, repeats=3, device="cpu").drift == 0.0


def test_a_fast_models_burst_is_timed_after_one_untimed_call_that_warms_it_again(monkeypatch):
    import time

    last = []

    def model(name):
        def call():
            if last[-1:] != [name]:  # the first call after the other model's: its weights out of the caches
                time.sleep(0.02)
            last.append(name)

        return call

    out = latency_module.interleaved_times(
        {"a": model("a"), "b": model("b")}, warmup=0, repeats=3, device="cpu", burst_ms=50.0
    )
    # Each burst (2 or more calls, sized on a 20 ms cold call) follows an untimed call: timed with it, 6.7 ms a call.
    assert out["a"] < 1.0 and out["b"] < 1.0
    calls_per_round, rest = divmod(last.count("a") - 1, 3)  # the call sizing the burst, then 3 rounds
    assert rest == 0 and calls_per_round >= 3  # the untimed call and a burst of 2 or more
    # A burst of one call (a call slower than `burst_ms`) is warmed the same way: a single timed call, cold, is 20 ms.
    last.clear()
    out = latency_module.interleaved_times(
        {"a": model("a"), "b": model("b")}, warmup=0, repeats=3, device="cpu", burst_ms=0.0
    )
    assert out["a"] < 1.0 and out["b"] < 1.0 and last.count("a") == 1 + 3 * 2
    # A call slower than `WARM_BELOW_MS` is timed without one: its cold start is a small part of it.
    monkeypatch.setattr(latency_module, "WARM_BELOW_MS", 10.0)
    last.clear()
    out = latency_module.interleaved_times(
        {"a": model("a"), "b": model("b")}, warmup=0, repeats=3, device="cpu", burst_ms=0.0
    )
    assert out["a"] >= 20.0 and last.count("a") == 1 + 3


def test_rounds_go_on_for_the_timing_window_and_stop_at_the_most_rounds(monkeypatch):
    import time

    counts = {"slow": 0, "fast": 0}

    def slow():
        counts["slow"] += 1
        time.sleep(0.005)  # every call at least 5 ms: 0.1 s holds at most 21 rounds

    def fast():
        counts["fast"] += 1

    out = latency_module.interleaved_times({"s": slow}, warmup=0, repeats=1, device="cpu", burst_ms=0.0, seconds=0.1)
    # Past the 1 repeat; a round is an untimed call and a timed one (minus the call sizing the burst).
    assert 2 <= (counts["slow"] - 1) / 2 <= 11 and out["s"] >= 5.0
    monkeypatch.setattr(latency_module, "MAX_ROUNDS", 30)
    latency_module.interleaved_times({"f": fast}, warmup=0, repeats=1, device="cpu", burst_ms=0.0, seconds=60.0)
    assert counts["fast"] - 1 == 2 * 30  # the most rounds end a window a fast call would never fill
    # What a user's timing lasts at least (the tests' conftest sets these defaults to 0 to keep CI short).
    assert latency_module.TABLE_SECONDS >= 1.0 and latency_module.END_TO_END_SECONDS >= 1.0


@pytest.mark.parametrize(
    ("timed_tables", "kept", "timed"),
    [
        (((0.02, 1.0),), 0.02, 1),  # steady: timed once
        (((0.3, 1.5), (-0.05, 1.0)), -0.05, 2),  # the second timing is the faster
        (((-0.3, 1.0), (0.02, 1.4)), -0.3, 2),  # the first is, steady or not: a spell only ever slows the machine
        (((0.3, 1.2), (0.2, 1.0), (0.01, 0.5)), 0.2, 2),  # timed again once at most
    ],
)
def test_an_unsteady_table_is_timed_again_and_the_faster_kept(demo, tmp_path, monkeypatch, timed_tables, kept, timed):
    calls = iter(timed_tables)
    timings = []

    def scripted(loaded, inputs, spec, runtime):
        timings.append(spec.key)
        drift, scale = next(calls)  # the machine's speed: every part of the table alike
        return dataclasses.replace(
            TABLE, drift=drift, embed_ms=TABLE.embed_ms * scale, blocks_ms=[b * scale for b in TABLE.blocks_ms]
        )

    monkeypatch.setattr(latency_module, "_table", scripted)
    table, measured = measure_latency_table(demo, kinds=("identity",), cache_dir=tmp_path)
    assert measured and table.drift == kept and len(timings) == timed  # at most UNSTEADY_RETRIES more
    assert latency_module.UNSTEADY_RETRIES == 1
    again, measured = measure_latency_table(demo, kinds=("identity",), cache_dir=tmp_path)
    assert not measured and again.drift == kept  # the kept timing is the one stored


class _Recording(Runtime):
    """A runtime that records the models it prepares, in order, and runs nothing."""

    name = "recording-for-test"

    def __init__(self, *, interleaved: bool = True, copies_weights: bool = False) -> None:
        self.interleaved, self.copies_weights, self.prepared = interleaved, copies_weights, []

    def prepare(self, model, inputs, *, mode="prefill"):
        self.prepared.append(model)
        return lambda: None


def test_one_after_the_other_the_first_model_is_timed_again_for_the_drift(monkeypatch):
    times = iter([2.0, 5.0, 2.2])  # a, b, then a again: 10% slower
    monkeypatch.setattr(latency_module, "interleaved_times", lambda calls, **kw: {0: next(times)})
    runtime = _Recording(interleaved=False)
    out = latency_module.time_models(runtime, {"a": lambda: "A", "b": lambda: "B"}, {})
    assert out == {"a": 2.0, "b": 5.0} and out.drift == pytest.approx(0.1)
    assert runtime.prepared == ["A", "B", "A"]
    times = iter([2.0])
    assert latency_module.time_models(runtime, {"a": lambda: "A"}, {}).drift == 0.0  # one model: nothing to tell


def test_an_unsteady_machine_is_said_and_a_bad_drift_refused():
    assert unsteady(0.05) is None and unsteady(-0.09) is None
    assert "ran 25% slower at the end" in unsteady(0.25) and "ran 30% faster" in unsteady(-0.3)
    assert dataclasses.replace(TABLE, drift=-0.2).drift == -0.2
    for bad in (math.nan, -1.0, math.inf):
        with pytest.raises(ValueError, match="bad: drift"):
            dataclasses.replace(TABLE, drift=bad)


@pytest.mark.parametrize(("memory", "together"), [(10**9, True), (10**4, False)])
def test_models_that_copy_their_weights_are_timed_side_by_side_while_the_copies_fit(monkeypatch, memory, together):
    """Two 4 kB models (a copy and its working memory each: 16 kB in all) fit in a quarter of 1 GB, not of 10 kB."""

    timed = []
    monkeypatch.setattr(
        latency_module, "interleaved_times", lambda calls, **kw: timed.append(len(calls)) or {k: 1.0 for k in calls}
    )
    monkeypatch.setattr(latency_module, "device_memory", lambda device: memory)
    runtime, a, b = (
        _Recording(copies_weights=True),
        torch.nn.Linear(31, 32),
        torch.nn.Linear(31, 32),
    )  # 32·32 floats: 4 kB each
    assert latency_module.weight_bytes(a) == 4096
    latency_module.time_models(runtime, {"a": lambda: a, "b": lambda: b}, {}, device="cpu")
    assert timed == ([2] if together else [1, 1, 1])  # one after the other: the first timed again for the drift
    assert runtime.prepared == ([a, b] if together else [a, b, a])
