"""The errors the search package raises: all defined with the rest of the hierarchy in `toast.spaces._errors`."""

from __future__ import annotations

import errno

from toast.spaces._errors import (
    CacheError,
    DatasetError,
    ModelOutputError,
    SettingsError,
    ToastError,
    UnsupportedModelError,
)

#: the errors of a disk that cannot take a write (full, over quota, read-only, failing): said in one line, and a
#: search stops at the first (every later write would fail the same way)
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)

__all__ = [
    "DISK_ERRORS",
    "CacheError",
    "DatasetError",
    "ModelOutputError",
    "SettingsError",
    "ToastError",
    "UnsupportedModelError",
]
