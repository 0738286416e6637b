"""Where a run's Optuna study lives: the storage a new run gets, and the one an existing run already has.

Two kinds, each one file in the run directory: `study.db` (SQLite, through `optuna.storages.RDBStorage`) and
`study.journal` (Optuna's `JournalStorage` over an append-only `JournalFileBackend`: a JSON line per write, safe
across processes, opened by `optuna.load_study` and optuna-dashboard). A run directory holding either file is
resumed with it, whatever the default for new runs is; `bench/bench_storage.py` measured both.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from toast.errors import ToastError

__all__ = [
    "STORAGE_FILES",
    "STORAGE_KINDS",
    "StudyWriteError",
    "load_run_study",
    "open_storage",
    "recover_journal",
    "storage_kind",
    "study_file",
]

#: the file each storage kind keeps in the run directory
#: the one study a run directory's storage holds
STUDY_NAME = "toast-search"
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


class StudyWriteError(ToastError, OSError):
    """A write to the study file failed (a full disk, a lost mount): the file was put back as it was before it."""


#: where the bytes of a journal's cut-short last line go when the journal is recovered
CUT_TAIL_SUFFIX = ".cut-tail"


def recover_journal(path: Path) -> int:
    """Cut a journal whose last line is cut short (a write that did not finish: a kill or a full disk in an older
    run) back to its last whole record, keeping the cut bytes beside it (`study.journal.cut-tail`); the number of
    bytes cut (0 when the journal ends with a whole record). A line is whole when it ends with a newline: Optuna's
    file backend writes each batch of records as whole lines in one append."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    tail = path.with_name(path.name + CUT_TAIL_SUFFIX)
    with open(tail, "ab") as f:
        f.write(data[keep:])
        f.flush()
        os.fsync(f.fileno())
    os.truncate(path, keep)
    return len(data) - keep


def _journal_backend(path: str, lock: Any) -> Any:
    """Optuna's `JournalFileBackend` whose append is all or nothing: a write that fails part way (ENOSPC, EIO) is
    cut back to the size the file had before it, under the same lock, and raised as a one-line `StudyWriteError`
    (Optuna's own backend would leave a cut line that no later run can read)."""
    from optuna.storages.journal import JournalFileBackend

    class AllOrNothingJournal(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
            lock.acquire()
            try:
                size = os.path.getsize(path)
                try:
                    _append(path, payload)
                except OSError as exc:
                    try:
                        os.truncate(path, size)
                    except OSError:
                        pass
                    raise StudyWriteError(
                        f"cannot write to {path} ({exc.strerror or exc}): the study is kept as it was before this "
                        "write; free some space, then re-run the same command to resume"
                    ) from None
            finally:
                lock.release()

    return AllOrNothingJournal(path, lock_obj=lock)


def _append(path: str, payload: bytes) -> None:
    """Append `payload` to `path` and flush it to the disk (tests replace it to fail part way)."""
    with open(path, "ab") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def open_storage(out: Path, kind: str | None = None) -> Any:
    """An Optuna storage on run directory `out`'s study file (`kind` None: the one `storage_kind` names).

    A journal whose last line was cut short is first recovered up to its last whole record (said on stderr)."""
    import optuna

    kind = kind or storage_kind(out)
    path = (Path(out) / STORAGE_FILES[kind]).resolve()
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock, JournalStorage

    cut = recover_journal(path)
    if cut:
        print(
            f"note: {path.name} ended in a write that did not finish ({cut} bytes, kept in "
            f"{path.name}{CUT_TAIL_SUFFIX}): recovered up to its last whole record",
            file=sys.stderr,
        )
    # Optuna's default lock (a symlink) where it works, the open lock on Windows: as optuna-dashboard opens the
    # file, so that a dashboard writing a note and this run take the same lock
    lock = JournalFileOpenLock(str(path)) if os.name == "nt" else JournalFileSymlinkLock(str(path))
    if not path.exists():
        path.touch()
    return JournalStorage(_journal_backend(str(path), lock))


def load_run_study(out: Path) -> Any:
    """The study of run directory `out` (`optuna.load_study` on its study file), as optuna-dashboard reads it."""
    import optuna

    if study_file(out) is None:
        raise FileNotFoundError(f"{out} holds no study ({' or '.join(STORAGE_FILES.values())})")
    return optuna.load_study(study_name=STUDY_NAME, storage=open_storage(out))
