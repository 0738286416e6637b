"""Models larger than one device (`device_map="auto"`, accelerate) and bfloat16 capture: the statistics and the
compressed models of a model spread over CPU memory and disk equal those of the model loaded whole, and a bfloat16
model's statistics are accumulated in float64, not in its own precision."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from toast.capture import ActivationCache, CalibrationSettings, calibrate
from toast.data import load_split
from toast.errors import MissingDependencyError, SettingsError
from toast.models import CompressedModel, LoadedModel, load_model
from toast.spaces import PairStats, Plan, translator_class

#: CPU memory given to accelerate, as a share of the checkpoint: some blocks in memory, the others on disk (0.6), or
#: every module on disk (0.3: the embeddings are still loaded, as the families move the inputs to their weights)
SHARES = {"some on disk": 0.6, "all on disk": 0.3}


def _text_split():
    from test_length_batches import text_split

    return text_split(24)


def _offloaded(directory, tmp_path, share: float, **kwargs) -> LoadedModel:
    size = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
    return load_model(
        str(directory),
        device_map="auto",
        max_memory={"cpu": int(size * share)},
        offload_folder=tmp_path / "offload",
        **kwargs,
    )


def _close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-6) -> None:
    """Equal within `rtol` of each entry, or of the matrix's largest entry (entries near 0 after centering)."""
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()))


def _capture(loaded, split, root, **settings):
    options = {"samples": 8, "batch_size": 4, **settings}
    return calibrate(loaded, split, CalibrationSettings(**options), ActivationCache(root), progress=False)


def test_device_map_must_be_auto(tiny_dirs):
    with pytest.raises(SettingsError, match=r"`device_map` must be auto .* got 'balanced'"):
        load_model(str(tiny_dirs["vit"]), device_map="balanced")


def test_a_missing_accelerate_says_what_to_install(tiny_dirs, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)  # `import accelerate` fails as when it is not installed
    with pytest.raises(MissingDependencyError, match="pip install accelerate") as caught:
        load_model(str(tiny_dirs["vit"]), device_map="auto")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("share", SHARES.values(), ids=SHARES.keys())
def test_offloaded_model_computes_what_the_whole_model_does(tiny_dirs, tmp_path, share):
    whole = load_model(str(tiny_dirs["dinov2"]))
    big = _offloaded(tiny_dirs["dinov2"], tmp_path, share)
    assert "disk" in big.device_map.values(), big.device_map
    assert all(p.device.type == "meta" for p in big.parts.blocks[-1].parameters())  # on disk between calls
    assert big.device == torch.device("cpu") and whole.device_map is None
    inputs = {"pixel_values": torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    with torch.inference_mode():
        expected = whole.model(**inputs).last_hidden_state
        got = big.model(**inputs).last_hidden_state  # Transformers' own forward, through accelerate's hooks
        states, _ = CompressedModel.from_model(big, Plan((), big.num_blocks)).hidden_states(inputs)
        last = whole.family.normalize(whole.parts.final_norm, states[-1])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("case", "plans"),
    [("vit", ["0→2:linear", "1→3:folded", "-1→1:identity,2→3:linear"]), ("bert", ["0→2:linear", "1→3:ridge"])],
)
def test_capture_and_trials_on_an_offloaded_model_equal_the_whole_models(
    tiny_dirs, image_dataset_dir, tmp_path, case, plans
):
    split = load_split(str(image_dataset_dir), "train") if case == "vit" else _text_split()
    whole = load_model(str(tiny_dirs[case]))
    big = _offloaded(tiny_dirs[case], tmp_path, SHARES["some on disk"])
    assert "disk" in big.device_map.values() and "cpu" in big.device_map.values(), big.device_map
    ref = _capture(whole, split, tmp_path / "whole")
    got = _capture(big, split, tmp_path / "big")
    assert got.stats.n == ref.stats.n and got.stats.held_pairs == ref.stats.held_pairs
    for i, j in sorted(ref.stats.held_pairs):
        a, b = got.stats.pair(i, j), ref.stats.pair(i, j)
        for name in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
            _close(getattr(a, name), getattr(b, name))
    np.testing.assert_allclose(got.stats.cls_cosine_sum, ref.stats.cls_cosine_sum, rtol=1e-6)
    for k in range(whole.num_blocks + 1):
        _close(got.state(k), ref.state(k))

    from toast.data import iter_batches

    _, inputs = next(iter(iter_batches(split, list(range(6)), whole.processor, 6)))
    for n, text in enumerate(plans):
        outputs = []
        for loaded, captured in ((whole, ref), (big, got)):
            plan = Plan.parse(text, loaded.num_blocks)
            fitted = {}
            for span in plan.spans:
                kind = translator_class(span.kind)
                if kind.needs_fit:
                    fitted[span] = kind().fit(kind.span_stats(captured.stats, span))
            model = CompressedModel.from_model(loaded, plan, fitted)
            with torch.inference_mode():
                outputs.append(model(**inputs))
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6, msg=f"plan {text}")
        # saved from the offloaded model (its weights read back from disk), loaded without it
        saved = CompressedModel.from_pretrained(model.save_pretrained(tmp_path / f"saved-{n}"))
        with torch.inference_mode():
            torch.testing.assert_close(saved(**inputs), outputs[0], rtol=1e-5, atol=1e-6, msg=f"saved plan {text}")
    # folding and saving copied the offloaded blocks: the loaded model still computes what it did
    with torch.inference_mode():
        empty = Plan((), whole.num_blocks)
        again = CompressedModel.from_model(big, empty)(**inputs)
        torch.testing.assert_close(again, CompressedModel.from_model(whole, empty)(**inputs), rtol=1e-6, atol=1e-6)


def test_bfloat16_capture_accumulates_in_float64(tiny_dirs, image_dataset_dir, tmp_path):
    """The statistics of a bfloat16 model equal numpy's float64 statistics of the very same bfloat16 states (the
    bfloat16 shards hold them exactly): nothing is accumulated in bfloat16."""
    loaded = load_model(str(tiny_dirs["dinov2"]), dtype=torch.bfloat16)
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    split = load_split(str(image_dataset_dir), "train")
    captured = _capture(loaded, split, tmp_path / "cache", activation_dtype="bfloat16")
    stats = captured.stats
    states = [captured.state(k, np.float64) for k in range(loaded.num_blocks + 1)]
    assert stats.n == len(states[0])
    for k, h in enumerate(states):
        assert np.array_equal(h, h.astype(np.float32).astype(np.float64))  # bfloat16 values, widened exactly
        _close(stats.mean(k), h.mean(0))
    for i, j in sorted(stats.held_pairs):
        expected = PairStats.from_arrays(states[i], states[j])
        got = stats.pair(i, j)
        for name in ("sxx", "sxy", "syy"):
            _close(getattr(got, name), getattr(expected, name))


def test_the_setting_is_validated_and_listed():
    from toast.search import SearchSettings
    from toast.search.cli import build_search_parser

    assert SearchSettings.from_flat(model="m", dataset="d").device_map is None
    assert SearchSettings.from_flat(model="m", dataset="d", device_map="auto").device_map == "auto"
    with pytest.raises(SettingsError, match=r"^`device_map` must be auto \(or unset.*got 'balanced'$"):
        SearchSettings.from_flat(model="m", dataset="d", device_map="balanced")
    help_text = " ".join(build_search_parser().format_help().split())
    assert "--device-map {auto}" in help_text
    assert "spread the model over the GPUs, then CPU memory, then disk (accelerate)" in help_text


def test_latency_is_refused_with_a_device_map():
    from toast.errors import SettingsError
    from toast.search import SearchSettings

    with pytest.raises(SettingsError, match="device_map"):
        SearchSettings.from_flat(model="demo-vit", dataset="digits", device_map="auto", budget_latency_ms=5.0)
