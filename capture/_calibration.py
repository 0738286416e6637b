"""Calibration: load the model and data, then capture (or reuse) the activations of N seeded samples."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toast.spaces import Plan

from ..data import LabeledSplit, iter_batches, preprocessing_fingerprint, sample_ids
from ..errors import DatasetError, SettingsError
from ..models import CompressedModel, Family, LoadedModel
from ._cache import ActivationCache, CapturedActivations, CaptureSpec, memory_plan_bytes


def resolve_device(device: str) -> str:
    """`auto` → `cuda` when available, else `cpu`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError("`device` cuda was asked for but no CUDA device is available: use cpu or auto")
    return device


def check_modality(family: Family, split: LabeledSplit, model: str) -> None:
    """The dataset holds what the model takes; else say which models and datasets would fit each other."""
    if split.modality == family.modality:
        return
    if family.modality == "causal-lm" and split.modality == "text":  # documents, packed into token sequences later
        return
    from ..data import DATASET_ALIASES, DIGITS, DOCSTRINGS, PYTHON_DOCS
    from ..models import MINILM_ALIAS, registered_families

    if family.modality == "causal-lm":
        lms = ", ".join(t for f in registered_families() if f.modality == "causal-lm" for t in f.model_types)
        raise DatasetError(
            f"dataset {split.name!r} holds {split.modality} but model {model!r} is a causal language model: give it "
            f"text (`dataset` {PYTHON_DOCS} offline, a local .txt file or folder, or a dataset with a text column "
            f"such as wikitext), or an {split.modality} model with this dataset; causal LM families: {lms}"
        )

    text_families = ", ".join(t for f in registered_families() if f.modality == "text" for t in f.model_types)
    image_data = ", ".join([*DATASET_ALIASES, DIGITS])
    if split.modality == "text":
        what = (
            f"use a text encoder (families {text_families}; e.g. `model` {MINILM_ALIAS}) with this dataset, "
            f"or a dataset that holds images ({image_data}, an image folder) with this model"
        )
    else:
        what = (
            f"use a dataset that holds text (e.g. `dataset` {DOCSTRINGS}) with this model, or an image model with this "
            f"dataset; text encoders: {text_families}; image datasets: {image_data}"
        )
    raise DatasetError(
        f"dataset {split.name!r} holds {split.modality} but model {model!r} takes {family.modality}: {what}"
    )


@dataclass(frozen=True)
class CalibrationSettings:
    """How the calibration samples are drawn and stored."""

    samples: int = 500
    seed: int = 0
    batch_size: int = 32
    activation_dtype: str = "float16"
    branches: bool = True  # also the MLP-branch statistics (pre-norm families), for kinds with `needs_branches`
    # the pairs of states `(i, j)`, i <= j, whose statistics the search reads (`toast.spaces.space_pairs`); None: all
    pairs: frozenset[tuple[int, int]] | None = None
    # the MLP branch blocks `(s, t)` the space's `folded` spans read (`toast.spaces.space_branch_pairs`); None: all
    branch_pairs: frozenset[tuple[int, int]] | None = None
    # the states whose activation shards are read (trained kinds, a refit pass); None: every state
    states: frozenset[int] | None = None
    # the memory (GB) the statistics' accumulators may hold at once; None: a quarter of the host's RAM
    stats_memory_gb: float | None = None


def calibrate(
    loaded: LoadedModel,
    split: LabeledSplit,
    settings: CalibrationSettings,
    cache: ActivationCache,
    *,
    progress: bool = True,
    observers: tuple = (),
) -> CapturedActivations:
    """The verified activation cache entry for these samples, captured once if missing; holding the statistics
    of `settings.pairs` and the shards of `settings.states` (what an earlier entry lacks is added to it), planned
    into `settings.stats_memory_gb`. `observers`: fed every batch of a new entry's first pass (`update(states,
    mask)`), e.g. a `toast.objectives.SampledSimilarity` where the pairs are a subset."""
    check_modality(loaded.family, split, loaded.model_id)
    if settings.samples < 2:
        raise DatasetError(f"`calib_samples` must be at least 2, got {settings.samples}")
    spec = capture_spec(loaded, split, settings)
    ids = spec.sample_ids
    original = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    return cache.get_or_capture(
        spec,
        original,
        lambda: iter_batches(split, ids, loaded.processor, settings.batch_size),
        progress=progress,
        pairs=settings.pairs,
        branch_pairs=settings.branch_pairs,
        states=settings.states,
        memory_bytes=memory_plan_bytes(settings.stats_memory_gb, str(loaded.device)),
        observers=observers,
    )


@torch.inference_mode()
def observe_calibration(
    loaded: LoadedModel, split: LabeledSplit, ids: tuple[int, ...], batch_size: int, observers: tuple
) -> None:
    """One streaming pass of the original model over calibration samples `ids`, feeding every batch's states to
    `observers` (`update(states, mask)`); nothing is cached or kept. The similarity map's second pass where the
    capture holds only the pairs the space uses (`toast.objectives.SampledSimilarity`)."""
    original = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    for _, inputs in iter_batches(split, ids, loaded.processor, batch_size):
        states, mask = original.hidden_states(inputs)
        for observer in observers:
            observer.update(states, mask)


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
        branches=settings.branches,
    )
