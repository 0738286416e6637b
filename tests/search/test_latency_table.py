"""The latency table: an estimate is the sum of its parts, measured once per machine and runtime and cached (a second
run measures nothing), and the cheapest plan of a space is found without enumerating it. No timed assertions: values
are only checked for being positive and consistent (the parts' solution is checked exactly in test_runtimes.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from toast.models import CompressedModel, load_model, measure_cost_table
from toast.objectives import LatencyTable
from toast.search import _latency as latency_module
from toast.search._latency import (
    architecture_fingerprint,
    cheapest_latency_plan,
    latency_inputs,
    measure_end_to_end,
    measure_latency_table,
)
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


def test_cheapest_plan_is_the_brute_force_minimum():
    for space in (
        PlanSpace(num_blocks=5, kinds=("identity", "linear")),
        PlanSpace(num_blocks=5, kinds=("linear",), max_removed=2),
        PlanSpace(num_blocks=5, kinds=("identity", "linear"), min_kept=3),
    ):
        plan, ms = cheapest_latency_plan(TABLE, space)
        assert space.contains(plan)
        assert ms == pytest.approx(min(TABLE.estimate(p) for p in space.enumerate()))


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
