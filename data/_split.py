"""A labelled split of a dataset: the one record the data modules pass around (its own module: every loader makes it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "LabeledSplit"]

#: the files of a local image folder dataset
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class LabeledSplit:
    """One split of a dataset: the `datasets.Dataset`, which column holds inputs and which labels."""

    dataset: Any
    name: str
    split: str
    input_column: str
    label_column: str | None
    modality: str  # "image", "text", or "causal-lm" (token sequences packed from text: `toast.data._corpus`)
    source_fingerprint: str | None = None  # overrides the `datasets` fingerprint (built-in sets)

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self.source_fingerprint or getattr(self.dataset, '_fingerprint', 'unknown')}"

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> np.ndarray:
        if self.label_column is None:
            raise DatasetError(f"dataset {self.name!r} has no label column: pass `label_column`")
        return np.asarray(self.dataset[self.label_column])
