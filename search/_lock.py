"""One process at a time in a run directory: a second search (or export) on the same `--out` is refused.

Two processes appending trials to one study would mark each other's live trials failed (a resume marks the RUNNING
trials of a killed process failed) and rewrite the same `trials.csv`, `front.json` and `chosen/`. The lock is an
advisory `flock` on `RUN/.lock`, which the kernel releases when its process ends, however it ends (a kill -9
included): a stale lock never blocks a later run. The file records the holder's pid and command, so the refusal can
name them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import SettingsError

__all__ = ["LOCK_FILE", "RunDirectoryBusyError", "run_directory_lock"]

LOCK_FILE = ".lock"


class RunDirectoryBusyError(SettingsError):
    """Another process holds the run directory."""


def _holder(path: Path) -> str:
    """Who holds the lock, as the holder wrote it ("process 123 (toast-search …) since 12:00:01")."""
    try:
        doc = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    command = " ".join(doc.get("argv", []))[:120]
    return f"process {doc.get('pid', '?')}" + (f" ({command})" if command else "") + f" since {doc.get('since', '?')}"


@contextmanager
def run_directory_lock(out: Path, what: str = "a search") -> Iterator[None]:
    """Hold run directory `out` for the `with` block; `RunDirectoryBusyError` (one line, naming the holder) when
    another process holds it. The lock is taken on the directory itself; `RUN/.lock` says who holds it and is
    removed on release, so a finished run's directory holds no trace of it. Where `flock` does not exist (Windows),
    nothing is locked."""
    try:
        import fcntl
    except ImportError:  # no advisory locks: run unlocked
        yield
        return
    out = Path(out)
    path = out / LOCK_FILE
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY)
    except OSError:  # not a directory one can open: the run's own checks say so in one line
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryBusyError(
                f"run directory {out} is in use by {_holder(path)}: wait for it to finish, or use another `out` for "
                f"{what}"
            ) from None
        doc = {"pid": os.getpid(), "argv": ["toast-search", *sys.argv[1:]], "since": time.strftime("%H:%M:%S")}
        try:
            path.write_text(json.dumps(doc))
        except OSError:  # who holds it is only said, not needed
            pass
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            if made and not any(out.iterdir()):  # nothing written (e.g. a bad input): leave no directory
                out.rmdir()
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
