"""Every translator kind on a causal LM's tokens: each fitted from the statistics of every calibration token (no
padding: packed sequences), scored on perplexity, independently and with `--refit sequential`."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import save_tiny

from toast.search import SearchSettings
from toast.search._context import SearchContext
from toast.spaces import Plan

SEQ_LEN, CALIB = 32, 24
PLANS = ("0→1:linear", "0→1:ridge", "0→1:lowrank:8", "1→2:folded", "0→1:mlp", "0→1:resmlp", "-1→0:linear,1→3:linear")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny("llama", tmp_path_factory.mktemp("kinds") / "llama")


def settings(model, root, **extra) -> SearchSettings:
    return SearchSettings.from_flat(
        model=str(model),
        dataset="python-docs",
        objectives=("perplexity", "gflops"),
        translators=("identity", "linear", "ridge", "lowrank:8", "folded", "mlp", "resmlp"),
        seq_len=SEQ_LEN,
        calib_samples=CALIB,
        eval_samples=20,
        device="cpu",
        out=str(root / "run"),
        cache_dir=str(root / "cache"),
        progress=False,
        **extra,
    )


def test_every_kind_fits_on_every_calibration_token_and_scores_perplexity(llama, tmp_path):
    ctx = SearchContext.build(settings(llama, tmp_path), progress=False, notes=False)
    assert ctx.captured.stats.pair(1, 2).n == CALIB * SEQ_LEN  # every token of every packed sequence, no padding
    base = ctx.baseline["perplexity"]
    for text in PLANS:
        scores = ctx.evaluate(Plan.parse(text, ctx.loaded.num_blocks))
        assert math.isfinite(scores["perplexity"]) and scores["perplexity"] != base, text
        assert scores["kl"] > 0 and 0 <= scores["top1"] <= 100, text


def test_sequential_refit_runs_on_an_lm(llama, tmp_path):
    from toast.search.cli import main

    args = ["--model", str(llama), "--seq-len", str(SEQ_LEN), "--calib-samples", str(CALIB), "--eval-samples", "20"]
    args += ["--translators", "identity,linear,folded,mlp", "--refit", "sequential", "--device", "cpu"]
    args += ["--plan", "0→1:linear,2→3:folded", "--plan", "-1→0:linear,1→2:mlp", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    assert {r["plan"] for r in rows} >= {"0→1:linear, 2→3:folded", "-1→0:linear, 1→2:mlp"}
    assert all(math.isfinite(float(r["perplexity"])) for r in rows)


def test_a_folded_map_has_no_bias_where_the_class_cannot_hold_one(tmp_path):
    """Qwen2's `down_proj` has no bias and its config no `mlp_bias`: the folded map is fitted through the origin
    (least squares with no intercept, checked against numpy), so the compressed model is a plain Qwen2 checkpoint
    that scores as the compressed model does; Llama's keeps its bias (`mlp_bias` turned on at export)."""
    import numpy as np

    from toast.spaces import PairStats, translator_class

    rng = np.random.default_rng(0)
    m = rng.standard_normal((400, 6)) + 0.5
    y = m @ rng.standard_normal((6, 6)) + 0.3 + 0.01 * rng.standard_normal((400, 6))
    folded = translator_class("folded")().fit(PairStats.from_arrays(m, y))
    expected, *_ = np.linalg.lstsq(m, y, rcond=None)  # through the origin
    np.testing.assert_allclose(folded.weight_no_bias_, expected, atol=1e-8)

    torch.set_num_threads(1)
    qwen = save_tiny("qwen2", tmp_path / "qwen2")
    ctx = SearchContext.build(settings(qwen, tmp_path), progress=False, notes=False)
    plan = Plan.parse("0→1:folded", ctx.loaded.num_blocks)
    model = ctx.model_for(plan)
    assert model.blocks["0"].mlp.down_proj.bias is None
    folder = model.save_pretrained(tmp_path / "plain", processor=ctx.loaded.processor, layout="plain")
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
        theirs = plain(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())
