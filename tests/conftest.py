"""Tiny models of every supported family (random weights, saved to local folders) and made-up data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SMALL = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
IMAGE = dict(image_size=32, patch_size=8, num_channels=3)
#: The top of a script run in a fresh process to check an exported model the way its user loads it: every `import
#: toast` fails there, as on a machine without toast-search (its editable install notwithstanding).
NO_TOAST = r"""
import importlib.abc, json, sys

class NoToast(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "toast" or name.startswith("toast."):
            raise ModuleNotFoundError(f"No module named {name!r} (toast is not importable in this check)")
        return None

sys.meta_path.insert(0, NoToast())
"""

#: The sample counts of a small end-to-end run on the tiny models and the made-up datasets (seconds on one core).
SMALL_RUN = [
    "--calib-samples",
    "16",
    "--probe-samples",
    "30",
    "--eval-samples",
    "20",
    "--device",
    "cpu",
    "--no-progress",
]

FAMILY_NAMES = ["vit", "vit-cls", "deit", "dinov2", "dinov2-reg", "clip", "bert"]


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny randomly initialised Hugging Face model of family `name`."""
    import transformers as T

    torch.manual_seed(seed)
    if name == "vit":
        return T.ViTModel(T.ViTConfig(**SMALL, **IMAGE))
    if name == "vit-cls":
        return T.ViTForImageClassification(T.ViTConfig(**SMALL, **IMAGE, num_labels=5))
    if name == "deit":
        return T.DeiTModel(T.DeiTConfig(**SMALL, **IMAGE))
    if name == "dinov2":
        return T.Dinov2Model(T.Dinov2Config(**SMALL, **IMAGE))
    if name == "dinov2-reg":
        return T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(**SMALL, **IMAGE, num_register_tokens=2))
    if name == "clip":
        return T.CLIPVisionModel(T.CLIPVisionConfig(**SMALL, **IMAGE))
    if name == "bert":
        return T.BertModel(T.BertConfig(**SMALL, vocab_size=100, max_position_embeddings=64))
    raise ValueError(name)


def save_tiny(name: str, directory: Path, seed: int = 0) -> Path:
    """Save a tiny model of family `name` with its processor to `directory`."""
    import transformers as T

    model = tiny_model(name, seed)
    model.save_pretrained(directory)
    if name == "bert":
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
        (directory / "vocab.txt").write_text("\n".join(vocab))
        T.BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    else:
        T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every tiny family saved once per session."""
    root = tmp_path_factory.mktemp("models")
    return {name: save_tiny(name, root / name) for name in FAMILY_NAMES}


def example_inputs(name: str, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if name == "bert":
        ids = torch.randint(5, 100, (batch, 10), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 6:] = 0  # one padded sequence
        ids[0, 6:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=g)}


@pytest.fixture(scope="session")
def image_dataset_dir(tmp_path_factory) -> Path:
    """A made-up image classification dataset saved with `save_to_disk` (train and test splits)."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 3, n)
        images = []
        for y in labels:
            arr = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            arr[:, :, y] += 150  # the label is the dominant colour
            images.append(Image.fromarray(arr))
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
        return datasets.Dataset.from_dict({"img": images, "label": labels.tolist()}, features=feats)

    path = tmp_path_factory.mktemp("data") / "colours"
    datasets.DatasetDict({"train": make(40), "test": make(20)}).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def graded_dataset_dir(tmp_path_factory) -> Path:
    """Three classes told apart by a faint dominant colour in strong noise: the original model scores
    about 90 % and compressed plans spread between chance and that, so fronts are not degenerate."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 3, n)
        images = []
        for y in labels:
            arr = rng.integers(0, 200, (16, 16, 3)).astype(np.int32)
            arr[:, :, y] += 10
            images.append(Image.fromarray(arr.astype(np.uint8)))
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
        return datasets.Dataset.from_dict({"img": images, "label": labels.tolist()}, features=feats)

    path = tmp_path_factory.mktemp("graded") / "colours"
    datasets.DatasetDict({"train": make(60), "test": make(40)}).save_to_disk(str(path))
    return path
