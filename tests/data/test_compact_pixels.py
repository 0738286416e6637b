"""Compact pixel storage in the preprocessing cache: uint8 levels that decode to the processor's own output.

The demo-vit's processor and DINOv2-base's (the hub's preprocessor_config: BitImageProcessor, shortest edge
256, crop 224) in both backends; float16 and float32 where no table reproduces a processor's output; entries of
the float32 format (version 2) are kept apart, never read as compact.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import transformers as T
from test_hub_layouts import HUB

from toast.data import (
    InputsSpec,
    LabeledSplit,
    PreprocessedInputs,
    _inputs,
    _pixels,
    iter_batches,
    load_split,
    sample_ids,
)
from toast.models import LOCAL_ALIASES, load_model

DINOV2_PROCESSOR = HUB["facebook/dinov2-base"][1]  # its preprocessor_config.json, as published
BACKENDS = {"slow": False, "fast": True}  # use_fast; without torchvision transformers 5 gives the PIL one for both


class Shifted:
    """A processor whose output no table of uint8 levels reproduces: its own output times `scale`, plus `shift`,
    from call `start` on (its fields, which the tables are made from, are the inner processor's)."""

    def __init__(self, inner, *, scale: float = 1.0, shift: float = 0.0, start: int = 0) -> None:
        self.inner, self.scale, self.shift, self.start, self.calls = inner, scale, shift, start, 0

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.calls += 1
        if self.calls > self.start:
            out["pixel_values"] = out["pixel_values"] * self.scale + self.shift
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _expected(split, ids, processor, batch_size) -> torch.Tensor:
    return torch.cat([b["pixel_values"] for _, b in iter_batches(split, ids, processor, batch_size)])


def _storage(entry: PreprocessedInputs) -> dict:
    return entry.manifest["inputs"]["pixel_values"]


@pytest.fixture(scope="module")
def photos() -> LabeledSplit:
    """Made-up photos of several sizes (noise: every level of every channel occurs)."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(320, 240), (256, 256), (500, 375), (230, 300), (224, 224), (640, 480)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes * 2]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ds = datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(len(images))]}, features=features)
    return LabeledSplit(ds, "made-up", "test", "img", "label", "image")


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dinov2-base-processor")
    (folder / "preprocessor_config.json").write_text(json.dumps(DINOV2_PROCESSOR))
    return folder


def _float32_entry(monkeypatch, root, split, ids, processor, batch_size, *, spec=None):
    """The entry as format 2 stored it: float32 pixels (the storage choice forced)."""
    with monkeypatch.context() as m:
        m.setattr(_inputs, "choose", lambda name, first, processor, forms: _pixels.Storage(str(first.dtype)))
        if spec is None:
            return PreprocessedInputs.get_or_build(root, split, ids, processor, batch_size)
        PreprocessedInputs.build(PreprocessedInputs.entry_path(root, spec), spec, split, processor, batch_size)


def test_demo_vit_entry_is_uint8_exact_and_four_times_smaller(tmp_path, monkeypatch):
    processor = load_model("demo-vit").processor
    split = load_split("digits", "test")
    ids = sample_ids(len(split), 300, seed=0)
    entry = PreprocessedInputs.get_or_build(tmp_path / "compact", split, ids, processor, 64)
    assert _storage(entry)["storage"] == "uint8" and _storage(entry)["max_error"] == 0.0
    expected = list(iter_batches(split, ids, processor, 64))
    for (got_ids, got), (want_ids, want) in zip(entry.batches(), expected, strict=True):
        assert got_ids == want_ids
        assert got["pixel_values"].dtype == torch.float32 and torch.equal(got["pixel_values"], want["pixel_values"])
    whole = torch.cat([b["pixel_values"] for _, b in expected])
    assert torch.equal(entry.as_tensors()["pixel_values"], whole)
    assert torch.equal(torch.cat([b["pixel_values"] for _, b in entry.length_batches(50)]), whole)
    float32 = _float32_entry(monkeypatch, tmp_path / "float32", split, ids, processor, 64)
    assert _storage(float32)["storage"] == "float32"
    assert torch.equal(float32.as_tensors()["pixel_values"], whole)
    ratio = float32.path.stat().st_size / entry.path.stat().st_size
    assert 3.7 < ratio <= 4.0, ratio


@pytest.mark.parametrize("backend", BACKENDS)
def test_dinov2_base_processor_entry_equals_its_output(photos, dinov2_folder, tmp_path, backend):
    processor = T.AutoImageProcessor.from_pretrained(dinov2_folder, use_fast=BACKENDS[backend])
    ids = list(range(len(photos)))
    entry = PreprocessedInputs.get_or_build(tmp_path, photos, ids, processor, 5)
    info = _storage(entry)
    assert info["storage"] == "uint8" and info["shape"] == [3, 224, 224] and info["dtype"] == "float32"
    assert info["max_error"] == 0.0  # the table of the processor's own backend is chosen: exact
    expected = _expected(photos, ids, processor, 5)
    got = torch.cat([b["pixel_values"] for _, b in entry.batches()])
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    stored = set(np.unique(entry._open_table().column("pixel_values").combine_chunks().flatten().to_numpy()))
    assert len(stored) == 256  # the crop's levels, not a few
    per_image = entry.path.stat().st_size / len(ids)
    assert 3 * 224 * 224 <= per_image < 1.02 * 3 * 224 * 224  # 150.5 KB, against 602 KB in float32


def test_every_reader_decodes(photos, dinov2_folder, tmp_path):
    processor = T.AutoImageProcessor.from_pretrained(dinov2_folder)
    ids = [5, 0, 3, 7, 1]
    entry = PreprocessedInputs.get_or_build(tmp_path, photos, ids, processor, 2)
    expected = _expected(photos, ids, processor, 2)
    assert torch.equal(entry.as_tensors()["pixel_values"], expected)
    assert torch.equal(torch.cat([b["pixel_values"] for _, b in entry.batches(3)]), expected)
    assert torch.equal(entry._rows("pixel_values", 1, 4), expected[1:4])
    positions, inputs = zip(*entry.length_batches(4))
    assert torch.equal(torch.cat([i["pixel_values"] for i in inputs]), expected[np.concatenate(positions)])
    reopened = PreprocessedInputs.open(tmp_path, InputsSpec.of(photos, ids, processor), 2)
    assert torch.equal(reopened.as_tensors()["pixel_values"], expected)


@pytest.mark.parametrize(
    ("scale", "shift", "storage"),
    [(1.0, 0.003, "float16"), (1.0001, 0.0, "float16"), (1e5, 0.0, "float32")],  # off the levels; past float16
)
def test_fallback_when_no_table_reproduces_the_output(photos, dinov2_folder, tmp_path, scale, shift, storage):
    processor = Shifted(T.AutoImageProcessor.from_pretrained(dinov2_folder), scale=scale, shift=shift)
    ids = list(range(6))
    entry = PreprocessedInputs.get_or_build(tmp_path, photos, ids, processor, 3)
    assert _storage(entry)["storage"] == storage
    expected = _expected(photos, ids, Shifted(processor.inner, scale=scale, shift=shift), 3)
    got = entry.as_tensors()["pixel_values"]
    assert got.dtype == torch.float32
    if storage == "float16":
        assert torch.equal(got, expected.half().float())
        assert 0 < _storage(entry)["max_error"] <= _pixels.FLOAT16_TOLERANCE * expected.abs().max()
        assert entry.path.stat().st_size < 0.51 * 4 * expected.numel()
    else:
        assert torch.equal(got, expected) and _storage(entry)["max_error"] == 0.0


def test_a_processor_without_the_fields_falls_back(photos, tmp_path):
    inner = T.AutoImageProcessor.from_pretrained(LOCAL_ALIASES["demo-vit"])

    def bare(images, return_tensors):  # a callable with none of rescale_factor, image_mean, image_std
        return inner(images=images, return_tensors=return_tensors)

    entry = PreprocessedInputs.get_or_build(tmp_path, photos, [0, 1, 2], bare, 3)
    assert _storage(entry)["storage"] == "float16"
    assert torch.equal(entry.as_tensors()["pixel_values"], _expected(photos, [0, 1, 2], inner, 3).half().float())


def test_a_later_batch_off_the_levels_rebuilds_in_float32(photos, dinov2_folder, tmp_path):
    processor = Shifted(T.AutoImageProcessor.from_pretrained(dinov2_folder), shift=0.003, start=1)
    ids = list(range(6))
    with pytest.warns(UserWarning, match="later batch; storing float32"):
        entry = PreprocessedInputs.get_or_build(tmp_path, photos, ids, processor, 3)
    assert _storage(entry)["storage"] == "float32"
    assert processor.calls == 4  # the first pass stopped at its second batch; the second pass, both batches
    assert torch.equal(entry.as_tensors()["pixel_values"], _expected(photos, ids, processor, 3))


def test_float32_entries_of_format_2_are_not_misread(photos, dinov2_folder, tmp_path, monkeypatch):
    processor = T.AutoImageProcessor.from_pretrained(dinov2_folder)
    ids = list(range(4))
    spec = InputsSpec.of(photos, ids, processor)
    assert spec.version == _inputs.FORMAT_VERSION == 3
    old = dataclasses.replace(spec, version=2)
    assert old.key != spec.key  # another folder: the new format never opens an old entry
    _float32_entry(monkeypatch, tmp_path, photos, ids, processor, 2, spec=old)
    manifest_path = PreprocessedInputs.entry_path(tmp_path, old) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["inputs"] = {k: {"shape": v["shape"], "dtype": v["dtype"]} for k, v in manifest["inputs"].items()}
    manifest_path.write_text(json.dumps(manifest))  # exactly what format 2 wrote: no storage recorded
    expected = _expected(photos, ids, processor, 2)
    assert torch.equal(PreprocessedInputs.open(tmp_path, old, 2).as_tensors()["pixel_values"], expected)
    new = PreprocessedInputs.get_or_build(tmp_path, photos, ids, processor, 2)
    assert new.path.parent.name == spec.key and _storage(new)["storage"] == "uint8"
    assert torch.equal(new.as_tensors()["pixel_values"], expected)
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == sorted([old.key, spec.key])
