"""Errors of the search package (all `ToastError`s: the CLI prints one line and exits 2)."""

from __future__ import annotations

from toast.spaces import ToastError


class UnsupportedModelError(ToastError):
    """The model is unknown, unreachable, or of an architecture no adapter supports."""


class DatasetError(ToastError):
    """The dataset is unknown, unreachable, or lacks the columns needed."""


class CacheError(ToastError):
    """A cache entry is corrupt, incomplete or from something else."""


class ModelOutputError(ToastError):
    """The model's own outputs are unusable (NaN or infinite): its weights are likely corrupt."""
