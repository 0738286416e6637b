"""chosen/'s model card (README.md), file modes and source record (issue 19, item 3).

The card is read back with `huggingface_hub.ModelCard`, as the Hub reads it: its metadata names the base model,
the library that loads the folder's layout, the tags and the pipeline; its text says which blocks were removed,
what replaces them, the scores with the head and data, how to load the folder and the command that made it.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import SMALL_RUN
from huggingface_hub import ModelCard

from toast.search._card import (
    Latency,
    command_line,
    ordinary_modes,
    pipeline_tag_for,
    source_fields,
    write_model_card,
)
from toast.search.cli import build_search_parser, join_plan_values, main, settings_from
from toast.spaces import Plan


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _card(tmp_path: Path, **overrides) -> Path:
    """A card written from plain data; `overrides` replace the defaults (a DINOv2 with a fitted span)."""
    kwargs = dict(
        source="dinov2-base",
        revision="0123abc",
        base_model="facebook/dinov2-base",
        source_path=None,
        plan=Plan.of([[2, 5, "linear"], [7, 8, "identity"]], 12),
        scores={"accuracy": 88.25, "fidelity": 0.93, "cosine": 0.97, "gflops": 15.5, "params": 62.0},
        baseline={"accuracy": 90.0, "fidelity": 1.0, "cosine": 1.0, "gflops": 22.0, "params": 86.6},
        head="a linear probe (closed-form ridge) on the pooled features, fitted on 5,000 train samples",
        data="top-1 on 10,000 test samples of cifar100",
        calibration="500 train samples of cifar100",
        layout="toast",
        modality="image",
        model_class="Dinov2Model",
        family="dinov2",
        command="toast-search --model dinov2-base --dataset cifar100 --budget-gflops 16",
        datasets=["uoft-cs/cifar100"],
        budgets={"gflops": 16.0},
    )
    kwargs.update(overrides)
    directory = tmp_path / "chosen"
    directory.mkdir(exist_ok=True)
    return write_model_card(directory, **kwargs)


def test_the_card_carries_hub_metadata_and_says_what_was_removed(tmp_path):
    path = _card(tmp_path)
    assert path.name == "README.md"
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["base_model"] == "facebook/dinov2-base"
    assert data["library_name"] == "toast-search"  # the toast format loads with CompressedModel only
    assert {"toast-search", "depth-compression", "dinov2"} <= set(data["tags"])
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert data["datasets"] == ["uoft-cs/cifar100"]
    text = card.text
    assert "blocks 3–5" in text and "block 8" in text  # 2→5 removes 3, 4, 5; 7→8 removes 8
    assert "blocks 3, 4, 5, 8 removed" in text
    assert "`linear`" in text and "`identity`" in text
    assert "revision `0123abc`" in text
    assert "88.25 (-1.75 pts)" in text and "90.00" in text  # the chosen plan against the original
    assert "15.5 (70%)" in text  # GFLOPs, and the share of the original's
    assert "linear probe (closed-form ridge)" in text and "10,000 test samples of cifar100" in text
    assert "500 train samples of cifar100" in text
    assert "linear CKA" in text  # what fidelity measures, from the objective's description
    assert "CompressedModel.from_pretrained" in text
    assert "toast-search --model dinov2-base --dataset cifar100 --budget-gflops 16" in text
    assert "Latency was not measured" in text


@pytest.mark.parametrize(
    "layout, modality, model_class, library, tag, loader",
    [
        ("plain", "image", "ViTForImageClassification", "transformers", "image-classification", "pipeline("),
        ("plain", "image", "Dinov2Model", "transformers", "image-feature-extraction", "Dinov2Model.from_pretrained"),
        ("plain", "text", "BertModel", "transformers", "feature-extraction", "AutoTokenizer"),
        (
            "sentence-transformers",
            "text",
            "BertModel",
            "sentence-transformers",
            "sentence-similarity",
            "SentenceTransformer(path)",
        ),
        ("toast", "text", "BertModel", "toast-search", "feature-extraction", "CompressedModel.from_pretrained"),
    ],
)
def test_each_layout_gets_its_library_pipeline_and_loader(
    tmp_path, layout, modality, model_class, library, tag, loader
):
    path = _card(tmp_path, layout=layout, modality=modality, model_class=model_class, base_model=None, datasets=())
    card = ModelCard.load(path)
    assert card.data.library_name == library
    assert card.data.pipeline_tag == tag == pipeline_tag_for(modality, layout, model_class)
    assert card.data.base_model is None  # a model with no Hub id names none
    assert loader in card.text


def test_measured_latency_is_reported_with_device_and_runtime(tmp_path):
    latency = Latency(ms=2.5, baseline_ms=5.0, batch_size=8, device="NVIDIA H100", runtime="PyTorch 2.9, bfloat16")
    text = ModelCard.load(_card(tmp_path, latency=latency)).text
    assert "2.5 ms per batch of 8 on NVIDIA H100 (PyTorch 2.9, bfloat16)" in text
    assert "the original: 5 ms" in text


def test_the_command_is_one_that_runs_with_the_same_settings():
    argv = [
        "--model",
        "./models/my vit",
        "--dataset",
        "cifar10",
        "--translators",
        "identity,lowrank:8",
        "--plan=-1→0:linear, 2→3:identity",
        "--plan",
        "1→2:identity",
        "--budget-gflops",
        "3.5",
        "--objectives",
        "accuracy,fidelity,gflops",
        "--out",
        "runs/x",
        "--no-progress",
    ]
    settings = settings_from(build_search_parser().parse_args(argv))
    command = command_line(settings.to_json())
    words = shlex.split(command)
    assert words[:5] == ["toast-search", "--model", "./models/my vit", "--dataset", "cifar10"]
    again = settings_from(build_search_parser().parse_args(join_plan_values(words[1:])))
    expected = {k: v for k, v in settings.to_json().items() if k != "progress"}
    assert {k: v for k, v in again.to_json().items() if k != "progress"} == expected


def test_ordinary_modes_undo_safetensors_owner_only_files(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "chosen"
    folder.mkdir(mode=0o700)
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    ordinary_modes(folder)
    mask = _umask()
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask


def test_toast_json_records_the_name_as_given_and_a_path_only_when_local(tmp_path):
    local = SimpleNamespace(loaded=SimpleNamespace(model_id=str(tmp_path), revision="sha256:ab"))
    hub = SimpleNamespace(loaded=SimpleNamespace(model_id="facebook/dinov2-base", revision="c0ffee"))
    assert source_fields(SimpleNamespace(data=SimpleNamespace(model="demo-vit")), local) == {
        "source_model": "demo-vit",
        "source_revision": "sha256:ab",
        "source_path": str(tmp_path),
    }
    assert source_fields(SimpleNamespace(data=SimpleNamespace(model="dinov2-base")), hub) == {
        "source_model": "dinov2-base",
        "source_revision": "c0ffee",
    }


# ---------------------------------------------------------------- a run's chosen/


@pytest.fixture(scope="module")
def run(tiny_dirs, image_dataset_dir, tmp_path_factory) -> Path:
    """A tiny search that exports chosen/ (a budget), with the umask a shared machine commonly has."""
    out = tmp_path_factory.mktemp("card-run") / "run"
    argv = [
        "--model",
        str(tiny_dirs["vit-cls"]),
        "--dataset",
        str(image_dataset_dir),
        *SMALL_RUN,
        "--trials",
        "4",
        "--budget-fraction",
        "0.9",
        "--cache-dir",
        str(out.parent / "cache"),
        "--out",
        str(out),
    ]
    old = os.umask(0o022)
    try:
        with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            assert main(argv) == 0
    finally:
        os.umask(old)
    return out


def test_a_run_s_chosen_folder_has_a_card_ordinary_modes_and_its_source(run, tiny_dirs):
    chosen = run / "chosen"
    front = json.loads((run / "front.json").read_text())
    assert front["chosen"] is not None
    card = ModelCard.load(chosen / "README.md")
    meta = json.loads((chosen / "toast.json").read_text())
    layout = front["chosen_format"]
    assert card.data.library_name == {"plain": "transformers", "toast": "toast-search"}[layout]
    assert card.data.base_model is None  # a local folder has no Hub id
    assert "toast-search" in card.data.tags and card.data.pipeline_tag == "image-classification"
    plan = Plan.of(front["chosen"]["spans"], 4)
    assert f"`{plan}`" in card.text
    assert f"{front['chosen']['accuracy']:.2f}" in card.text
    assert "linear probe" in card.text and "test samples" in card.text
    assert f"--model {tiny_dirs['vit-cls']}" in card.text and f"--out {run}" in card.text
    for path in [chosen, *chosen.iterdir()]:
        expected = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name
    assert meta["source_model"] == str(tiny_dirs["vit-cls"])  # as the user gave it
    assert meta["source_path"] == str(Path(tiny_dirs["vit-cls"]).resolve())
    assert meta["source_revision"].startswith("sha256:")
