"""The errors the search package raises: all defined with the rest of the hierarchy in `toast.spaces._errors`."""

from __future__ import annotations

from toast.spaces._errors import (
    CacheError,
    DatasetError,
    ModelOutputError,
    SettingsError,
    ToastError,
    UnsupportedModelError,
)

__all__ = ["CacheError", "DatasetError", "ModelOutputError", "SettingsError", "ToastError", "UnsupportedModelError"]
