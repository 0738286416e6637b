"""Dataset defects found before any capture: each one line, naming the split, the column and what to do.

`check_split` reads only a split's columns (labels, texts), never decodes an image: an empty split, labels missing,
not integers (strings, NaN, None) or of a single class, texts that are None or all empty (an input column that
holds labels is refused where the columns are picked). `check_inputs_fit` runs the model's processor and embeddings
on one sample, so a processor whose output the model cannot take fails before the capture. Images that cannot be
decoded are caught where they are decoded (`iter_batches`), naming the row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DatasetError
from ._datasets import LabeledSplit

__all__ = ["check_inputs_fit", "check_split"]


def _where(split: LabeledSplit) -> str:
    return f"split {split.split!r} of dataset {split.name!r}"


def check_split(split: LabeledSplit, *, flag: str, labels: bool, min_classes: int = 1) -> None:
    """Raise `DatasetError` for the first defect of `split` (its flag `flag` named in the hint, e.g. `split_test`).

    `labels`: the run needs labels (an accuracy objective); `min_classes`: distinct labels the split must hold (2 for
    the split a probe is fitted on)."""
    import datasets

    where = _where(split)
    if len(split) == 0:
        raise DatasetError(f"{where} is empty: pass `{flag}` naming a split that holds samples")
    features = split.dataset.features
    if split.modality == "text":
        texts = split.dataset[split.input_column]
        missing = [i for i, t in enumerate(texts) if t is None]
        if missing:
            raise DatasetError(
                f"{where} has {len(missing)} rows without text (None in column {split.input_column!r}, first at row "
                f"{missing[0]}): remove or fill them"
            )
        if not any(str(t).strip() for t in texts):
            raise DatasetError(f"every text of {where} (column {split.input_column!r}) is empty")
    if not labels:
        return
    if split.label_column is None:
        raise DatasetError(f"{where} has no label column: pass `label_column`")
    feature = features.get(split.label_column)
    values = split.dataset[split.label_column]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        shown = ", ".join(repr(v) for v in list(dict.fromkeys(values))[:3])
        raise DatasetError(
            f"the labels of {where} (column {split.label_column!r}) are strings ({shown}, …): make it a ClassLabel "
            "column (datasets' class_encode_column) or pass `label_column` naming integer labels"
        )
    array = np.asarray([np.nan if v is None else v for v in values], dtype=object)
    numeric = np.array(
        [isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in array]
    )
    floats = array[numeric].astype(np.float64) if numeric.any() else np.zeros(0)
    bad = int((~numeric).sum() + (~np.isfinite(floats)).sum() + (floats != np.round(floats)).sum())
    if bad:
        raise DatasetError(
            f"{bad} labels of {where} (column {split.label_column!r}) are not integer class labels (NaN, None or "
            "fractions): remove those rows or pass `label_column` naming integer labels"
        )
    if min_classes > 1:
        classes = np.unique(floats)
        if len(classes) < min_classes:
            raise DatasetError(
                f"{where} holds a single class ({int(classes[0])}) in column {split.label_column!r}: a probe needs at "
                "least two; pass another split or `label_column`"
            )


def check_inputs_fit(loaded: Any, split: LabeledSplit, *, max_length: int = 256) -> None:
    """Run the model's processor and embeddings on the first sample of `split`; a `DatasetError` naming the
    mismatch when the model cannot take what its processor makes of the data (an image size or channel count the
    patch embedding refuses, a tokenizer of another vocabulary)."""
    import torch

    from ._datasets import iter_batches

    _, inputs = next(iter_batches(split, [0], loaded.processor, 1, max_length=max_length))
    try:
        with torch.inference_mode():
            loaded.family.embed(loaded.parts.embeddings, inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        why = " ".join(str(exc).split())[:200]
        raise DatasetError(
            f"the model cannot take what its processor makes of {_where(split)} ({why}): save the processor that "
            "belongs to the model next to its weights, or pass a dataset of the inputs it was trained on"
        ) from None
