"""toast-search: which spans of a pretrained transformer's blocks to replace with cheap translators, searched.

The packages, each owning one part (README, "Layout"): `toast.spaces` (plans, spans, translator kinds),
`toast.objectives` (what a trial is scored on), `toast.runners` (where trials run), `toast.models` (model
families as plug-ins, the compressed model), `toast.data` (datasets and inputs), `toast.capture` (the
calibration pass and its caches) and `toast.search` (settings, study, run, front, export, CLI). The one error
hierarchy is `toast.errors`. Importing `toast` imports none of them (nor torch).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("toast-search")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "unknown"

__all__ = ["__version__"]
