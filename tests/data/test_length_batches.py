"""Text forwards batched by length (issue 12: the text forward as fast as sentence-transformers'): every row once,
less padding than the stored order, and the same features back in the stored order."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from toast.data import LabeledSplit, PreprocessedInputs
from toast.models import CompressedModel, load_model
from toast.spaces import Plan


def text_split(n: int = 37) -> LabeledSplit:
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{int(i)}" for i in rng.integers(5, 95, rng.integers(1, 30))) for _ in range(n)]
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    data = datasets.Dataset.from_dict({"text": texts, "label": rng.integers(0, 2, n).tolist()}, features=feats)
    return LabeledSplit(data, "words", "train", "text", "label", "text")


def test_length_batches_cover_every_row_once_with_less_padding(tiny_dirs, tmp_path):
    loaded = load_model(str(tiny_dirs["bert"]))
    split = text_split()
    inputs = PreprocessedInputs.get_or_build(tmp_path, split, list(range(len(split))), loaded.processor, 8)
    rows = [r for r, _ in inputs.length_batches()]
    assert sorted(np.concatenate(rows).tolist()) == list(range(len(split)))
    padded = lambda batches: sum(b["input_ids"].numel() for _, b in batches)  # noqa: E731
    assert padded(inputs.length_batches()) < padded(inputs.batches())
    # the same rows as the stored order's, token for token (padding trimmed per batch)
    stored = inputs.as_tensors()
    for r, batch in inputs.length_batches():
        width = batch["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"], stored["input_ids"][torch.from_numpy(r), :width])
        assert int(batch["attention_mask"].sum()) == int(stored["attention_mask"][torch.from_numpy(r)].sum())

    model = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    with torch.inference_mode():
        reference = np.concatenate([model.features(b).numpy() for _, b in inputs.batches()])
        feats, positions = [], []
        for r, b in inputs.length_batches():
            feats.append(model.features(b).numpy())
            positions.append(r)
    got = np.concatenate(feats)[np.argsort(np.concatenate(positions))]
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


def test_images_keep_the_stored_order(tiny_dirs, image_dataset_dir, tmp_path):
    from toast.data import load_split

    loaded = load_model(str(tiny_dirs["vit"]))
    split = load_split(str(image_dataset_dir), "train")
    inputs = PreprocessedInputs.get_or_build(tmp_path, split, list(range(10)), loaded.processor, 4)
    rows = [r.tolist() for r, _ in inputs.length_batches()]
    assert rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_subset_of_rows_reads_those_rows_only(tiny_dirs, image_dataset_dir, tmp_path):
    from toast.data import load_split

    subset = np.array([7, 1, 4, 9, 2])
    for name, split in (("bert", text_split()), ("vit", load_split(str(image_dataset_dir), "train"))):
        loaded = load_model(str(tiny_dirs[name]))
        inputs = PreprocessedInputs.get_or_build(tmp_path / name, split, list(range(12)), loaded.processor, 2)
        stored = inputs.as_tensors()
        got = list(inputs.length_batches(rows=subset))
        assert sorted(np.concatenate([r for r, _ in got]).tolist()) == sorted(subset.tolist())
        for r, batch in got:
            for key, value in batch.items():
                width = value.shape[1] if name == "bert" else None
                want = stored[key][torch.from_numpy(r)]
                assert torch.equal(value, want[:, :width] if width else want), (name, key)
        masks = list(inputs.length_batches(rows=subset, names=("attention_mask",)))
        assert all(set(b) == ({"attention_mask"} if name == "bert" else set()) for _, b in masks)
