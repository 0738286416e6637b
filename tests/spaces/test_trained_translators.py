"""The trained kinds `mlp` and `resmlp` (TOAST A.1.2): learning, seeding, early stopping, streaming from the
memory-mapped activation cache, the on-disk cache of fitted translators, and the search with them."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from toast.capture import ActivationCache, CalibrationSettings, CapturedSpanData, calibrate
from toast.data import load_split
from toast.models import CompressedModel, load_model
from toast.search._bank import TranslatorBank
from toast.search.cli import main
from toast.spaces import ArraySpanData, LinearTranslator, PairStats, Plan, Span, create_translator
from toast.spaces._mlp import MLPTranslator
from toast.spaces._resmlp import ResMLPTranslator
from toast.spaces._trained import TrainedTranslator

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread

FAST = dict(lr=1e-2, batch_tokens=256, eval_every=20)


def teacher_data(kind: str, *, d: int = 8, samples: int = 200, tokens: int = 8, seed: int = 0) -> ArraySpanData:
    """`y = teacher(x)` for a random module of `kind`'s own architecture (scaled up: strongly nonlinear)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples * tokens, d, generator=g) * 2 + 0.5
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        teacher = create_translator(kind).build(d)
        with torch.no_grad():
            for p in teacher.parameters():
                if p.ndim == 2:
                    p.mul_(3)
        y = teacher.eval()(x).detach()
    return ArraySpanData(x.numpy(), y.numpy(), np.repeat(np.arange(samples), tokens))


@pytest.mark.parametrize("kind", ["mlp", "resmlp"])
def test_learns_a_nonlinear_relation_better_than_the_mean_and_a_linear_map(kind):
    data = teacher_data(kind)
    t = create_translator(kind, steps=600, **FAST).fit_span(data)
    mean_mse = float(np.mean((data.y - data.y.mean(0)) ** 2))
    linear = LinearTranslator().fit(PairStats.from_arrays(data.x, data.y))
    linear_mse = float(np.mean((data.y - linear.predict(data.x)) ** 2))
    got = t.residual(data)
    assert got < 0.2 * mean_mse, (got, mean_mse)
    assert got < 0.7 * linear_mse, (got, linear_mse)
    assert t.history_[-1] < 0.5 * t.history_[0]  # the held-out error went down
    assert t.holdout_mse_ == min(t.history_)


@pytest.mark.parametrize("kind", ["mlp", "resmlp"])
def test_a_seed_fixes_the_fit(kind):
    data = teacher_data(kind, samples=40)
    fit = lambda seed: create_translator(kind, steps=60, **FAST).fit_span(  # noqa: E731
        ArraySpanData(data.x, data.y, data.samples, seed=seed)
    )
    a, b, c = fit(0), fit(0), fit(1)
    assert a.state_.keys() == b.state_.keys()
    for name in a.state_:
        np.testing.assert_array_equal(a.state_[name], b.state_[name], err_msg=name)
    assert any(not np.array_equal(a.state_[n], c.state_[n]) for n in a.state_)


def test_early_stopping_stops_and_keeps_the_best_held_out_state():
    """Targets independent of the inputs: the held-out error soon stops improving."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((800, 6)), rng.standard_normal((800, 6))
    data = ArraySpanData(x, y, np.arange(800) // 4)
    t = MLPTranslator(steps=100_000, lr=3e-2, batch_tokens=64, eval_every=5, patience=3).fit_span(data)
    assert t.stopped_early_ and t.steps_ < 2_000
    assert t.holdout_mse_ == min(t.history_)
    module = t.to_module()
    with torch.no_grad():
        errors = [(module(x) - y).double().square() for x, y in data.batches(64, part="holdout")]
    assert float(torch.cat(errors).mean()) == pytest.approx(t.holdout_mse_, rel=1e-6)


def test_max_epochs_bounds_training():
    data = teacher_data("mlp", samples=20)
    t = MLPTranslator(steps=10_000, max_epochs=3, batch_tokens=32, eval_every=1000).fit_span(data)
    per_epoch = -(-int((~np.isin(data.samples, data.held)).sum()) // 32)
    assert t.epochs_ == 3 and t.steps_ == 3 * per_epoch
    assert len(t.history_) == 1  # evaluated once, at the end


def test_the_held_out_part_is_split_by_sample():
    data = teacher_data("mlp", samples=50, tokens=3)
    assert len(data.held) == 5
    rows = {part: np.concatenate([x.numpy() for x, _ in data.batches(16, part=part)]) for part in ("train", "holdout")}
    by_row = {tuple(r): s for r, s in zip(data.x.astype(np.float32).tolist(), data.samples)}
    seen = {part: {by_row[tuple(r)] for r in rows[part].tolist()} for part in rows}
    assert seen["holdout"] == set(data.held.tolist()) and not seen["holdout"] & seen["train"]
    assert len(rows["train"]) + len(rows["holdout"]) == len(data.x)


def test_fit_from_statistics_says_to_use_fit_span():
    with pytest.raises(TypeError, match=r"'mlp' translator is trained on activations.*fit_span\(data\)"):
        MLPTranslator().fit(PairStats.from_arrays(np.eye(3), np.eye(3)))
    assert issubclass(ResMLPTranslator, TrainedTranslator) and ResMLPTranslator.cached_on_disk


def test_the_architectures_are_the_papers():
    mlp = MLPTranslator.empty_module(16)
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "Linear"]
    assert (mlp[0].in_features, mlp[0].out_features, mlp[2].out_features) == (16, 8, 16)
    res = ResMLPTranslator.empty_module(16)
    assert [type(m).__name__ for m in res.ff] == ["Linear", "SiLU", "Dropout", "Linear"]
    assert type(res.norm_in).__name__ == type(res.norm_out).__name__ == "LayerNorm"
    x = torch.randn(3, 16)
    with torch.no_grad():
        z = res.norm_in(x)
        torch.testing.assert_close(res(x), res.norm_out(z + res.ff(z)))
    assert not res.training  # dropout off at inference


# ---------------------------------------------------------------- streaming from the activation cache


@pytest.fixture(scope="module")
def captured(tiny_dirs, image_dataset_dir, tmp_path_factory):
    loaded = load_model(str(tiny_dirs["vit"]))
    split = load_split(str(image_dataset_dir), "train")
    cache = ActivationCache(tmp_path_factory.mktemp("cache"))
    settings = CalibrationSettings(samples=40, batch_size=4, activation_dtype="float16")
    return calibrate(loaded, split, settings, cache, progress=False)


def _rows(batches) -> np.ndarray:
    """The (x | y) rows of some batches, sorted (to compare as sets of rows)."""
    rows = np.concatenate([torch.cat([x, y], 1).numpy() for x, y in batches])
    return rows[np.lexsort(rows.T[::-1])]


def test_batches_stream_every_real_token_from_the_memory_mapped_shards(captured, monkeypatch):
    span = Span(0, 2, "mlp")
    data = CapturedSpanData(captured, span, seed=3)
    opened = []
    real_map = pa.memory_map
    monkeypatch.setattr(pa, "memory_map", lambda path, *a: opened.append(path) or real_map(path, *a))
    arrow_before = pa.total_allocated_bytes()
    batches = list(data.batches(8, part="all"))
    full = np.concatenate([captured.state(span.source), captured.state(span.target)], 1)
    np.testing.assert_array_equal(_rows(batches), full[np.lexsort(full.T[::-1])])
    assert all(x.dtype == torch.float32 and x.shape[0] <= 8 for x, _ in batches)
    assert set(opened) == {str(p) for p in captured.files}  # read through memory maps ...
    assert pa.total_allocated_bytes() == arrow_before  # ... so Arrow allocated nothing
    # the parts: disjoint by sample, together every token; shuffling is seeded
    train, hold = list(data.batches(8)), list(data.batches(8, part="holdout"))
    np.testing.assert_array_equal(_rows(train + hold), _rows(batches))
    samples = captured.sample_index()
    assert len(data.held) == 4 and set(data.held) <= set(samples.tolist())
    assert all(torch.equal(a[0], b[0]) for a, b in zip(train, data.batches(8)))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(train, data.batches(8, seed=4)))


def test_memory_held_while_streaming_is_bounded_by_the_batches(captured):
    span = Span(-1, 3, "mlp")
    data = CapturedSpanData(captured, span)
    full_bytes = 2 * captured.manifest["num_tokens"] * data.dim * 4
    tracemalloc.start()
    try:
        count = sum(len(x) for x, _ in data.batches(8, part="all"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == captured.manifest["num_tokens"]
    assert peak < full_bytes / 2, (peak, full_bytes)


def test_the_bank_trains_once_and_then_reads_the_fit_from_disk(captured, tmp_path, monkeypatch):
    calls = count_trainings(monkeypatch)
    plan = Plan((Span(0, 2, "mlp"), Span(2, 3, "resmlp")), 4)
    first = TranslatorBank(captured, cache_root=tmp_path, seed=1).get(plan)
    assert sum(calls.values()) == 2
    again = TranslatorBank(captured, cache_root=tmp_path, seed=1).get(plan)
    assert sum(calls.values()) == 2  # nothing trained: both read from disk
    for span in plan.spans:
        for name, value in first[span].state_.items():
            np.testing.assert_array_equal(again[span].state_[name], value)
    entries = sorted((tmp_path / "translators").iterdir())
    assert len(entries) == 2 and all((e / "manifest.json").is_file() for e in entries)
    # another seed is another fit; a damaged entry is refitted, not used
    TranslatorBank(captured, cache_root=tmp_path, seed=2).get(plan)
    assert sum(calls.values()) == 4
    (entries[0] / "translator.safetensors").write_bytes(b"broken")
    with pytest.warns(UserWarning, match="refitting"):
        TranslatorBank(captured, cache_root=tmp_path, seed=1).get(plan)
    assert sum(calls.values()) == 5


def test_a_compressed_model_with_trained_translators_exports_and_loads(tiny_dirs, captured, tmp_path):
    loaded = load_model(str(tiny_dirs["vit"]))
    plan = Plan((Span(-1, 0, "resmlp"), Span(1, 3, "mlp")), 4)
    bank = TranslatorBank(captured, cache_root=tmp_path / "cache")
    model = CompressedModel.from_model(loaded, plan, bank.get(plan))
    again = CompressedModel.from_pretrained(model.save_pretrained(tmp_path / "chosen"))
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        torch.testing.assert_close(again.features(inputs), model.features(inputs))
    assert not any(m.training for m in again.modules())


# ---------------------------------------------------------------- the search with trained kinds

SMALL_RUN = ["--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"]


def count_trainings(monkeypatch) -> dict[str, int]:
    """Wrap the trained kinds' `fit_span`: how many times each kind trained in this process."""
    calls = {"mlp": 0, "resmlp": 0}
    real = TrainedTranslator.fit_span

    def fit_span(self, data):
        calls[self.kind] += 1
        return real(self, data)

    monkeypatch.setattr(TrainedTranslator, "fit_span", fit_span)
    return calls


def run(model: Path, dataset: Path, cache: Path, out: Path, *extra: str) -> str:
    args = ["--model", str(model), "--dataset", str(dataset), "--cache-dir", str(cache), "--out", str(out)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main([*args, *SMALL_RUN, "--no-progress", *extra])
    assert code == 0, stderr.getvalue()
    return stdout.getvalue()


def trial_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_rerun_or_resumed_study_does_not_retrain_a_cached_translator(
    tiny_dirs, image_dataset_dir, tmp_path, monkeypatch
):
    calls = count_trainings(monkeypatch)
    common = (tiny_dirs["vit"], image_dataset_dir, tmp_path / "cache")
    plan = ("--translators", "identity,mlp", "--plan", "0->2:mlp")
    run(*common, tmp_path / "a", *plan)
    assert calls == {"mlp": 1, "resmlp": 0}
    (first,) = trial_rows(tmp_path / "a")
    assert first["plan"] == "0→2:mlp" and first["state"] == "COMPLETE"
    run(*common, tmp_path / "a", *plan)  # resumed: the front is re-scored, the translator read from disk
    run(*common, tmp_path / "b", *plan)  # a new study over the same cache
    assert calls == {"mlp": 1, "resmlp": 0}
    (second,) = trial_rows(tmp_path / "b")
    assert second["accuracy"] == first["accuracy"]  # the same translator
    assert float(second["seconds_fit"]) < float(first["seconds_fit"])


@pytest.mark.slow
def test_a_search_over_closed_form_and_trained_kinds(tiny_dirs, image_dataset_dir, tmp_path, monkeypatch):
    calls = count_trainings(monkeypatch)
    out = tmp_path / "run"
    kinds = ("identity", "linear", "mlp", "resmlp")
    run(
        tiny_dirs["vit"], image_dataset_dir, tmp_path / "cache", out, "--translators", ",".join(kinds), "--trials", "16"
    )
    rows = [r for r in trial_rows(out) if r["state"] == "COMPLETE"]
    assert len(rows) >= 10
    used = {span[2] for r in rows for span in json.loads(r["spans"])}
    assert {"mlp", "resmlp"} & used and used <= set(kinds)
    assert calls["mlp"] + calls["resmlp"] >= 1
    front = json.loads((out / "front.json").read_text())["front"]
    assert front and all(span[2] in kinds for p in front for span in p["spans"])
