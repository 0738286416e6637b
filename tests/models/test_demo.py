"""The shipped demo model (`search/demo/`, alias `demo-vit`): loads offline, and is as good as its README says."""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

from toast.data import iter_batches, load_split
from toast.models import LOCAL_ALIASES, load_model, resolve_model_name

REPO = Path(__file__).resolve().parents[2]
DEMO = LOCAL_ALIASES["demo-vit"]
DEMO_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "README.md")


def _no_network(*args, **kwargs):
    raise OSError("network access attempted while loading the demo model")


@pytest.fixture(scope="module")
def demo():
    """`load_model("demo-vit")` with every socket connection refused: it must load offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        return load_model("demo-vit")


@pytest.fixture(scope="module")
def digits_test():
    return load_split("digits", "test")


def _readme_test_accuracy() -> float:
    match = re.search(r"^Test accuracy: ([0-9.]+)%", (DEMO / "README.md").read_text(), re.M)
    assert match, "search/demo/README.md must state 'Test accuracy: NN.NN%'"
    return float(match.group(1))


def test_alias_resolves_to_the_shipped_folder():
    assert Path(resolve_model_name("demo-vit")) == DEMO
    assert DEMO.is_dir() and DEMO.parent == Path(sys.modules["toast.models._loading"].__file__).resolve().parent
    for name in DEMO_FILES:
        assert (DEMO / name).is_file(), name
    assert (DEMO / "model.safetensors").stat().st_size < 5 * 2**20  # "a few MB at most"


def test_package_data_is_declared():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "demo/*" in pyproject["tool"]["setuptools"]["package-data"]["toast.models"]


def test_loads_as_a_vit_with_its_classification_head(demo):
    from transformers import ViTForImageClassification

    assert isinstance(demo.model, ViTForImageClassification)
    assert demo.family.name == "vit"
    assert demo.parts.head is demo.model.classifier and demo.parts.head_kind == "cls"
    assert demo.config.num_labels == 10
    assert demo.config.id2label == {i: str(i) for i in range(10)}
    assert demo.num_blocks == demo.config.num_hidden_layers >= 6
    assert demo.model_id == str(DEMO) and demo.revision.startswith("sha256:")
    assert not demo.model.training


def test_processor_gives_32px_rgb(demo, digits_test):
    assert demo.processor is not None
    _, inputs = next(iter_batches(digits_test, [0, 1, 2, 3, 4], demo.processor, 8))
    pixels = inputs["pixel_values"]
    assert pixels.shape == (5, 3, 32, 32)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0  # mean/std 0.5


def test_a_processor_missing_its_backend_says_what_to_install(demo):
    """Transformers 5.17's image processors need torchvision (5.25's do not): the ImportError Transformers raises for
    a processor class whose backend is not installed becomes one line naming it. `AutoVideoProcessor` needs
    torchvision in every Transformers 5, so it stands for that case here (skipped where torchvision is installed)."""
    from types import SimpleNamespace

    from toast.errors import MissingDependencyError
    from toast.models._loading import load_processor

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: nothing is missing")
    with pytest.raises(MissingDependencyError, match="requires the Torchvision library") as caught:
        load_processor(str(DEMO), SimpleNamespace(processor_class="AutoVideoProcessor"))
    assert "\n" not in str(caught.value) and "install that library" in str(caught.value)


def test_head_accuracy_matches_readme(demo, digits_test):
    claimed = _readme_test_accuracy()
    assert claimed >= 95.0
    ids = list(range(len(digits_test)))
    assert len(ids) == 450
    hits = 0
    with torch.no_grad():
        for chunk, inputs in iter_batches(digits_test, ids, demo.processor, 225):
            pred = demo.model(**inputs).logits.argmax(-1).numpy()
            hits += int((pred == digits_test.labels[chunk]).sum())
    assert 100 * hits / len(ids) >= claimed - 0.5


def _training_script():
    spec = importlib.util.spec_from_file_location("train_demo_vit", REPO / "scripts" / "train_demo_vit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_augmentation_keeps_background_and_is_seeded():
    augment = _training_script().augment
    x = torch.full((6, 3, 32, 32), -1.0)
    x[:, :, 8:24, 12:20] = 1.0  # a bright bar on background
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6
    blank = augment(torch.full((4, 3, 32, 32), -1.0), torch.Generator().manual_seed(0))
    assert torch.allclose(blank, torch.full_like(blank, -1.0))  # what moves in from outside is background
    again = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, x)
    assert np.isclose(out.mean().item(), x.mean().item(), atol=0.3)  # moved and erased, not wiped out
