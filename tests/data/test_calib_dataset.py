"""`--calib-dataset` / `--calib-split`: translators fitted on other data than the probe and the evaluation use.

A tiny random ViT, the made-up colours dataset and an inverted copy of it (255 - x, the same labels). The
reference: a run that fits on D2 while scoring on D1 captures exactly what a run on D2 alone captures (one cache
entry, the same statistics), and its translators are D2's, not D1's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main

from toast.search._context import SearchContext
from toast.search._settings import SearchSettings
from toast.spaces import Plan, Span

pytestmark = pytest.mark.slow

SMALL_RUN = ["--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"]
SMALL_RUN += ["--no-progress", "--batch-size", "8"]


@pytest.fixture(scope="module")
def inverted_dir(image_dataset_dir, tmp_path_factory) -> Path:
    """The colours dataset with every image inverted (255 - x): the same labels, shifted inputs."""
    import datasets
    from PIL import Image, ImageOps

    data = datasets.load_from_disk(str(image_dataset_dir))

    def invert(row):
        return {"img": ImageOps.invert(row["img"].convert("RGB"))}

    out = datasets.DatasetDict({k: v.map(invert, features=v.features) for k, v in data.items()})
    path = tmp_path_factory.mktemp("data") / "inverted"
    out.save_to_disk(str(path))
    assert isinstance(out["train"][0]["img"], Image.Image)
    return path


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    import datasets

    words = [f"w{i} w{i + 1}" for i in range(20)]
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"text": words, "label": [i % 2 for i in range(20)]}, features=feats)
    path = tmp_path_factory.mktemp("data") / "text"
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(path))
    return path


def settings(model, data, out, cache_dir, **kw) -> SearchSettings:
    base = dict(
        model=str(model),
        dataset=str(data),
        out=out,
        objectives=("accuracy", "fidelity", "gflops"),
        calib_samples=16,
        probe_samples=30,
        eval_samples=20,
        device="cpu",
        cache_dir=cache_dir,
        batch_size=8,
        progress=False,
    )
    return SearchSettings.from_flat(**{**base, **kw})


def test_the_calibration_comes_from_the_other_dataset(tiny_dirs, image_dataset_dir, inverted_dir, tmp_path):
    cache = tmp_path / "cache"
    shifted = SearchContext.build(
        settings(tiny_dirs["vit"], image_dataset_dir, tmp_path / "a", cache, calib_dataset=str(inverted_dir))
    )
    alone = SearchContext.build(settings(tiny_dirs["vit"], inverted_dir, tmp_path / "b", cache))
    same = SearchContext.build(settings(tiny_dirs["vit"], image_dataset_dir, tmp_path / "c", cache))
    # fitting on D2 while scoring on D1 captures what a run on D2 captures: one cache entry, keyed by D2
    assert shifted.captured.directory == alone.captured.directory != same.captured.directory
    assert shifted.captured.manifest["spec"]["dataset"] == alone.calib.fingerprint
    assert shifted.calib.name == str(inverted_dir.resolve()) and shifted.train.name == str(image_dataset_dir.resolve())
    # the probe and evaluation data are D1's
    np.testing.assert_array_equal(shifted.eval_labels, same.eval_labels)
    plan = Plan((Span(0, 2, "linear"),), shifted.loaded.num_blocks)
    w_shifted = shifted.bank.get(plan)[plan.spans[0]].weight_
    w_alone, w_same = alone.bank.get(plan)[plan.spans[0]].weight_, same.bank.get(plan)[plan.spans[0]].weight_
    np.testing.assert_allclose(w_shifted, w_alone)  # the translators are D2's
    assert not np.allclose(w_shifted, w_same)
    # and they are scored on D1: the same plan scored on other data gives other fidelity
    assert shifted.evaluate(plan)["fidelity"] != alone.evaluate(plan)["fidelity"]


def test_calib_split_alone_draws_from_another_split_of_the_dataset(tiny_dirs, image_dataset_dir, tmp_path):
    ctx = SearchContext.build(
        settings(tiny_dirs["vit"], image_dataset_dir, tmp_path / "a", tmp_path / "cache", calib_split="test")
    )
    assert ctx.calib.split == "test" and ctx.train.split == "train"
    assert ctx.captured.manifest["spec"]["split"] == "test"


def test_search_records_both_datasets_and_refuses_another_on_resume(
    tiny_dirs, image_dataset_dir, inverted_dir, tmp_path
):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--model", str(tiny_dirs["vit"]), "--dataset", str(image_dataset_dir), "--out", str(out)]
    args += ["--cache-dir", str(cache), *SMALL_RUN, "--sampler", "random", "--trials", "5"]
    code, _, err = run_main([*args, "--calib-dataset", str(inverted_dir)])
    assert code == 0, err
    saved = json.loads((out / "settings.json").read_text())
    assert saved["dataset"] == str(image_dataset_dir) and saved["calib_dataset"] == str(inverted_dir)
    assert saved["calib_split"] is None
    front = json.loads((out / "front.json").read_text())
    assert front["calibration"]["dataset"] == str(inverted_dir.resolve())
    assert front["calibration"]["split"] == "train" and front["calibration"]["samples"] == 16
    assert front["calibration"]["same_as_probe_data"] is False
    # resuming with the translators fitted on other data would mix two runs
    before = (out / "study.journal").read_bytes()
    code, _, err = run_main([*args, "--trials", "6"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "calib_dataset" in err and "belongs to another run" in err
    assert (out / "study.journal").read_bytes() == before
    code, _, err = run_main([*args, "--trials", "6", "--calib-dataset", str(inverted_dir)])  # the same: resumed
    assert code == 0, err


def test_a_plain_run_says_it_fitted_on_its_own_data(tiny_dirs, image_dataset_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--model", str(tiny_dirs["vit"]), "--dataset", str(image_dataset_dir), "--out", str(out)]
    code, _, err = run_main([*args, "--cache-dir", str(tmp_path / "cache"), *SMALL_RUN, "--plan", "0->2:linear"])
    assert code == 0, err
    calibration = json.loads((out / "front.json").read_text())["calibration"]
    assert calibration["same_as_probe_data"] is True and calibration["split"] == "train"


@pytest.mark.parametrize(
    "calib, extra, message",
    [
        ("/nonexistent/data", [], "--calib-dataset '/nonexistent/data', split 'train': dataset"),
        ("TEXT", [], "holds text but model"),
        ("INVERTED", ["--calib-split", "validation"], "has no split 'validation'"),
    ],
)
def test_bad_calibration_data_is_one_line_exit_2(
    calib, extra, message, tiny_dirs, image_dataset_dir, inverted_dir, text_dir, tmp_path
):
    where = {"TEXT": str(text_dir), "INVERTED": str(inverted_dir)}.get(calib, calib)
    out = tmp_path / "run"
    args = ["--model", str(tiny_dirs["vit"]), "--dataset", str(image_dataset_dir), "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "cache"), *SMALL_RUN, "--calib-dataset", where, *extra]
    code, _, err = run_main(args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    if extra:  # the hint names the calibration's own flag, not --split-train
        assert "pass --calib-split" in lines[0] and "--split-train" not in lines[0]
    assert not out.exists() and not (tmp_path / "cache" / "activations").exists()
