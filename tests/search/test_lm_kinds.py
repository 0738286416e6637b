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
