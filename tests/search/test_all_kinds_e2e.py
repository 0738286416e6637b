"""Every translator kind in one search, on a tiny model of every family: kinds a family cannot take are left
out of its space with a one-line note, and the front may mix the rest."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FAMILY_NAMES

from toast.search.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

ALL_KINDS = "identity,linear,lowrank,mlp,resmlp,folded"
SMALL = ["--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    """Short texts of the tiny BERT's vocabulary, two classes."""
    import datasets

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 2, n).tolist()
        texts = [" ".join(f"w{int(i)}" for i in rng.integers(5 + 40 * y, 45 + 40 * y, 6)) for y in labels]
        feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
        return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=feats)

    path = tmp_path_factory.mktemp("texts") / "words"
    datasets.DatasetDict({"train": make(40), "test": make(20)}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_kind_in_one_search(family, tiny_dirs, image_dataset_dir, text_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "1")
    dataset = text_dir if family == "bert" else image_dataset_dir
    out = tmp_path / "run"
    args = ["--model", str(tiny_dirs[family]), "--dataset", str(dataset), "--cache-dir", str(tmp_path / "cache")]
    code = main([*args, "--out", str(out), *SMALL, "--translators", ALL_KINDS, "--ranks", "4,8", "--trials", "10"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    notes = [line for line in captured.out.splitlines() if "left out of the space" in line]
    if family == "bert":  # post-norm: nothing to fold into
        assert len(notes) == 1 and notes[0].startswith("note: --translators folded left out of the space: ")
    else:
        assert not notes
    allowed = {"identity", "linear", "lowrank:4", "lowrank:8", "mlp", "resmlp"} | (
        {"folded"} if family != "bert" else set()
    )
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and all(r["state"] == "COMPLETE" for r in rows), [r.get("failure") for r in rows]
    used = {kind for r in rows for _, _, kind in json.loads(r["spans"])}
    assert used <= allowed and len(used) >= 2, used
    front = json.loads((out / "front.json").read_text())["front"]
    assert front and {kind for r in front for _, _, kind in r["spans"]} <= allowed
