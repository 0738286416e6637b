"""Datasets: a labeled split with its input column, and batches through the model's own processor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ._errors import DatasetError

LABEL_COLUMNS = ("label", "labels", "fine_label", "y", "target")
TEXT_COLUMNS = ("text", "sentence", "content", "document")


@dataclass
class LabeledSplit:
    """One split of a dataset: the `datasets.Dataset`, which column holds inputs and which labels."""

    dataset: Any
    name: str
    split: str
    input_column: str
    label_column: str | None
    modality: str  # "image" or "text"

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{getattr(self.dataset, '_fingerprint', 'unknown')}"

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        if self.label_column is None:
            raise DatasetError(f"dataset {self.name!r} has no label column: pass --label-column")
        return np.asarray(self.dataset[self.label_column])


def _pick_columns(ds: Any, name: str, input_column: str | None, label_column: str | None) -> tuple[str, str | None, str]:
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
            raise DatasetError(f"dataset {name!r} has no image column and no text column (columns: {', '.join(feats)}): pass --input-column")
    elif input_column not in feats:
        raise DatasetError(f"dataset {name!r} has no column {input_column!r} (columns: {', '.join(feats)})")
    modality = "image" if isinstance(feats[input_column], datasets.Image) else "text"
    if label_column is None:
        label_column = next((c for c in LABEL_COLUMNS if c in feats), None)
        if label_column is None:
            label_column = next((c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)), None)
    elif label_column not in feats:
        raise DatasetError(f"dataset {name!r} has no label column {label_column!r} (columns: {', '.join(feats)}): pass --label-column")
    return input_column, label_column, modality


def load_split(name: str, split: str, *, input_column: str | None = None, label_column: str | None = None) -> LabeledSplit:
    """A split of a local `save_to_disk` folder."""
    import datasets

    path = Path(name).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {name!r} not found: pass a local folder written by datasets' save_to_disk")
    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(f"cannot read dataset folder {name!r}: {str(exc).splitlines()[0]}") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DatasetError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(data)})")
        data = data[split]
    input_column, label_column, modality = _pick_columns(data, name, input_column, label_column)
    return LabeledSplit(data, str(path.resolve()), split, input_column, label_column, modality)


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


def iter_batches(split: LabeledSplit, ids: Sequence[int], processor: Any, batch_size: int, *, max_length: int = 256) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """`(sample ids, model inputs)` batches; images converted to RGB and run through the processor."""
    if processor is None:
        raise DatasetError("the model has no saved image processor or tokenizer: save one next to the weights")
    for start in range(0, len(ids), batch_size):
        chunk = list(ids[start : start + batch_size])
        rows = split.dataset[chunk][split.input_column]
        if split.modality == "image":
            inputs = processor(images=[im.convert("RGB") for im in rows], return_tensors="pt")
            yield chunk, {"pixel_values": inputs["pixel_values"]}
        else:
            enc = processor(list(rows), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            yield chunk, {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
