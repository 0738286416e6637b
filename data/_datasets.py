"""Datasets: a labeled split with its input column, and batches through the model's own processor.

`load_split` takes, in this order of precedence:

- an alias for the papers' datasets (`DATASET_ALIASES`: `mnist`, `fashion-mnist`, `cifar10`, `cifar100`,
  `cifar100-coarse`, `imagenet-1k`), each with its Hugging Face id, columns and split names;
- `digits`: scikit-learn's bundled 8×8 digits, always offline, split 1,347/450 (stratified, fixed);
- a local path: a `save_to_disk` folder (Dataset or DatasetDict), a parquet file, a folder of
  parquet files, or an image folder (class subfolders, optionally under split subfolders `train/…`);
- any other name is a Hugging Face dataset id (`datasets.load_dataset(id, split=...)`).

Use `./name` for a local folder whose name is also an alias.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._hub import hub_access
from ..errors import DatasetError
from ._split import IMAGE_SUFFIXES, LabeledSplit

LABEL_COLUMNS = ("label", "labels", "fine_label", "y", "target")
TEXT_COLUMNS = ("text", "sentence", "content", "document")
LOCAL_FORMATS = (
    "a folder written by datasets' save_to_disk, an image folder (class subfolders, optionally under train/ and test/), "
    "or a parquet file or folder"
)
LOCAL_COPY_HINT = f"pass a local copy as `dataset` (a path): {LOCAL_FORMATS}"


@dataclass(frozen=True)
class DatasetAlias:
    """A short name for one of the papers' datasets: where it lives on the Hub and how it is laid out."""

    hub_id: str
    input_column: str
    label_column: str
    train_split: str = "train"
    test_split: str = "test"


DATASET_ALIASES: dict[str, DatasetAlias] = {
    "mnist": DatasetAlias("ylecun/mnist", "image", "label"),
    "fashion-mnist": DatasetAlias("zalando-datasets/fashion_mnist", "image", "label"),
    "cifar10": DatasetAlias("uoft-cs/cifar10", "img", "label"),
    "cifar100": DatasetAlias("uoft-cs/cifar100", "img", "fine_label"),
    "cifar100-coarse": DatasetAlias("uoft-cs/cifar100", "img", "coarse_label"),
    # the test split's labels are withheld (-1): the papers report the validation split
    "imagenet-1k": DatasetAlias("ILSVRC/imagenet-1k", "image", "label", test_split="validation"),
}

DIGITS = "digits"
DIGITS_FINGERPRINT = "sklearn-load_digits-v1"
DIGITS_TEST_SIZE = 450


def default_splits(name: str) -> tuple[str, str]:
    """The `(train, test)` split names to use when the user names none."""
    alias = DATASET_ALIASES.get(name)
    if alias is not None:
        return alias.train_split, alias.test_split
    return "train", "test"


def _pick_columns(
    ds: Any, name: str, input_column: str | None, label_column: str | None
) -> tuple[str, str | None, str]:
    import datasets

    feats = ds.features
    if input_column is None:
        images = [c for c, f in feats.items() if isinstance(f, datasets.Image)]
        texts = [c for c in TEXT_COLUMNS if c in feats]
        if images:
            input_column = images[0]
        elif texts:
            input_column = texts[0]
        else:
            raise DatasetError(
                f"dataset {name!r} has no image column and no text column (columns: {', '.join(feats)}): pass `input_column`"
            )
    elif input_column not in feats:
        raise DatasetError(f"dataset {name!r} has no column {input_column!r} (columns: {', '.join(feats)})")
    feature = feats[input_column]
    if isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype not in ("string", "large_string")
    ):
        raise DatasetError(
            f"column {input_column!r} of dataset {name!r} holds {getattr(feature, 'dtype', 'label')} values, not "
            f"images or text: pass `input_column` naming the column of images or texts"
        )
    modality = "image" if isinstance(feature, datasets.Image) else "text"
    if label_column is None:
        label_column = next((c for c in LABEL_COLUMNS if c in feats), None)
        if label_column is None:
            label_column = next((c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)), None)
    elif label_column not in feats:
        raise DatasetError(
            f"dataset {name!r} has no label column {label_column!r} (columns: {', '.join(feats)}): pass `label_column`"
        )
    return input_column, label_column, modality


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _select_split(data: Any, name: str, split: str) -> Any:
    """`data[split]` for a DatasetDict (a missing split lists those that exist); `data` for a Dataset."""
    import datasets

    if isinstance(data, (datasets.DatasetDict, dict)):
        if split not in data:
            raise DatasetError(
                f"dataset {name!r} has no split {split!r} (splits: {', '.join(data)}): pass `split_train` / `split_test`"
            )
        return data[split]
    return data


def looks_like_path(name: str) -> bool:
    """A name that cannot be a Hub id (`name` or `owner/name`) is meant as a local path."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or name.endswith(".parquet")


def load_split(
    name: str,
    split: str,
    *,
    input_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | Path | None = None,
) -> LabeledSplit:
    """A split of an alias, `digits`, a local path or a Hugging Face dataset id (see the module's doc).

    What this builds is kept under `cache_dir` (the run's cache root; None: `default_cache_dir()`), in `datasets/`:
    the `docstrings` corpus, and the Arrow tables `datasets` converts a local parquet file or image folder into. A
    Hub dataset is downloaded into Hugging Face's own cache (`$HF_HOME`), shared with the user's other tools."""
    alias = DATASET_ALIASES.get(name)
    if alias is not None:
        data = _load_hub(alias.hub_id, split, shown=name)
        return _labeled(
            data, alias.hub_id, split, input_column or alias.input_column, label_column or alias.label_column
        )
    from ._corpus import corpus_split

    corpus = corpus_split(name, split)  # the offline corpus, or a local text file or folder (documents for an LM)
    if corpus is not None:
        return corpus
    if name == DOCSTRINGS:
        name = str(_docstrings_folder(cache_dir))
    if name == DIGITS:
        data = _digits_split(split)
        columns = _pick_columns(data, name, input_column, label_column)
        return LabeledSplit(data, DIGITS, split, *columns, source_fingerprint=DIGITS_FINGERPRINT)
    path = Path(name).expanduser()
    if path.exists():
        data = _load_local(path, name, split, cache_dir)
        return _labeled(data, str(path.resolve()), split, input_column, label_column)
    if looks_like_path(name):
        raise DatasetError(
            f"dataset {name!r} not found: no such file or folder (aliases: {', '.join(DATASET_ALIASES)}, {DIGITS})"
        )
    data = _load_hub(name, split, shown=name)
    return _labeled(data, name, split, input_column, label_column)


DOCSTRINGS = "docstrings"


def datasets_cache(cache_dir: str | Path | None) -> Path:
    """Where the datasets this package builds are kept: `<cache_dir>/datasets` (None: under `default_cache_dir()`)."""
    from .._artifacts import default_cache_dir

    return Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "datasets"


def _docstrings_folder(cache_dir: str | Path | None = None) -> Path:
    """`docstrings`: real text with real labels (which package a docstring comes from), built once into the cache."""
    from ._textdata import build_docstring_dataset

    return Path(build_docstring_dataset(datasets_cache(cache_dir) / "docstrings", overwrite=True))


def _labeled(data: Any, name: str, split: str, input_column: str | None, label_column: str | None) -> LabeledSplit:
    columns = _pick_columns(data, name, input_column, label_column)
    return LabeledSplit(data, name, split, *columns)


# --- local paths ------------------------------------------------------------------------------


def _load_local(path: Path, name: str, split: str, cache_dir: str | Path | None = None) -> Any:
    import datasets

    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        try:
            data = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DatasetError(f"cannot read dataset folder {name!r}: {_first_line(exc)}") from None
        except IndexError:  # `datasets` cannot concatenate the zero tables of a split saved without rows
            raise DatasetError(
                f"a split of dataset folder {name!r} is empty (saved without rows): give it samples, or save the "
                "dataset without it and pass `split_train` / `split_test` naming splits that hold samples"
            ) from None
        return _select_split(data, name, split)
    if path.is_file():
        if path.suffix != ".parquet":
            raise DatasetError(f"cannot read {name!r}: expected {LOCAL_FORMATS}")
        builder, kwargs = "parquet", {"data_files": str(path)}
    else:
        builder = _folder_builder(path)
        if builder is None:
            raise DatasetError(f"folder {name!r} holds no dataset: expected {LOCAL_FORMATS}")
        kwargs = {"data_dir": str(path)}
    try:  # the Arrow conversion under our cache root, not datasets' default (~/.cache/huggingface)
        data = datasets.load_dataset(builder, cache_dir=str(datasets_cache(cache_dir) / "arrow"), **kwargs)
    except (FileNotFoundError, ValueError, OSError, datasets.exceptions.DatasetsError) as exc:
        raise DatasetError(f"cannot read {builder} data at {name!r}: {_first_line(exc)}") from None
    return _select_split(data, name, split)


def _folder_builder(path: Path) -> str | None:
    """`parquet` or `imagefolder`, from the first data file found under `path` (None: neither)."""
    for _, dirs, files in os.walk(path):  # stops at the first data file: cheap on huge image folders
        dirs.sort()
        suffixes = {os.path.splitext(f)[1].lower() for f in files}
        if ".parquet" in suffixes:
            return "parquet"
        if suffixes & set(IMAGE_SUFFIXES):
            return "imagefolder"
    return None


# --- the Hugging Face Hub -----------------------------------------------------------------------


def _load_hub(hub_id: str, split: str, *, shown: str) -> Any:
    """`datasets.load_dataset(hub_id, split=split)`, its failures turned into one-line `DatasetError`s."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    label = shown if shown == hub_id else f"{shown} ({hub_id})"
    try:
        with hub_access() as unreachable:  # no answer from the Hub: offline at once, not five retries
            return datasets.load_dataset(hub_id, split=split)
    except _network_errors() as exc:  # offline mode, no network, hub down
        why = unreachable or ("offline mode is on" if "OfflineModeIsEnabled" in str(exc) else "no connection")
        raise DatasetError(
            f"dataset {label!r}: the Hugging Face Hub is unreachable ({why}); {LOCAL_COPY_HINT}"
        ) from None
    except DatasetNotFoundError as exc:  # unknown id, gated, no access
        raise DatasetError(
            f"dataset {label!r} is not available from the Hugging Face Hub ({_first_line(exc)}); check the id, or {LOCAL_COPY_HINT}"
        ) from None
    except ValueError as exc:
        splits = _splits_from_message(str(exc))
        if splits is not None:
            raise DatasetError(
                f"dataset {label!r} has no split {split!r} (splits: {', '.join(splits)}): pass `split_train` / `split_test`"
            ) from None
        raise DatasetError(f"cannot load dataset {label!r}: {_first_line(exc)}") from None
    except (FileNotFoundError, OSError, datasets.exceptions.DatasetsError) as exc:
        raise DatasetError(
            f"cannot load dataset {label!r} from the Hugging Face Hub ({_first_line(exc)}); {LOCAL_COPY_HINT}"
        ) from None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures: the built-in ones and the transport errors of the HTTP client in use."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx", "httpx2"):  # huggingface_hub's client, if it has been imported
        transport = getattr(sys.modules.get(module), "TransportError", None)
        if isinstance(transport, type) and issubclass(transport, BaseException):
            errors.append(transport)
    return tuple(errors)


def _splits_from_message(message: str) -> list[str] | None:
    """The split names in `datasets`' 'Unknown split "x". Should be one of [...]' message."""
    match = re.search(r"Unknown split.*?one of (\[.*?\])", message, re.S)
    if match is None:
        return None
    try:
        return [str(s) for s in ast.literal_eval(match.group(1))]
    except (ValueError, SyntaxError):
        return None


# --- scikit-learn's digits ----------------------------------------------------------------------


def digits_split_indices() -> dict[str, np.ndarray]:
    """The fixed stratified split of the 1,797 digits: 450 for `test`, the rest for `train` (sorted).

    Within each class, samples are ordered by a hash of their index (independent of any random
    generator's version) and the first ones go to `test`, as many per class as proportional
    allocation (largest remainders) gives.
    """
    y = _digits_arrays()[1]
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * DIGITS_TEST_SIZE / len(y)
    take = np.floor(quota).astype(int)
    for c in np.argsort(-(quota - take), kind="stable")[: DIGITS_TEST_SIZE - take.sum()]:
        take[c] += 1
    test: list[int] = []
    for c, k in zip(classes, take):
        members = np.flatnonzero(y == c)
        order = sorted(members, key=lambda i: hashlib.sha256(f"digits:{int(i)}".encode()).digest())
        test.extend(int(i) for i in order[:k])
    test_ids = np.sort(np.asarray(test))
    return {"train": np.setdiff1d(np.arange(len(y)), test_ids), "test": test_ids}


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the digits dataset comes with scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _digits_split(split: str) -> Any:
    import datasets
    from PIL import Image

    indices = digits_split_indices()
    if split not in indices:
        raise DatasetError(
            f"dataset {DIGITS!r} has no split {split!r} (splits: {', '.join(indices)}): pass `split_train` / `split_test`"
        )
    images, target = _digits_arrays()
    ids = indices[split]
    feats = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(images[i]) for i in ids], "label": target[ids].tolist()},
        features=feats,
        split=split,
    )


# --- samples and batches ------------------------------------------------------------------------


def sample_ids(n_total: int, n: int, seed: int) -> tuple[int, ...]:
    """`n` distinct indices drawn at random (seeded), sorted; all of them when `n >= n_total`."""
    if n >= n_total:
        return tuple(range(n_total))
    rng = np.random.default_rng(seed)
    return tuple(sorted(int(i) for i in rng.choice(n_total, size=n, replace=False)))


def preprocessing_fingerprint(processor: Any) -> str:
    """The processor's configuration as canonical JSON (part of every cache key)."""
    if processor is None:
        return "none"
    if hasattr(processor, "to_json_string"):
        return processor.to_json_string()
    return repr(processor)


def _decoded_images(split: LabeledSplit, rows: list[int]) -> list[Any]:
    """The images of `rows`, decoded and in RGB; an image that cannot be decoded is a one-line `DatasetError` naming
    its row (decoded one by one only then, to find it)."""
    try:
        return [im.convert("RGB") for im in split.dataset[rows][split.input_column]]
    except Exception:  # PIL's UnidentifiedImageError, OSError on truncated bytes, ValueError from datasets
        pass
    for row in rows:
        try:
            split.dataset[row][split.input_column].convert("RGB")
        except Exception as exc:
            why = " ".join(str(exc).split())[:160]
            raise DatasetError(
                f"row {row} of split {split.split!r} of dataset {split.name!r} holds an image that cannot be decoded "
                f"({type(exc).__name__}: {why}): remove or replace it"
            ) from None
    raise DatasetError(
        f"the images of rows {rows[0]}…{rows[-1]} of split {split.split!r} of {split.name!r} cannot be decoded"
    )


def iter_batches(
    split: LabeledSplit, ids: Sequence[int], processor: Any, batch_size: int, *, max_length: int = 256
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """`(sample ids, model inputs)` batches; images converted to RGB and run through the processor."""
    if processor is None:
        raise DatasetError("the model has no saved image processor or tokenizer: save one next to the weights")
    for start in range(0, len(ids), batch_size):
        chunk = list(ids[start : start + batch_size])
        if split.modality == "image":
            inputs = processor(images=_decoded_images(split, chunk), return_tensors="pt")
            yield chunk, {"pixel_values": inputs["pixel_values"]}
        elif split.modality == "causal-lm":  # packed token sequences (`toast.data._corpus`): full, no padding
            tokens = torch.as_tensor(split.dataset[chunk][split.input_column], dtype=torch.long)
            yield chunk, {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}
        else:
            rows = split.dataset[chunk][split.input_column]
            enc = processor(list(rows), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            yield chunk, {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def length_sorted_batches(
    texts: Sequence[str], tokenizer: Any, batch_size: int = 64, *, max_length: int = 256
) -> list[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """`(row indices, tokenized inputs)` with texts of similar length batched together (little padding)."""
    texts = list(texts)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    batches = []
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        batches.append((index, dict(enc)))
    return batches


@torch.inference_mode()
def features_in_order(model: Any, batches: Sequence[tuple[np.ndarray, dict[str, torch.Tensor]]]) -> np.ndarray:
    """`model.features` of `length_sorted_batches` output, float64, back in the texts' original order."""
    rows, feats = [], []
    for index, inputs in batches:
        rows.append(index)
        feats.append(model.features(inputs).double().numpy())
    out = np.empty((sum(len(r) for r in rows), feats[0].shape[1]))
    out[np.concatenate(rows)] = np.concatenate(feats)
    return out
