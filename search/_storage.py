"""Where a run's Optuna study lives: the storage a new run gets, and the one an existing run already has.

Two kinds, each one file in the run directory: `study.db` (SQLite, through `optuna.storages.RDBStorage`) and
`study.journal` (Optuna's `JournalStorage` over an append-only `JournalFileBackend`: a JSON line per write, safe
across processes, opened by `optuna.load_study` and optuna-dashboard). A run directory holding either file is
resumed with it, whatever the default for new runs is; `bench/bench_storage.py` measured both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["STORAGE_FILES", "STORAGE_KINDS", "load_run_study", "open_storage", "storage_kind", "study_file"]

#: the file each storage kind keeps in the run directory
STORAGE_FILES = {"sqlite": "study.db", "journal": "study.journal"}
STORAGE_KINDS = tuple(STORAGE_FILES)
#: the kind a run directory without a study gets: the journal, 6x less runner overhead per trial than SQLite on the
#: demo (bench/RESULTS.md, item 6)
DEFAULT_KIND = "journal"


def study_file(out: Path) -> Path | None:
    """The study file already in run directory `out` (`study.db` first: runs made before the journal), else None."""
    for name in STORAGE_FILES.values():
        path = Path(out) / name
        if path.is_file():
            return path
    return None


def storage_kind(out: Path) -> str:
    """The storage kind of run directory `out`: its existing study file's, else the default for new runs."""
    found = study_file(out)
    return next(k for k, v in STORAGE_FILES.items() if v == found.name) if found else DEFAULT_KIND


def open_storage(out: Path, kind: str | None = None) -> Any:
    """An Optuna storage on run directory `out`'s study file (`kind` None: the one `storage_kind` names)."""
    import optuna

    kind = kind or storage_kind(out)
    path = (Path(out) / STORAGE_FILES[kind]).resolve()
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    # Optuna's default lock (a symlink) where it works, the open lock on Windows: as optuna-dashboard opens the
    # file, so that a dashboard writing a note and this run take the same lock
    lock = JournalFileOpenLock(str(path)) if os.name == "nt" else None
    return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


def load_run_study(out: Path) -> Any:
    """The study of run directory `out` (`optuna.load_study` on its study file), as optuna-dashboard reads it."""
    import optuna

    from ._study import STUDY_NAME

    if study_file(out) is None:
        raise FileNotFoundError(f"{out} holds no study ({' or '.join(STORAGE_FILES.values())})")
    return optuna.load_study(study_name=STUDY_NAME, storage=open_storage(out))
