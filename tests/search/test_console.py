"""What toast-search says (issue 19, item 7): no progress bars in a piped log unless asked, no Optuna INFO line per
trial from `run_search`, no note about the demo's own default sample counts, none from Ray workers, warnings as one
line, `--version`, `--quiet`, and an unreachable Hub failing in seconds rather than after five retries."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from toast import _hub
from toast.search import SearchSettings, _quiet
from toast.search.cli import main

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _small(tiny_dirs, data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("--model", str(tiny_dirs["vit"]), "--dataset", str(data), "--cache-dir", str(cache), "--out", str(out)),
        *("--calib-samples", "1000", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"),
        *("--trials", "2", "--sampler", "random", "--max-removed", "2", *extra),
    ]


def _cli(args: list[str], env: dict[str, str] = OFFLINE) -> subprocess.CompletedProcess:
    """The command in a fresh process, stdout and stderr piped (not a terminal), as in a CI log."""
    return subprocess.run(
        [sys.executable, "-m", "toast.search.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def test_version():
    done = _cli(["--version"])
    assert done.returncode == 0 and done.stdout == "toast-search 0.1.0\n"


@pytest.mark.slow
def test_a_piped_run_draws_no_progress_bar_unless_asked_and_says_its_notes(tiny_dirs, image_dataset_dir, tmp_path):
    cache = tmp_path / "cache"
    done = _cli(_small(tiny_dirs, image_dataset_dir, cache, tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "it/s" not in done.stderr and "trial/s" not in done.stderr, done.stderr
    assert "note: --calib-samples 1000 but split 'train'" in done.stdout  # a count asked for, cut short: said

    forced = _cli(_small(tiny_dirs, image_dataset_dir, cache, tmp_path / "b", "--progress"))
    assert forced.returncode == 0 and "trials: 100%" in forced.stderr  # asked for: drawn, even into a pipe

    quiet = _cli(_small(tiny_dirs, image_dataset_dir, cache, tmp_path / "c", "--quiet"))
    assert quiet.returncode == 0 and quiet.stderr == ""
    lines = quiet.stdout.splitlines()
    assert not [line for line in lines if line.startswith(("note:", "demo:", "warning:"))], lines
    table = next(i for i, line in enumerate(lines) if line.startswith("plan "))
    assert lines[table + 2].startswith("original ") and lines[-1].startswith(f"wrote {tmp_path / 'c'}")

    # a damaged cache entry: one `warning:` line on stderr, not Python's two-line `path:line: UserWarning:` format
    entry = next((cache / "inputs").glob("*/inputs.arrow"))
    entry.write_bytes(entry.read_bytes()[:100])
    damaged = _cli(_small(tiny_dirs, image_dataset_dir, cache, tmp_path / "d"))
    assert damaged.returncode == 0, damaged.stderr
    said = damaged.stderr.splitlines()
    assert len(said) == 1 and said[0].startswith("warning: preprocessed inputs ") and said[0].endswith("rebuilding")


def test_progress_bars_follow_the_terminal_unless_asked(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert _quiet.show_progress(None) and not _quiet.show_progress(False)
    monkeypatch.setattr(_quiet, "_level", "quiet")
    assert not _quiet.show_progress(None) and _quiet.show_progress(True)  # --quiet --progress: asked for
    monkeypatch.setattr(_quiet, "_level", "normal")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # piped
    assert not _quiet.show_progress(None) and _quiet.show_progress(True)
    assert not SearchSettings.from_flat(model="m", dataset="d").show_progress


def test_warnings_print_as_one_line():
    own = str(Path(_quiet.__file__).parent.parent / "capture" / "_cache.py")
    assert (
        _quiet.one_line_warning("cache entry x is\n truncated; recapturing", UserWarning, own, 12)
        == "warning: cache entry x is truncated; recapturing\n"
    )
    assert _quiet.one_line_warning("old", DeprecationWarning, "/lib/site-packages/pkg/mod.py", 7) == (
        "warning: old (DeprecationWarning, mod.py:7)\n"
    )
    with _quiet.console_warnings():
        assert warnings.formatwarning is _quiet.one_line_warning
    assert warnings.formatwarning is not _quiet.one_line_warning  # Python's own again outside


@pytest.mark.slow
def test_run_search_from_python_logs_no_optuna_info_and_restores_its_level(tiny_dirs, image_dataset_dir, tmp_path):
    import optuna

    from toast.search import run_search

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    optuna_logger = logging.getLogger("optuna")
    optuna_logger.addHandler(handler)
    optuna.logging.set_verbosity(optuna.logging.INFO)  # a fresh Python session's level
    try:
        run_search(
            SearchSettings.from_flat(
                model=str(tiny_dirs["vit"]),
                dataset=str(image_dataset_dir),
                out=tmp_path / "run",
                cache_dir=tmp_path / "cache",
                calib_samples=16,
                probe_samples=30,
                eval_samples=20,
                sampler="random",
                trials=2,
                device="cpu",
            )
        )
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # the caller's level, restored
    finally:
        optuna_logger.removeHandler(handler)
    assert not [r for r in records if r.levelno < logging.WARNING], [r.getMessage() for r in records]


def test_the_demos_default_sample_counts_are_not_noted(tmp_path):
    """digits holds 1,347 train and 450 test samples, fewer than the default 5000 and 2000: the defaults are upper
    bounds, so the demo says nothing of them; a count the user set is noted."""
    code, out, err = _main(["--dry-run", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")])
    assert code == 0, err
    assert "note: --" not in out and "demo: demo-vit on digits" in out
    code, out, err = _main(["--dry-run", "--cache-dir", str(tmp_path / "c"), "--probe-samples", "3000"])
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("note: --")] == [
        "note: --probe-samples 3000 but split 'train' of 'digits' holds 1347 samples: using 1347"
    ]


@pytest.mark.slow
def test_a_ray_worker_does_not_repeat_the_drivers_notes(tiny_dirs, image_dataset_dir, tmp_path, capsys):
    """A worker builds its own context from the driver's caches (here in this process): the notes are the driver's
    to say, once."""
    from toast.search._context import SearchContext
    from toast.search._trial import SearchTrials

    settings = SearchSettings.from_flat(
        model=str(tiny_dirs["vit"]),
        dataset=str(image_dataset_dir),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        calib_samples=1000,  # more than the split holds: a note
        probe_samples=30,
        eval_samples=20,
        device="cpu",
        progress=False,
        runner="ray",
    )
    ctx = SearchContext.build(settings, progress=False)
    assert "note: --calib-samples 1000" in capsys.readouterr().out  # the driver says it
    SearchTrials.of(settings, capture=ctx.captured.directory).build()  # as a Ray worker builds it
    assert capsys.readouterr().out == ""  # the worker does not


def test_an_unreachable_hub_fails_at_once_in_offline_mode(monkeypatch):
    """The Hub not answering: the loaders run offline (a cached copy would load), so an unknown id fails at once,
    with the reason, instead of five retries."""
    from huggingface_hub import constants

    from toast.errors import UnsupportedModelError
    from toast.models import resolve_model

    monkeypatch.setattr(_hub, "hub_unreachable", lambda: "https://huggingface.co did not answer in 3 s: ConnectError")
    monkeypatch.setattr("toast.models._loading.hub_unreachable", _hub.hub_unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(UnsupportedModelError, match="did not answer in 3 s") as caught:
        resolve_model("someone/nonexistent")
    assert time.perf_counter() - start < 5 and "\n" not in str(caught.value)
    assert constants.HF_HUB_OFFLINE is False  # offline for the call only
    with _hub.hub_access(needed=False) as why:  # a local folder: no check, nothing changed
        assert why is None and constants.HF_HUB_OFFLINE is False


@pytest.mark.slow
def test_an_unknown_hub_model_is_one_line_within_seconds():
    """No `HF_HUB_OFFLINE`: without a network the Hub check fails in one quick request (28 s of retries before);
    with one, the Hub answers that the id does not exist. Either way: one line, exit 2, in seconds."""
    env = {k: v for k, v in OFFLINE.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    start = time.perf_counter()
    done = _cli(["--model", "someone/nonexistent", "--dry-run"], env=env)
    seconds = time.perf_counter() - start
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("toast-search: error: cannot load model 'someone/nonexistent'")
    assert seconds < 20, seconds
