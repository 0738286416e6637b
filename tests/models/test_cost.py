"""Plan costs from per-component counts equal fvcore on the built module and exact params, every family."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FAMILY_NAMES

from toast.models import CompressedModel, example_inputs, load_model, measure_cost_table, model_flops
from toast.spaces import LinearTranslator, PairStats, Plan

PLANS = ["", "0→2:linear", "-1→0:identity,1→3:linear", "0→1:identity,1→2:linear,2→3:identity"]


@pytest.fixture(scope="module")
def tables(tiny_dirs):
    out = {}
    for name in FAMILY_NAMES:
        loaded = load_model(str(tiny_dirs[name]))
        out[name] = (loaded, measure_cost_table(loaded))
    return out


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("plan_text", PLANS)
def test_additive_cost_equals_fvcore_on_built_model(tables, name, plan_text):
    loaded, table = tables[name]
    plan = Plan.parse(plan_text, loaded.num_blocks)
    rng = np.random.default_rng(0)
    d = loaded.hidden_size
    translators = {
        s: LinearTranslator().fit(PairStats.from_arrays(rng.normal(size=(80, d)), rng.normal(size=(80, d))))
        for s in plan.spans
        if s.kind == "linear"
    }
    model = CompressedModel.from_model(loaded, plan, translators)
    cost = table.cost(plan)
    assert cost.flops == model_flops(model, example_inputs(loaded))
    assert cost.params == model.num_parameters()


def test_removing_blocks_saves_their_cost(tables):
    loaded, table = tables["dinov2"]
    base = table.original
    plan = Plan.parse("0→2:identity", loaded.num_blocks)
    assert table.cost(plan).flops == base.flops - table.blocks[1].flops - table.blocks[2].flops
    linear = Plan.parse("0→2:linear", loaded.num_blocks)
    d, tokens = loaded.hidden_size, (32 // 8) ** 2 + 1
    assert table.cost(linear).flops - table.cost(plan).flops == tokens * d * d  # one multiply-add per weight per token
    assert table.cost(linear).params - table.cost(plan).params == d * d + d
