"""The `folded` kind: its statistics, its fit against brute-force least squares, its fold against an unmodified
Transformers model with fewer layers, its refusals, and the space that never proposes it where it cannot apply."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from conftest import example_inputs

from toast.capture import ActivationCache, CalibrationSettings, calibrate, capture_spec
from toast.data import iter_batches, load_split
from toast.models import CompressedModel, load_model
from toast.search._bank import TranslatorBank
from toast.spaces import (
    FoldedTranslator,
    LinearTranslator,
    PairStats,
    Plan,
    PlanError,
    PlanSpace,
    Span,
    StatsAccumulator,
)

PRE_NORM = ["vit", "deit", "dinov2", "clip"]


@pytest.fixture(scope="module")
def loaded(tiny_dirs):
    out = {name: load_model(str(tiny_dirs[name])) for name in [*PRE_NORM, "bert"]}
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a layer scale that is not all ones, so folding γ is tested
        for block in out["dinov2"].parts.blocks:
            block.layer_scale2.lambda1.copy_(0.5 + torch.rand(block.layer_scale2.lambda1.shape, generator=g))
    return out


def _random_folded(d: int, seed: int) -> FoldedTranslator:
    rng = np.random.default_rng(seed)
    t = FoldedTranslator()
    t.weight_ = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    t.bias_ = 0.1 * rng.standard_normal(d)
    t.solver_, t.ill_conditioned_ = "cholesky", False
    return t


def _blocks_prefix(key: str) -> re.Match | None:
    return re.search(r"(?:^|\.)layers?\.(\d+)\.", key)


def _unmodified_reference(lm, plan: Plan, translators: dict[Span, FoldedTranslator]):
    """A Transformers model of the original class with only the kept layers, their weights copied in order and
    each folded span's source block's MLP output projection (and layer scale) replaced, by hand."""
    import copy

    small = copy.deepcopy(lm.config)
    small.num_hidden_layers = len(plan.kept)
    ref = type(lm.model)(small).eval()
    position = {b: i for i, b in enumerate(plan.kept)}
    state = {}
    for key, value in lm.model.state_dict().items():
        m = _blocks_prefix(key)
        if m is None:
            state[key] = value.clone()
        elif int(m.group(1)) in position:
            state[key[: m.start(1)] + str(position[int(m.group(1))]) + key[m.end(1) :]] = value.clone()
    for span, t in translators.items():
        i = position[span.start]
        a, b = torch.from_numpy(t.weight_), torch.from_numpy(t.bias_)
        if lm.family.name == "dinov2":
            w_key = next(k for k in state if re.search(rf"layers?\.{i}\.mlp\.fc2\.weight$", k))
            g_key = next(k for k in state if re.search(rf"layers?\.{i}\.layer_scale2\.lambda1$", k))
            gamma = state[g_key].double()
            state[g_key] = torch.ones_like(state[g_key])
        else:
            pattern = rf"layers?\.{i}\.mlp\.fc2\.weight$"
            w_key = next(k for k in state if re.search(pattern, k))
            gamma = torch.ones(a.shape[0], dtype=torch.float64)
        b_key = w_key.removesuffix("weight") + "bias"
        w, b_out = state[w_key].double(), state[b_key].double()  # (out, in), (out,)
        state[w_key] = (a.T @ torch.diag(gamma) @ w).float()
        state[b_key] = ((b_out * gamma) @ a + b).float()
    ref.load_state_dict(state, strict=True)
    return ref


def _outputs(model, inputs):
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return (out.logits if hasattr(out, "logits") else out.pooler_output), out.last_hidden_state


@pytest.mark.parametrize("name", PRE_NORM)
@pytest.mark.parametrize("spans", [["1→2:folded"], ["0→1:folded", "2→3:folded"], ["0→1:folded", "1→3:linear"]])
def test_folded_weights_in_an_unmodified_architecture_reproduce_the_compressed_model(loaded, name, spans, tmp_path):
    lm = loaded[name]
    d = lm.hidden_size
    plan = Plan.of(spans, lm.num_blocks)
    fitted = {s: _random_folded(d, i) for i, s in enumerate(plan.spans) if s.kind == "folded"}
    rng = np.random.default_rng(9)
    linear = {
        s: LinearTranslator().fit(
            PairStats.from_arrays(x := rng.standard_normal((80, d)), x + 0.1 * rng.standard_normal((80, d)))
        )
        for s in plan.spans
        if s.kind == "linear"
    }
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    model = CompressedModel.from_model(lm, plan, {**fitted, **linear}).eval()
    for k, v in lm.model.state_dict().items():  # the loaded model serves every trial: never folded in place
        assert torch.equal(v, before[k]), k
    inputs = example_inputs(name)
    with torch.no_grad():
        ours = model(**inputs)
    if not linear:  # exactly the original architecture, fewer layers, no extra module
        ref = _unmodified_reference(lm, plan, fitted)
        want, last = _outputs(ref, inputs)
        torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            h, _, _ = model.run(inputs)
        torch.testing.assert_close(model.family.normalize(model.final_norm, h), last, rtol=1e-5, atol=1e-5)
        assert model.num_parameters() == sum(p.numel() for p in ref.parameters())
    # the toast checkpoint round-trips the folded plan
    model.save_pretrained(tmp_path / "ckpt")
    again = CompressedModel.from_pretrained(tmp_path / "ckpt")
    assert again.plan == plan
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs), ours, rtol=1e-6, atol=1e-6)


def test_branch_statistics_are_exact():
    """`StatsAccumulator` fed MLP branch outputs gives `branch_pair` = the exact statistics of (m_s, h_t - r_s)."""
    g = torch.Generator().manual_seed(0)
    L, d = 3, 5
    acc = StatsAccumulator(L + 1, d, product_dtype=torch.float64)
    hs, ms = [], []
    for b, n in [(3, 6), (2, 4)]:
        h = [torch.randn(b, n, d, generator=g) * 2 + 1]
        m = []
        for _ in range(L):
            m.append(torch.randn(b, n, d, generator=g) + 0.5)
            h.append(h[-1] + torch.randn(b, n, d, generator=g) * 0.3 + m[-1])  # h_{s+1} = r + m
        mask = torch.ones(b, n, dtype=torch.bool)
        mask[0, -1] = False
        acc.update(h, mask, branches=m)
        hs.append([x[mask].double().numpy() for x in h])
        ms.append([x[mask].double().numpy() for x in m])
    stats = acc.result()
    H = [np.concatenate([batch[k] for batch in hs]) for k in range(L + 1)]
    M = [np.concatenate([batch[s] for batch in ms]) for s in range(L)]
    for s in range(L):
        for t in range(s + 1, L + 1):
            want = PairStats.from_arrays(M[s], H[t] - (H[s + 1] - M[s]))
            got = stats.branch_pair(s, t)
            for field in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
                np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-10, atol=1e-10)


def _stacked_branch_data(lm, split, ids, s: int, t: int):
    """m_s, r_s and h_t of every calibration token, gathered independently: r from the block's own residual."""
    rs, ms, hts = [], [], []
    block = lm.parts.blocks[s]
    seen = {}
    if lm.family.name == "dinov2":
        handle = block.register_forward_hook(lambda mod, args, out: seen.update(out=out))
        hook2 = block.layer_scale2.register_forward_hook(lambda mod, args, out: seen.update(m=out))
    else:
        handle = block.register_forward_hook(lambda mod, args, out: seen.update(out=out))
        hook2 = block.mlp.register_forward_hook(lambda mod, args, out: seen.update(m=out))
    try:
        for _, inputs in iter_batches(split, ids, lm.processor, 8):
            with torch.no_grad():
                out = lm.model(**inputs, output_hidden_states=True)
            m = seen["m"].reshape(-1, lm.hidden_size).double().numpy()
            ms.append(m)
            rs.append(seen["out"].reshape(-1, lm.hidden_size).double().numpy() - m)
            hts.append(out.hidden_states[t].reshape(-1, lm.hidden_size).double().numpy())
    finally:
        handle.remove()
        hook2.remove()
    return np.concatenate(ms), np.concatenate(rs), np.concatenate(hts)


@pytest.mark.parametrize("name", ["vit", "dinov2"])
def test_folded_fit_from_the_capture_equals_brute_force_least_squares(loaded, name, image_dataset_dir, tmp_path):
    lm = loaded[name]
    split = load_split(str(image_dataset_dir), "train")
    settings = CalibrationSettings(samples=30, batch_size=8, activation_dtype="float32")
    captured = calibrate(lm, split, settings, ActivationCache(tmp_path), progress=False)
    assert captured.stats.has_branches
    span = Span(1, 2, "folded")
    t = TranslatorBank(captured).get(Plan((span,), lm.num_blocks))[span]
    m, r, h = _stacked_branch_data(lm, split, capture_spec(lm, split, settings).sample_ids, 1, 3)
    design = np.hstack([m, np.ones((len(m), 1))])
    solution, *_ = np.linalg.lstsq(design, h - r, rcond=None)
    a, b = solution[:-1], solution[-1]
    # from the exact statistics of the stacked tokens: the same solution
    exact = FoldedTranslator().fit(PairStats.from_arrays(m, h - r))
    np.testing.assert_allclose(exact.weight_, a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(exact.bias_, b, rtol=1e-6, atol=1e-7)
    # from the capture's statistics (float32 products summed in float64): the statistics agree, and so do the
    # fitted maps' outputs (the weights only as closely as the branch scatter's condition number allows)
    got = captured.stats.branch_pair(1, 3)
    want = PairStats.from_arrays(m, h - r)
    assert got.n == want.n == len(m)
    for field in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
        value = getattr(want, field)
        np.testing.assert_allclose(getattr(got, field), value, rtol=1e-4, atol=1e-4 * np.abs(value).max())
    np.testing.assert_allclose(t.predict(m), design @ solution, rtol=0, atol=1e-3 * np.abs(h - r).max())
    # the fitted block then does what was fitted: its output is r + m A + b
    folded = t.fold_into(lm.parts.blocks[1], lm.family)
    assert folded is not lm.parts.blocks[1]
    # a span the kind refuses is refused before any fit is tried (the capture has no branch data for s = -1)
    with pytest.raises(PlanError, match=r"invalid plan: span -1→0:folded: a folded span needs a kept source block"):
        TranslatorBank(captured).get(Plan.parse("-1→0:folded", lm.num_blocks))


def test_refused_where_it_cannot_apply(loaded):
    vit, bert = loaded["vit"], loaded["bert"]
    t = _random_folded(vit.hidden_size, 0)
    with pytest.raises(PlanError, match=r"^span -1→1:folded: a folded span needs a kept source block s .*s = -1"):
        CompressedModel.from_model(vit, Plan.parse("-1→1:folded", 4), {Span(-1, 1, "folded"): t})
    with pytest.raises(PlanError, match=r"span 1→2:folded: .*source block 1, which another span removes"):
        CompressedModel.from_model(vit, Plan.parse("0→1:identity,1→2:folded", 4), {Span(1, 2, "folded"): t})
    with pytest.raises(
        PlanError,
        match=r"^translator kind 'folded' needs a block whose MLP branch is added .*bert blocks norm the branch",
    ):
        CompressedModel.from_model(bert, Plan.parse("0→1:folded", 4), {Span(0, 1, "folded"): t})
    for message in (FoldedTranslator.refuse_span(Span(-1, 0, "folded")),):
        assert "\n" not in message


@pytest.mark.parametrize("max_removed", [None, 2])
def test_the_space_never_proposes_a_folded_span_without_a_kept_source_block(max_removed):
    space = PlanSpace(num_blocks=4, kinds="identity,linear,folded", max_removed=max_removed)
    assert "folded" not in space.gene_choices(0) and "folded" in space.gene_choices(1)
    assert "folded" not in space.distributions()[space.param_names[0]].choices
    plans = list(space.enumerate())
    assert len(plans) == len(set(plans)) == space.size()
    assert all(not space.refusals(p) for p in plans)
    # the count against every genome the distributions allow
    genomes = itertools.product(*(space.gene_choices(b) for b in range(4)))
    valid = {space.decode(g) for g in genomes}
    assert {p for p in valid if space.feasible(p)} == set(plans)
    assert any(s.kind == "folded" for p in plans for s in p.spans)
    with pytest.raises(PlanError, match="s = -1"):
        space.decode(["folded", "keep", "keep", "keep"])
    assert not space.feasible(space.decode(["linear", "folded", "keep", "keep"]))
    assert not space.contains(Plan.parse("-1→0:folded", 4))


def test_a_post_norm_model_leaves_folded_out_of_the_space_with_a_note(
    tiny_dirs, image_dataset_dir, tmp_path, monkeypatch
):
    from toast.search import SearchSettings, _prepare, prepare

    monkeypatch.setattr(_prepare, "check_modality", lambda *a, **k: None)  # the space only: no data is read
    monkeypatch.setattr(_prepare, "check_inputs_fit", lambda *a, **k: None)
    settings = SearchSettings.from_flat(
        model=str(tiny_dirs["bert"]),
        dataset=str(image_dataset_dir),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        calib_samples=16,
        probe_samples=30,
        eval_samples=20,
        translators=("identity", "linear", "folded"),
        device="cpu",
        progress=False,
    )
    prepared = prepare(settings)
    assert prepared.space.kinds == ("identity", "linear")
    notes = [n for n in prepared.notes if "folded" in n]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert re.match(r"note: --translators folded left out of the space: .*bert blocks norm the branch", notes[0])
    vit = prepare(settings.updated(model=str(tiny_dirs["vit"])))
    assert vit.space.kinds == ("identity", "linear", "folded")
