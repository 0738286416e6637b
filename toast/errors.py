"""Every error toast-search raises on purpose: one base, `ToastError`, and a few specific subclasses.

Messages name the broken rule and what to do; settings are named as `field` (a `SearchSettings` field in
backticks), which the CLI shows as its flag (`--field`). The CLI prints any `ToastError` as one line and
exits with status 2. Each package re-exports the errors it raises;
this module is their one home.
"""

from __future__ import annotations

import errno

__all__ = [
    "DISK_ERRORS",
    "CacheError",
    "DatasetError",
    "MissingDependencyError",
    "MissingStatsError",
    "ModelOutputError",
    "NotFittedError",
    "ObjectiveError",
    "PlanError",
    "RayAddressError",
    "SettingsError",
    "SpaceError",
    "ToastError",
    "UnsupportedModelError",
]


class ToastError(Exception):
    """Base of every error toast-search raises on purpose; the CLI prints it as one line, exit 2."""


class SettingsError(ToastError, ValueError):
    """Settings that contradict each other or are out of range, or a run directory they do not match; the
    message lists every problem."""


class PlanError(ToastError, ValueError):
    """A plan or span breaks a rule; the message names the rule."""


class SpaceError(ToastError, ValueError):
    """A search space's settings break a rule, or a space is too large for what was asked."""


class NotFittedError(ToastError, RuntimeError):
    """A translator was used before `fit`."""


class ObjectiveError(ToastError, ValueError):
    """An objective, a probe or its inputs break a rule; the message names every broken rule."""


class UnsupportedModelError(ToastError):
    """The model is unknown, unreachable, or of an architecture no adapter supports."""


class ModelOutputError(ToastError):
    """The model's own outputs are unusable (NaN or infinite): its weights are likely corrupt."""


class DatasetError(ToastError):
    """The dataset is unknown, unreachable, or lacks the columns needed."""


class CacheError(ToastError):
    """A cache entry is corrupt, incomplete or from something else, or the cache folder cannot be written."""


class MissingStatsError(ToastError, LookupError):
    """Statistics (a pair of hidden states, or a state's activation shards) that a capture was not planned for:
    the capture holds only what its search space needs; the message says what to widen or recapture."""


class RayAddressError(ToastError, ConnectionError):
    """The Ray cluster address given (`ray_address` or `$RAY_ADDRESS`) is malformed or no Ray cluster answers there."""


class ResourceError(ToastError, MemoryError):
    """A run that cannot fit this machine's memory, its device's or its disk, found before the work starts."""


class MissingDependencyError(ToastError, ImportError):
    """An optional package is needed for what was asked; the message says what to install."""


#: the errors of a disk that cannot take a write (full, over quota, read-only, failing): said in one line, and a
#: search stops at the first (every later write would fail the same way)
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
