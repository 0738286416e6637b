"""Datasets (aliases, digits, local paths, the hub offline) and the preprocessed-inputs cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from toast.data import (
    DATASET_ALIASES,
    DIGITS_FINGERPRINT,
    InputsSpec,
    PreprocessedInputs,
    default_splits,
    digits_split_indices,
    iter_batches,
    load_split,
    sample_ids,
)
from toast.errors import DatasetError


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """No hub (and no wait for one), and the `datasets` cache of built local data under tmp_path."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


@pytest.fixture(scope="module")
def processor():
    import transformers

    return transformers.ViTImageProcessor(size={"height": 32, "width": 32})


class CountingProcessor:
    """Wraps a processor and counts how often it is called."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _image(value: int, mode: str = "RGB"):
    from PIL import Image

    shape = (6, 6, 3) if mode == "RGB" else (6, 6)
    return Image.fromarray(np.full(shape, value, dtype=np.uint8))


# --- digits -------------------------------------------------------------------------------------


def test_digits_sizes_labels_and_fingerprint():
    train, test = load_split("digits", "train"), load_split("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert (train.input_column, train.label_column, train.modality) == ("image", "label", "image")
    for split in (train, test):
        assert sorted(set(split.labels.tolist())) == list(range(10))
    # stratified: every class's share of the test split is within one sample of proportional
    counts = np.bincount(np.concatenate([train.labels, test.labels]))
    assert np.all(np.abs(np.bincount(test.labels) - counts * 450 / 1797) < 1)
    idx = digits_split_indices()
    assert not set(idx["train"]) & set(idx["test"]) and len(idx["train"]) + len(idx["test"]) == 1797
    assert train.fingerprint == f"digits:{DIGITS_FINGERPRINT}"
    image = train.dataset[0]["image"]
    assert image.mode == "L" and image.size == (8, 8)
    pixels = np.stack([np.asarray(train.dataset[i]["image"]) for i in range(50)])
    assert pixels.max() == 255 and pixels.min() == 0  # 0-16 scaled to 0-255


def test_digits_split_is_fixed():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    test = load_split("digits", "test")
    ids = digits_split_indices()["test"]
    assert test.labels.tolist() == bunch.target[ids].tolist()
    expected = np.rint(bunch.images[ids[:5]] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(np.stack([np.asarray(test.dataset[i]["image"]) for i in range(5)]), expected)
    # a hash-ordered split: the same in every process and numpy version
    assert ids[:5].tolist() == digits_split_indices()["test"][:5].tolist()


def test_grayscale_digits_become_rgb_through_the_processor(processor):
    split = load_split("digits", "train")
    batches = list(iter_batches(split, range(10), processor, 4))
    assert [ids for ids, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][1]["pixel_values"].shape == (4, 3, 32, 32)
    px = batches[0][1]["pixel_values"]
    torch.testing.assert_close(px[:, 0], px[:, 1])  # grey: the three channels are equal


def test_digits_unknown_split_lists_splits():
    with pytest.raises(DatasetError, match=r"no split 'validation' \(splits: train, test\)"):
        load_split("digits", "validation")


# --- local paths ----------------------------------------------------------------------------------


def test_image_folder_with_class_subfolders(tmp_path):
    root = tmp_path / "pets"
    for label, value in (("cat", 10), ("dog", 200)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            _image(value + i, "L").save(root / label / f"{i}.png")
    split = load_split(str(root), "train")
    assert (len(split), split.input_column, split.label_column, split.modality) == (6, "image", "label", "image")
    assert split.dataset.features["label"].names == ["cat", "dog"]
    values = [int(np.asarray(split.dataset[i]["image"]).mean()) for i in range(6)]
    assert [v >= 200 for v in values] == [bool(y) for y in split.labels]
    with pytest.raises(DatasetError, match=r"no split 'test' \(splits: train\)"):
        load_split(str(root), "test")


def test_image_folder_with_split_subfolders(tmp_path):
    root = tmp_path / "pets"
    for split_name, n in (("train", 4), ("test", 2)):
        for label in ("cat", "dog"):
            (root / split_name / label).mkdir(parents=True)
            for i in range(n):
                _image(i).save(root / split_name / label / f"{i}.jpg")
    train, test = load_split(str(root), "train"), load_split(str(root), "test")
    assert (len(train), len(test)) == (8, 4)
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1]
    assert train.fingerprint != test.fingerprint
    assert load_split(str(root), "train").fingerprint == train.fingerprint  # stable


def test_parquet_file_and_folder(tmp_path):
    import datasets

    feats = datasets.Features(
        {
            "picture": datasets.Image(),
            "target": datasets.ClassLabel(names=["a", "b", "c"]),
            "note": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"picture": [_image(i * 40) for i in range(6)], "target": [0, 1, 2, 0, 1, 2], "note": list("uvwxyz")},
        features=feats,
    )
    ds.to_parquet(str(tmp_path / "one.parquet"))
    split = load_split(str(tmp_path / "one.parquet"), "train")
    assert (len(split), split.input_column, split.label_column, split.modality) == (6, "picture", "target", "image")
    assert split.labels.tolist() == [0, 1, 2, 0, 1, 2]
    folder = tmp_path / "pq"
    folder.mkdir()
    ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    ds.select(range(3)).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    assert len(load_split(str(folder), "test")) == 3
    # explicit columns override the guess
    assert load_split(str(tmp_path / "one.parquet"), "train", label_column="note").label_column == "note"


def test_save_to_disk_dict_and_bare_dataset(tmp_path):
    import datasets

    texts = datasets.Dataset.from_dict({"sentence": ["a b", "c"], "y": [1, 0]})
    datasets.DatasetDict({"train": texts, "validation": texts}).save_to_disk(str(tmp_path / "dict"))
    split = load_split(str(tmp_path / "dict"), "validation")
    assert (split.input_column, split.label_column, split.modality) == ("sentence", "y", "text")
    with pytest.raises(DatasetError, match=r"no split 'test' \(splits: train, validation\)"):
        load_split(str(tmp_path / "dict"), "test")
    texts.save_to_disk(str(tmp_path / "bare"))
    bare = load_split(str(tmp_path / "bare"), "train")
    assert len(bare) == 2 and bare.labels.tolist() == [1, 0]
    assert bare.fingerprint == load_split(str(tmp_path / "bare"), "train").fingerprint


def test_missing_columns_and_paths_are_one_line_errors(tmp_path, image_dataset_dir):
    with pytest.raises(DatasetError, match="no label column 'nope'"):
        load_split(str(image_dataset_dir), "train", label_column="nope")
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_split(str(tmp_path / "absent"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no dataset"):
        load_split(str(tmp_path / "empty"), "train")


# --- the hub --------------------------------------------------------------------------------------


def test_unreachable_hub_dataset_is_one_line_with_a_local_copy_hint():
    with pytest.raises(DatasetError) as info:
        load_split("nobody-here/no-such-dataset", "train")
    message = str(info.value)
    assert "\n" not in message
    assert (
        "unreachable" in message
        and "local copy" in message
        and "`dataset` (a path)" in message
        and "save_to_disk" in message
        and "parquet" in message
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback


def test_alias_table_matches_the_hub_cards():
    table = {
        name: (a.hub_id, a.input_column, a.label_column, a.train_split, a.test_split)
        for name, a in DATASET_ALIASES.items()
    }
    assert table == {
        "mnist": ("ylecun/mnist", "image", "label", "train", "test"),
        "fashion-mnist": ("zalando-datasets/fashion_mnist", "image", "label", "train", "test"),
        "cifar10": ("uoft-cs/cifar10", "img", "label", "train", "test"),
        "cifar100": ("uoft-cs/cifar100", "img", "fine_label", "train", "test"),
        "cifar100-coarse": ("uoft-cs/cifar100", "img", "coarse_label", "train", "test"),
        "imagenet-1k": ("ILSVRC/imagenet-1k", "image", "label", "train", "validation"),
    }
    assert default_splits("imagenet-1k") == ("train", "validation")
    assert default_splits("some/dataset") == default_splits("digits") == ("train", "test")


@pytest.mark.parametrize(("alias", "label"), [("cifar100", "fine_label"), ("cifar100-coarse", "coarse_label")])
def test_alias_loads_its_hub_id_with_its_columns(monkeypatch, alias, label):
    import datasets

    calls = []
    feats = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(num_classes=100),
            "coarse_label": datasets.ClassLabel(num_classes=20),
        }
    )
    fake = datasets.Dataset.from_dict({"img": [_image(0)], "fine_label": [42], "coarse_label": [7]}, features=feats)

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    split = load_split(alias, "test")
    assert calls == [("uoft-cs/cifar100", {"split": "test"})]
    assert (split.name, split.input_column, split.label_column) == ("uoft-cs/cifar100", "img", label)
    assert split.fingerprint == f"uoft-cs/cifar100:{fake._fingerprint}"


def test_hub_unknown_split_lists_splits(monkeypatch):
    import datasets

    def load_dataset(path, **kwargs):
        raise ValueError(f"Unknown split \"{kwargs['split']}\". Should be one of ['train', 'test'].")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DatasetError, match=r"no split 'validation' \(splits: train, test\)"):
        load_split("some/dataset", "validation")


# --- preprocessed inputs --------------------------------------------------------------------------


def test_preprocessed_batches_equal_iter_batches_and_are_built_once(tmp_path, processor):
    split = load_split("digits", "test")
    ids = sample_ids(len(split), 23, seed=1)
    expected = list(iter_batches(split, ids, processor, 5))
    counting = CountingProcessor(processor)
    inputs = PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 5)
    assert counting.calls == 5 and len(inputs) == 23 and inputs.shapes == {"pixel_values": (3, 32, 32)}
    for _ in range(2):  # iterable more than once
        got = list(inputs)
        assert [i for i, _ in got] == [i for i, _ in expected]
        for (_, a), (_, b) in zip(got, expected):
            assert a.keys() == b.keys()
            assert (
                torch.equal(a["pixel_values"], b["pixel_values"]) and a["pixel_values"].dtype == b["pixel_values"].dtype
            )
    again = PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 5)
    assert counting.calls == 5  # no image decoded or processed again
    assert torch.equal(again.as_tensors()["pixel_values"], torch.cat([b["pixel_values"] for _, b in expected]))
    assert [len(i) for i, _ in again.batches(10)] == [10, 10, 3]
    # another sample set is another entry
    PreprocessedInputs.get_or_build(tmp_path, split, ids[:-1], counting, 5)
    assert counting.calls == 10
    assert len(list((tmp_path / "inputs").glob("*/inputs.arrow"))) == 2 and not list((tmp_path / "inputs").glob(".*"))


def test_corrupted_preprocessed_inputs_are_detected_and_rebuilt(tmp_path, processor):
    split = load_split("digits", "train")
    ids = sample_ids(len(split), 8, seed=0)
    counting = CountingProcessor(processor)
    first = PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 4)
    reference = first.as_tensors()["pixel_values"]
    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupted"):
        rebuilt = PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 4)
    assert counting.calls == 4  # two batches per build
    assert torch.equal(rebuilt.as_tensors()["pixel_values"], reference)
    # a truncated file, a missing manifest and a missing file are caught too
    rebuilt.path.write_bytes(rebuilt.path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="truncated"):
        PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 4)
    (rebuilt.path.parent / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="incomplete"):
        PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 4)
    rebuilt.path.unlink()
    with pytest.warns(UserWarning, match="missing"):
        PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 4)
    assert counting.calls == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = PreprocessedInputs.get_or_build(tmp_path, split, ids, counting, 4)
    assert counting.calls == 10
    assert torch.equal(again.as_tensors()["pixel_values"], reference)
    assert not list((tmp_path / "inputs").glob(".*")), "no temporary folder is left behind"


def test_interrupted_preprocessing_leaves_no_entry(tmp_path, processor):
    split = load_split("digits", "train")
    ids = sample_ids(len(split), 8, seed=0)

    class Interrupted(CountingProcessor):
        def __call__(self, *args, **kwargs):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().__call__(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        PreprocessedInputs.get_or_build(tmp_path, split, ids, Interrupted(processor), 4)
    assert not PreprocessedInputs.exists(tmp_path, InputsSpec.of(split, ids, processor))
    assert list((tmp_path / "inputs").iterdir()) == []


def test_preprocessed_reads_are_memory_mapped(tmp_path, processor):
    import pyarrow as pa

    split = load_split("digits", "train")
    built = PreprocessedInputs.get_or_build(tmp_path, split, sample_ids(len(split), 64, seed=0), processor, 16)
    assert built.path == tmp_path / "inputs" / built.path.parent.name / "inputs.arrow"
    reopened = PreprocessedInputs.get_or_build(tmp_path, split, sample_ids(len(split), 64, seed=0), processor, 16)
    before = pa.total_allocated_bytes()
    assert len(reopened.ids) == 64
    grown = pa.total_allocated_bytes() - before
    assert grown < built.path.stat().st_size // 10, "the table is read over a memory map, not into memory"


def test_preprocessed_key_covers_what_changes_the_inputs(processor):
    import transformers

    split = load_split("digits", "train")
    base = InputsSpec.of(split, [1, 2, 3], processor)
    other_processor = transformers.ViTImageProcessor(size={"height": 16, "width": 16})
    variants = [
        InputsSpec.of(split, [1, 2, 4], processor),
        InputsSpec.of(load_split("digits", "test"), [1, 2, 3], processor),
        InputsSpec.of(split, [1, 2, 3], other_processor),
        InputsSpec.of(split, [1, 2, 3], processor, max_length=128),
    ]
    assert len({base.key, *(v.key for v in variants)}) == 5
    assert InputsSpec.of(load_split("digits", "train"), (1, 2, 3), processor).key == base.key


def test_preprocessed_text_pads_the_set_and_trims_each_batch(tmp_path, tiny_dirs):
    import datasets
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_dirs["bert"]))
    texts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13", "w14", "w15 w16"]
    datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1, 0, 1]}).save_to_disk(str(tmp_path / "txt"))
    split = load_split(str(tmp_path / "txt"), "train")
    ids = [4, 1, 3, 0, 2, 5]
    expected = list(iter_batches(split, ids, tokenizer, 2))
    counting = CountingProcessor(tokenizer)
    inputs = PreprocessedInputs.get_or_build(tmp_path / "cache", split, ids, counting, 2)
    got = list(inputs)
    assert [i for i, _ in got] == [[4, 1], [3, 0], [2, 5]]
    for (_, a), (_, b) in zip(got, expected):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    whole = inputs.as_tensors()
    assert whole["input_ids"].shape == (6, 9)  # the longest text: 7 words + [CLS] + [SEP]
    assert whole["attention_mask"].sum(1).tolist() == [3, 3, 4, 5, 9, 4]
    PreprocessedInputs.get_or_build(tmp_path / "cache", split, ids, counting, 2)
    assert counting.calls == 1
