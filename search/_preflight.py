"""Checks of a run's paths and stored state, made before any model is loaded or anything is written.

A bad `--out` or `--cache-dir`, a `study.journal` or `study.db` that is not a study, or a run directory made
with other settings is found here, in a second, and nothing on disk is touched.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

from ..errors import CacheError
from ._settings import SearchSettings, SettingsError
from ._storage import study_file

__all__ = ["check_cache_dir", "check_run_directory", "check_writable_dir"]


def check_writable_dir(path: Path, what: str, error: type[Exception] = SettingsError) -> None:
    """`path` is, or can be created as, a directory we can write to; nothing is created.

    The nearest existing ancestor is probed with a temporary file (deleted at once), which tells a
    read-only or permission-less place apart even when running as root.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path} is a file, not a directory: pass a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise error(f"{what} {path} is under {ancestor}, which is a file: pass a directory that is not inside a file")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise error(
            f"{what} {path} is not writable ({exc.strerror or exc}): pass a directory you can write to"
        ) from None


def check_cache_dir(root: Path) -> None:
    """The activation and input cache root can hold new entries."""
    check_writable_dir(root, "cache directory (`cache_dir`)", CacheError)


def check_study(path: Path) -> None:
    """`study.db` or `study.journal`, when present, is an Optuna study (read only: a damaged file is left as it is)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    if path.suffix == ".journal":
        check_journal(path)
        return
    problem = None
    try:
        with sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "studies" not in tables or "trials" not in tables:
                problem = "it holds no Optuna study"
        db.close()
    except sqlite3.Error as exc:
        problem = str(exc)
    if problem:
        raise SettingsError(
            f"{path} is not an Optuna study ({problem}); nothing was changed: use another `out`, or move the file away"
        )


def check_journal(path: Path) -> None:
    """`study.journal` is an Optuna journal holding a study: every whole line a journal entry, replayed as Optuna
    would on resume (reading only: Optuna's file backend writes nothing to an existing file until asked). A last line
    cut short by a write that did not finish is left to `recover_journal` when the run opens the study."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    problem = None
    try:  # a cut-short last line is skipped here (Optuna's reader stops before it), and cut off when the run opens it
        if not JournalStorage(JournalFileBackend(str(path))).get_all_studies():
            problem = "it holds no Optuna study"
    except (ValueError, KeyError, TypeError, IndexError, AssertionError) as exc:  # bad JSON, a missing field
        why = " ".join(str(exc).split())[:200]
        problem = f"a line unreadable as an Optuna journal entry: {type(exc).__name__}: {why}"
    if problem:
        raise SettingsError(
            f"{path} is not an Optuna study journal ({problem}); nothing was changed: use another `out`, or move "
            "the file away"
        )


def check_run_directory(settings: SearchSettings) -> None:
    """`--out` can hold a run, and resuming it would not mix runs: refuse a run directory made with settings
    that change what a trial computes (model, data, space, samples, seed, dtypes …)."""
    check_writable_dir(settings.study.out, "run directory (`out`)")
    found = study_file(settings.study.out)
    if found is not None:
        check_study(found)
    path = settings.study.out / "settings.json"
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except ValueError:
        raise SettingsError(f"{path} is unreadable: use another `out`") from None
    mine = settings.identity(complete=True)
    defaults = SearchSettings.identity_defaults()
    diff = [k for k in mine if previous.get(k, defaults.get(k)) != mine[k]]
    if diff:
        what = ", ".join(f"{k}={previous.get(k, defaults.get(k))!r} (now {mine[k]!r})" for k in diff)
        raise SettingsError(
            f"run directory {settings.study.out} belongs to another run ({what}): use another `out` to start a new one"
        )
