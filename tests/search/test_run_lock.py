"""One process at a time in a run directory (`toast.search._lock`): a second search on the same `--out` is refused
in one line naming the first, and a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from toast.search._lock import LOCK_FILE, RunDirectoryBusyError, run_directory_lock

HOLD = """
import sys, time
from pathlib import Path
from toast.search._lock import run_directory_lock
with run_directory_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(out):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_first_and_a_killed_one_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "study.journal").write_text("")
    proc = _holder(out)
    try:
        with pytest.raises(RunDirectoryBusyError) as info:
            with run_directory_lock(out):
                pass
        message = str(info.value)
        assert "\n" not in message and f"process {proc.pid}" in message and "another `out`" in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with run_directory_lock(out):  # the kernel dropped the dead holder's lock
        assert (out / LOCK_FILE).is_file()
    assert not (out / LOCK_FILE).exists()  # released: no trace left


def test_a_run_that_wrote_nothing_leaves_no_directory(tmp_path):
    out = tmp_path / "new-run"
    with pytest.raises(RuntimeError):
        with run_directory_lock(out):
            raise RuntimeError("a bad input, found before anything was written")
    assert not out.exists()


def test_the_cli_refuses_a_second_search_on_the_same_out_in_one_line(tmp_path):
    """Through `toast-search`: exit 2, one line, the first run's files untouched."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "study.journal").write_text("")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _holder(out)
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        args = ["--out", str(out), "--trials", "1", "--calib-samples", "16", "--no-progress"]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "toast.search.cli", *args], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by process" in lines[0] and "Traceback" not in done.stderr
        assert time.monotonic() - started < 60  # refused before any capture
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_FILE} == before
    assert (out / LOCK_FILE).is_file()  # the killed holder's note stays until the next run takes the directory


def test_an_export_into_a_run_a_search_holds_is_refused(tmp_path, capsys):
    """`toast-search export RUN …` writes into the run directory (`chosen/model.onnx`, `export/`): refused while
    another process holds it."""
    from toast.search.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "settings.json").write_text("{}")
    proc = _holder(out)
    try:
        assert main(["export", str(out), "--plan", "0→1:identity"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "in use by process" in err and "an export" in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
