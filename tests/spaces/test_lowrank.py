"""The `lowrank:r` kind: its maths against a brute force on the stacked activations (numpy SVD of the
least-squares fitted values), its kind strings in plans, spaces and cost tables, `ranks` in the settings,
and a search over `--translators identity,linear,lowrank --ranks 4,8` end to end on the tiny ViT.

The shared suite (`toast.spaces.testing`) runs on `lowrank:1`, `lowrank:4` and `lowrank:6` in
`tests/spaces/test_translator_conformance.py`."""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest
import torch
from conftest import run_main

from toast.errors import SettingsError, SpaceError
from toast.models import CompressedModel, example_inputs, load_model, measure_cost_table, model_flops
from toast.objectives import count_flops, count_params
from toast.search import SearchSettings
from toast.search._prepare import space_kinds
from toast.search.cli import as_flags
from toast.spaces import (
    LinearTranslator,
    PairStats,
    Plan,
    PlanError,
    PlanSpace,
    Span,
    StatsAccumulator,
    create_translator,
    kind_parameter,
    load_translator,
    translator_class,
)
from toast.spaces._lowrank import LowRankTranslator

D = 8
BATCHES = [(3, 8), (2, 11), (4, 5)]  # (batch, tokens) of the accumulated batches; the second one padded


def accumulated(seed: int, *, d: int = D, dtype=torch.float64, relation=None):
    """`PairStats` of h_0 → h_1 from a `StatsAccumulator` fed several batches (one with padding), and the
    real tokens of h_0 and h_1 stacked as float64 arrays: what the brute force reads."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    mean = torch.randn(d, generator=g, dtype=torch.float64) * 2
    acc = StatsAccumulator(2, d, product_dtype=dtype)
    xs, ys = [], []
    for i, (b, n) in enumerate(BATCHES):
        h0 = torch.randn(b, n, d, generator=g, dtype=torch.float64) @ mix + mean
        if relation is None:
            h1 = h0 + torch.tanh(h0 @ mix) + 0.1 * torch.randn(b, n, d, generator=g, dtype=torch.float64)
        else:
            h1 = relation(h0)
        states = [h.to(dtype) for h in (h0, h1)]
        mask = None
        if i == 1:
            mask = torch.ones(b, n, dtype=torch.bool)
            mask[0, 7:] = False
        acc.update(states, mask=mask)
        keep = np.ones((b, n), bool) if mask is None else mask.numpy()
        xs.append(states[0].double().numpy()[keep])
        ys.append(states[1].double().numpy()[keep])
    return acc.result().pair(0, 1), np.concatenate(xs), np.concatenate(ys)


def brute_force(x: np.ndarray, y: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Reduced-rank regression on the raw rows: lstsq with bias, then the SVD of its fitted values truncated
    to `rank` (Eckart–Young). Returns the predictions, the map and the mean squared error."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.lstsq(xc, yc, rcond=None)[0]
    _, _, vt = np.linalg.svd(xc @ w, full_matrices=False)
    w_r = w @ vt[:rank].T @ vt[:rank]
    pred = (x - x.mean(0)) @ w_r + y.mean(0)
    return pred, w_r, float(np.mean((y - pred) ** 2))


@pytest.mark.parametrize("rank", [1, 3, D - 1, D])
def test_fit_equals_the_brute_force_on_the_stacked_activations(rank):
    stats, x, y = accumulated(0)
    assert stats.n == len(x) == 24 + 22 - 4 + 20  # the padded tokens are left out
    t = create_translator(f"lowrank:{rank}").fit(stats)
    pred, w_r, mse = brute_force(x, y, rank)
    np.testing.assert_allclose(t.predict(x), pred, rtol=1e-9, atol=1e-9 * np.abs(pred).max())
    np.testing.assert_allclose(t.weight_, w_r, atol=1e-9 * np.abs(w_r).max())
    assert t.residual(stats) == pytest.approx(mse, rel=1e-9)
    assert np.linalg.matrix_rank(t.weight_) == rank
    assert t.encoder_.shape == (D, rank) and t.decoder_.shape == (rank, D)


def test_float32_activations_fit_the_brute_force_to_float32_resolution():
    stats, x, y = accumulated(1, dtype=torch.float32)
    t = create_translator("lowrank:3").fit(stats)
    pred, _, mse = brute_force(x, y, 3)
    np.testing.assert_allclose(t.predict(x), pred, atol=1e-4 * np.abs(pred).max())
    assert t.residual(stats) == pytest.approx(mse, rel=1e-4)


def test_the_residual_is_least_squares_plus_the_dropped_singular_values():
    """Eckart–Young: no rank-r map does better than lstsq's error plus the fitted values' dropped energy."""
    stats, x, y = accumulated(2)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.lstsq(xc, yc, rcond=None)[0]
    sse_ls = np.sum((yc - xc @ w) ** 2)
    s = np.linalg.svd(xc @ w, compute_uv=False)
    for rank in range(1, D + 1):
        want = (sse_ls + np.sum(s[rank:] ** 2)) / y.size
        assert create_translator(f"lowrank:{rank}").fit(stats).residual(stats) == pytest.approx(want, rel=1e-9)


def test_full_rank_is_the_linear_translator():
    stats, x, _ = accumulated(3)
    full, linear = create_translator(f"lowrank:{D}").fit(stats), LinearTranslator().fit(stats)
    np.testing.assert_allclose(full.weight_, linear.weight_, atol=1e-9 * np.abs(linear.weight_).max())
    np.testing.assert_allclose(full.bias_, linear.bias_, atol=1e-9 * np.abs(linear.bias_).max())
    np.testing.assert_allclose(full.predict(x), linear.predict(x), rtol=1e-9, atol=1e-9)
    assert full.residual(stats) == pytest.approx(linear.residual(stats), rel=1e-9)


def test_the_residual_falls_with_the_rank():
    stats, _, _ = accumulated(4)
    residuals = [create_translator(f"lowrank:{r}").fit(stats).residual(stats) for r in range(1, D + 1)]
    assert all(a > b for a, b in zip(residuals, residuals[1:])), residuals  # noisy data: every direction helps


def test_a_known_rank_r_relation_is_recovered_exactly():
    rank = 3
    g = torch.Generator().manual_seed(5)
    a, b = (
        torch.randn(D, rank, generator=g, dtype=torch.float64),
        torch.randn(rank, D, generator=g, dtype=torch.float64),
    )
    c = torch.randn(D, generator=g, dtype=torch.float64)
    stats, x, y = accumulated(5, relation=lambda h: h @ a @ b + c)
    t = create_translator(f"lowrank:{rank}").fit(stats)
    np.testing.assert_allclose(t.weight_, (a @ b).numpy(), atol=1e-8)
    np.testing.assert_allclose(t.bias_, c.numpy(), atol=1e-8)
    np.testing.assert_allclose(t.predict(x), y, atol=1e-8)
    assert t.residual(stats) < 1e-14 * np.mean(y**2)
    assert create_translator(f"lowrank:{rank - 1}").fit(stats).residual(stats) > 1e-3 * np.mean(y**2)


def test_the_module_is_two_linears_and_computes_predict():
    stats, x, _ = accumulated(6)
    t = create_translator("lowrank:3").fit(stats)
    module = t.to_module()
    assert [tuple(p.shape) for p in module.parameters()] == [(3, D), (D, 3), (D,)]
    assert module[0].bias is None
    with torch.no_grad():
        out = module.double()(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), t.predict(x), rtol=1e-6, atol=1e-6)  # float32 weights


# ---------------------------------------------------------------- kind strings


def test_the_rank_is_part_of_the_kind_string():
    cls = translator_class("lowrank:96")
    assert issubclass(cls, LowRankTranslator) and cls.rank == 96 and cls.kind == "lowrank:96"
    assert translator_class("lowrank:96") is cls and translator_class("lowrank:32") is not cls
    t = create_translator("lowrank:96")
    assert type(t) is cls and t.kind == "lowrank:96" and repr(t) == "LowRankTranslator(rank=96)"
    assert kind_parameter("lowrank") == kind_parameter("lowrank:96") == "rank"
    assert kind_parameter("linear") is None


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("lowrank", r"translator kind 'lowrank' needs its rank: write lowrank:r \(e\.g\. lowrank:96\)"),
        ("lowrank:0", r"'lowrank:0': the rank must be a positive integer"),
        ("lowrank:x", r"'lowrank:x': the rank must be a positive integer"),
        ("lowrank:096", r"the rank must be a positive integer"),  # one kind string per rank
        ("linear:3", r"translator kind 'linear' takes no parameter, got 'linear:3'"),
        ("nope:3", r"unknown translator kind 'nope:3' \(known: .*lowrank"),
    ],
)
def test_bad_kind_strings_are_refused_naming_the_rule(kind, message):
    with pytest.raises(PlanError, match=message):
        translator_class(kind)
    with pytest.raises(PlanError, match=message):
        Plan.parse(f"0->2:{kind}", 4)


def test_an_empty_parameter_is_refused():
    with pytest.raises(PlanError, match=r"'lowrank:': the rank must be a positive integer"):
        translator_class("lowrank:")
    with pytest.raises(PlanError, match=r"cannot read span '0->2:lowrank:'"):
        Plan.parse("0->2:lowrank:", 4)


def test_a_rank_above_the_width_is_refused_where_the_width_is_known():
    cls = translator_class("lowrank:9")
    rule = r"translator kind 'lowrank:9': rank 9 is above the width 8 \(a rank goes from 1 to the width\)"
    for use in (lambda: cls.cost(D, 5), lambda: cls.empty_module(D), lambda: cls().fit(accumulated(0)[0])):
        with pytest.raises(PlanError, match=rule):
            use()
    with pytest.raises(PlanError, match="needs its rank"):
        LowRankTranslator().fit(accumulated(0)[0])  # the bare family, built by hand


def test_cost_is_fvcores_count_and_falls_with_the_rank():
    d, tokens = 768, 197
    costs = [translator_class(f"lowrank:{r}").cost(d, tokens) for r in (48, 96, 192, 384)]
    assert [c.flops for c in costs] == [2 * tokens * d * r for r in (48, 96, 192, 384)]
    assert [c.params for c in costs] == [2 * d * r + d for r in (48, 96, 192, 384)]
    linear = LinearTranslator.cost(d, tokens)
    assert costs[2].flops < linear.flops and costs[3].flops == linear.flops  # r = d/2: as costly as linear
    module, h = translator_class("lowrank:48").empty_module(d), torch.zeros(1, tokens, d)
    assert (count_flops(module, (h,)), count_params(module)) == tuple(costs[0])


def test_save_load_and_pickle_keep_the_rank(tmp_path):
    stats, x, _ = accumulated(7)
    t = create_translator("lowrank:2").fit(stats)
    meta = json.loads((t.save(tmp_path) / "translator.json").read_text())
    assert meta["kind"] == "lowrank:2"
    for back in (load_translator(tmp_path), pickle.loads(pickle.dumps(t))):
        assert type(back) is type(t) and back.rank == 2
        np.testing.assert_array_equal(back.predict(x), t.predict(x))


def test_plans_and_spaces_hold_lowrank_kinds():
    assert Span.parse("9→11:lowrank:96") == Span(9, 11, "lowrank:96")
    assert Span.parse("9->11 lowrank:96") == Span(9, 11, "lowrank:96")
    plan = Plan.parse("0->2:lowrank:8, 3→4:lowrank:96", 6)
    assert plan.to_json() == [[0, 2, "lowrank:8"], [3, 4, "lowrank:96"]]
    assert str(plan) == "0→2:lowrank:8, 3→4:lowrank:96"
    assert Plan.loads(plan.dumps()) == plan and Plan.parse(str(plan), 6) == plan
    space = PlanSpace(num_blocks=6, kinds="identity,lowrank:8,lowrank:96")
    assert space.choices == ("keep", "identity", "lowrank:8", "lowrank:96")
    assert space.decode(space.encode(plan)) == plan
    with pytest.raises(SpaceError, match="translator kind 'lowrank' needs its rank"):
        PlanSpace(num_blocks=6, kinds="identity,lowrank")
    with pytest.raises(SpaceError, match="kinds lists 'lowrank:8' more than once"):
        PlanSpace(num_blocks=6, kinds="lowrank:8,lowrank:8")


# ---------------------------------------------------------------- settings: `ranks`


def test_ranks_default_to_fractions_of_the_width_and_accept_integers(tmp_path):
    settings = SearchSettings.from_flat(model="m", dataset="d", out=tmp_path)
    assert settings.ranks == ("d/16", "d/8", "d/4")
    assert settings.space.resolved_ranks(768) == (48, 96, 192)
    assert settings.space.resolved_ranks(8) == (1, 2)  # at least 1, each rank once
    mixed = SearchSettings.from_flat(model="m", dataset="d", out=tmp_path, ranks=(8, "4", "d/2", "d"))
    assert mixed.ranks == ("8", "4", "d/2", "d") and mixed.space.resolved_ranks(32) == (4, 8, 16, 32)
    assert settings.identity()["ranks"] == ["d/16", "d/8", "d/4"]
    assert SearchSettings.identity_defaults()["ranks"] == ["d/16", "d/8", "d/4"]


@pytest.mark.parametrize("ranks", [("0",), ("-4",), ("d/0",), ("x",), ("4.5",), ()])
def test_bad_ranks_are_refused_naming_ranks(tmp_path, ranks):
    with pytest.raises(SettingsError, match=r"`ranks` must be positive integers or fractions of the model's width"):
        SearchSettings.from_flat(model="m", dataset="d", out=tmp_path, ranks=ranks)


def test_a_rank_above_the_width_is_refused_naming_ranks(tmp_path):
    settings = SearchSettings.from_flat(model="m", dataset="d", out=tmp_path, ranks=("4", "64"))
    with pytest.raises(SettingsError, match=r"`ranks` 64 is above the model's width 32") as e:
        settings.space.resolved_ranks(32)
    assert as_flags(str(e.value)).startswith("--ranks 64 is above")


def test_a_bare_lowrank_expands_to_one_kind_per_rank(tmp_path):
    settings = SearchSettings.from_flat(
        model="m", dataset="d", out=tmp_path, translators=("identity", "lowrank", "lowrank:5"), ranks=("4", "d/4")
    )
    assert space_kinds(settings, 32) == ("identity", "lowrank:4", "lowrank:8", "lowrank:5")
    assert space_kinds(SearchSettings.from_flat(model="m", dataset="d", out=tmp_path), 32) == ("identity", "linear")


# ---------------------------------------------------------------- cost table and compressed model


@pytest.fixture(scope="module")
def tiny_vit(tiny_dirs):
    return load_model(str(tiny_dirs["vit"]))


def test_the_cost_table_knows_every_kind_string_and_keeps_its_figures(tiny_vit):
    d = tiny_vit.hidden_size
    plain = measure_cost_table(tiny_vit)
    assert all(kind_parameter(k) is None for k in plain.translators)  # no bare `lowrank` figure
    table = measure_cost_table(tiny_vit, kinds=("lowrank:4",))
    assert table.to_json()["translators"]["lowrank:4"] == {"flops": 2 * table.tokens * d * 4, "params": 2 * d * 4 + d}
    assert {k: v for k, v in table.to_json()["translators"].items() if k != "lowrank:4"} == plain.to_json()[
        "translators"
    ]
    assert {k: v for k, v in table.to_json().items() if k != "translators"} == {
        k: v for k, v in plain.to_json().items() if k != "translators"
    }
    # a kind string it was not told about is costed on demand, as its class counts it
    plan = Plan.parse("0->2:lowrank:6", tiny_vit.num_blocks)
    assert plain.cost(plan).flops == plain.cost(Plan.parse("0->2:identity", 4)).flops + 2 * plain.tokens * d * 6
    with pytest.raises(PlanError, match="rank 64 is above the width 32"):
        plain.cost(Plan.parse("0->2:lowrank:64", 4))


@pytest.mark.parametrize("plan_text", ["0→2:lowrank:4", "-1→0:lowrank:1,0→1:identity,1→3:lowrank:32"])
def test_additive_cost_equals_fvcore_on_the_built_model(tiny_vit, plan_text):
    plan = Plan.parse(plan_text, tiny_vit.num_blocks)
    d = tiny_vit.hidden_size
    rng = np.random.default_rng(0)
    stats = PairStats.from_arrays(rng.normal(size=(80, d)), rng.normal(size=(80, d)))
    translators = {s: create_translator(s.kind).fit(stats) for s in plan.spans if translator_class(s.kind).needs_fit}
    model = CompressedModel.from_model(tiny_vit, plan, translators)
    cost = measure_cost_table(tiny_vit).cost(plan)
    assert cost.flops == model_flops(model, example_inputs(tiny_vit))
    assert cost.params == model.num_parameters()


def test_a_compressed_model_with_lowrank_spans_saves_and_loads(tiny_vit, tmp_path):
    plan = Plan.parse("0→2:lowrank:4,2→3:identity", tiny_vit.num_blocks)
    d = tiny_vit.hidden_size
    rng = np.random.default_rng(1)
    stats = PairStats.from_arrays(rng.normal(size=(80, d)), rng.normal(size=(80, d)))
    model = CompressedModel.from_model(tiny_vit, plan, {plan.spans[0]: create_translator("lowrank:4").fit(stats)})
    model.save_pretrained(tmp_path / "export", processor=tiny_vit.processor)
    back = CompressedModel.from_pretrained(tmp_path / "export")
    assert back.plan == plan and back.num_parameters() == model.num_parameters()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(pixel_values=pixels), model(pixel_values=pixels), rtol=0, atol=0)


# ---------------------------------------------------------------- end to end


def small_run(tiny_dirs, dataset, cache, out, *extra: str) -> list[str]:
    return [
        *("--model", str(tiny_dirs["vit"]), "--dataset", str(dataset), "--cache-dir", str(cache), "--out", str(out)),
        *("--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"),
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_search_over_lowrank_ranks_end_to_end(tiny_dirs, image_dataset_dir, tmp_path, one_thread):
    cache, kinds = tmp_path / "cache", ["--translators", "identity,linear,lowrank", "--ranks", "4,8"]
    out = tmp_path / "search"
    code, stdout, err = run_main(
        small_run(tiny_dirs, image_dataset_dir, cache, out, *kinds, "--sampler", "random", "--trials", "12")
    )
    assert code == 0, err
    front = json.loads((out / "front.json").read_text())
    assert front["front"]
    used = {span[2] for row in front["front"] for span in row["spans"]}
    assert used <= {"identity", "linear", "lowrank:4", "lowrank:8"}, used
    with open(out / "trials.csv") as f:
        assert "lowrank:" in f.read()  # twelve random plans of four blocks over four kinds: some use a rank
    assert json.loads((out / "settings.json").read_text())["ranks"] == ["4", "8"]

    out = tmp_path / "plan"
    code, _, err = run_main(small_run(tiny_dirs, image_dataset_dir, cache, out, *kinds, "--plan", "0->2:lowrank:8"))
    assert code == 0, err
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["plan"], r["state"], r["spans"]) for r in rows] == [
        ("0→2:lowrank:8", "COMPLETE", json.dumps([[0, 2, "lowrank:8"]]))
    ]
    assert 0 <= float(rows[0]["accuracy"]) <= 100

    code, _, err = run_main(
        small_run(tiny_dirs, image_dataset_dir, cache, tmp_path / "bad", *kinds[:2], "--ranks", "4,64")
    )
    assert code == 2
    assert "--ranks 64 is above the model's width 32" in err
    code, _, err = run_main(
        small_run(tiny_dirs, image_dataset_dir, cache, tmp_path / "bad", "--plan", "0->2:lowrank:64")
    )
    assert code == 2
    assert "--plan '0->2:lowrank:64': translator kind 'lowrank:64': rank 64 is above the width 32" in err
