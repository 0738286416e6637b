"""Calibration: load the model and data, then capture (or reuse) the activations of N seeded samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from toast.spaces import Plan

from ._cache import ActivationCache, CaptureSpec, CapturedActivations
from ._compressed import CompressedModel
from ._data import LabeledSplit, iter_batches, preprocessing_fingerprint, sample_ids
from ._errors import DatasetError
from ._models import LoadedModel


def resolve_device(device: str) -> str:
    """`auto` → `cuda` when available, else `cpu`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from toast.spaces import ToastError

        raise ToastError("--device cuda was asked for but no CUDA device is available: use --device cpu or auto")
    return device


@dataclass(frozen=True)
class CalibrationSettings:
    """How the calibration samples are drawn and stored."""

    samples: int = 500
    seed: int = 0
    batch_size: int = 32
    activation_dtype: str = "float16"


def calibrate(
    loaded: LoadedModel,
    split: LabeledSplit,
    settings: CalibrationSettings,
    cache: ActivationCache,
    *,
    progress: bool = True,
) -> CapturedActivations:
    """The verified activation cache entry for these samples, captured once if missing."""
    if split.modality != loaded.family.modality:
        raise DatasetError(f"dataset {split.name!r} holds {split.modality} but model {loaded.model_id!r} takes {loaded.family.modality}")
    if settings.samples < 2:
        raise DatasetError(f"--calib-samples must be at least 2, got {settings.samples}")
    spec = capture_spec(loaded, split, settings)
    ids = spec.sample_ids
    original = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    return cache.get_or_capture(spec, original, lambda: iter_batches(split, ids, loaded.processor, settings.batch_size), progress=progress)


def capture_spec(loaded: LoadedModel, split: LabeledSplit, settings: CalibrationSettings) -> CaptureSpec:
    """The cache key of the calibration capture (for a dry run: hit or miss, without capturing)."""
    ids = sample_ids(len(split), settings.samples, settings.seed)
    return CaptureSpec(
        model_id=loaded.model_id,
        revision=loaded.revision,
        dataset=split.fingerprint,
        split=split.split,
        sample_ids=ids,
        preprocessing=preprocessing_fingerprint(loaded.processor),
        dtype=settings.activation_dtype,
    )
