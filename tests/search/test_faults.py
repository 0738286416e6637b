"""Fault injection: a run killed (SIGKILL, as `kill -9`) or given a full disk at each stage that writes, and every
cache kind's values corrupted; after each, the same command run again finishes with the same front as an
undisturbed run.

The faults come from the product's named fault points (`toast._faults`, `TOAST_FAULT=<point>[@n][:enospc]`).
The space is searched exhaustively (11 identity plans of a 4-block ViT), so the front does not depend on which
trials a resumed sampler would have proposed: any difference is a fault that lost or changed something.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from toast._faults import FAULT_ENV, POINTS

pytestmark = pytest.mark.slow

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
ENV.pop(FAULT_ENV, None)
#: the points a search passes (`export` is the export command's)
SEARCH_POINTS = ("capture", "latency", "prefix", "trial@5", "finalize", "chosen")


def _args(tiny_dirs, dataset: Path, root: Path) -> list[str]:
    return [
        "--model",
        str(tiny_dirs["vit"]),
        "--dataset",
        str(dataset),
        "--cache-dir",
        str(root / "cache"),
        "--out",
        str(root / "run"),
        "--calib-samples",
        "16",
        "--probe-samples",
        "60",
        "--eval-samples",
        "40",
        "--device",
        "cpu",
        "--no-progress",
        "--translators",
        "identity",
        "--max-removed",
        "2",
        "--sampler",
        "exhaustive",
        "--trials",
        "11",
        "--budget-fraction",
        "0.8",
        "--budget-latency-ms",
        "100000",  # a latency table is measured (and cached), and the front measured end to end; never binding
    ]


def _cli(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    """The command in a process of its own: a kill (SIGKILL) must end a process."""
    env = dict(ENV, **({FAULT_ENV: fault} if fault else {}))
    return subprocess.run(
        [sys.executable, "-m", "toast.search.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _main(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    """The command in this process (`main`, the same code path, without a new interpreter's imports): for a fault that
    raises (a full disk) and for the runs that follow a fault."""
    from toast import _faults
    from toast.search.cli import main

    out, err = io.StringIO(), io.StringIO()
    before = os.environ.pop(FAULT_ENV, None)
    if fault:
        os.environ[FAULT_ENV] = fault
    _faults._reached.clear()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(args)
    finally:
        os.environ.pop(FAULT_ENV, None)
        if before is not None:
            os.environ[FAULT_ENV] = before
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _outcome(run: Path) -> tuple:
    """What must not change: the front's plans and scores (latency aside: measured), the chosen plan, the plans
    scored (every plan of the space: a trial a kill interrupted stays in trials.csv as failed, and its plan is
    queued again and scored by the next run)."""
    doc = json.loads((run / "front.json").read_text())
    front = sorted((json.dumps(r["spans"]), r["accuracy"], r["gflops"]) for r in doc["front"])
    chosen = doc["chosen"]["spans"] if doc["chosen"] else None
    with open(run / "trials.csv", newline="") as f:
        scored = sorted(r["plan"] for r in csv.DictReader(f) if r["state"] == "COMPLETE")
    return front, chosen, doc["baseline"]["accuracy"], scored


@pytest.fixture(scope="module")
def undisturbed(tiny_dirs, graded_dataset_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("undisturbed")
    done = _main(_args(tiny_dirs, graded_dataset_dir, root))
    assert done.returncode == 0, done.stderr
    return _outcome(root / "run")


def test_the_fault_points_are_the_ones_the_product_passes():
    assert [p.partition("@")[0] for p in SEARCH_POINTS] + ["export"] == list(POINTS)


@pytest.mark.parametrize("action", ["kill", "enospc"])
@pytest.mark.parametrize("point", SEARCH_POINTS)
def test_a_fault_at_each_stage_then_the_same_command_gives_the_same_front(
    point, action, undisturbed, tiny_dirs, graded_dataset_dir, tmp_path
):
    args = _args(tiny_dirs, graded_dataset_dir, tmp_path)
    faulted = (_cli if action == "kill" else _main)(args, f"{point}:{action}")
    if action == "kill":
        assert faulted.returncode == -9, faulted.stderr
    else:  # a full disk: one line, exit 2, no traceback
        lines = [line for line in faulted.stderr.splitlines() if line.strip()]
        assert faulted.returncode == 2 and len(lines) == 1 and "No space left" in lines[0], faulted.stderr
        assert "Traceback" not in faulted.stderr
    again = _main(args)
    assert again.returncode == 0, again.stderr
    assert _outcome(tmp_path / "run") == undisturbed
    chosen = tmp_path / "run" / "chosen"
    assert (chosen / "toast.json").is_file() and (chosen / "README.md").is_file()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".chosen.")]  # no half swap left


@pytest.mark.parametrize("action", ["kill", "enospc"])
def test_a_fault_during_an_onnx_export_keeps_the_previous_file(action, tiny_dirs, graded_dataset_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    args = _args(tiny_dirs, graded_dataset_dir, tmp_path)
    assert _main(args).returncode == 0
    export = ["export", str(tmp_path / "run"), "--format", "onnx"]
    assert _main(export).returncode == 0
    onnx_file = tmp_path / "run" / "chosen" / "model.onnx"
    good = onnx_file.read_bytes()
    faulted = (_cli if action == "kill" else _main)(export, f"export:{action}")
    assert faulted.returncode == (-9 if action == "kill" else 2), faulted.stderr
    assert onnx_file.read_bytes() == good
    again = _main(export)
    assert again.returncode == 0, again.stderr
    assert not [p for p in onnx_file.parent.iterdir() if ".tmp-" in p.name] or action == "kill"


def _flip_values(path: Path) -> None:
    """Replace a float32 block of `path` by finite noise: the file's structure stays valid, its values do not."""
    data = bytearray(path.read_bytes())
    start, n = len(data) // 3, min(4096, len(data) // 3)
    noise = np.random.default_rng(0).normal(size=n // 4).astype(np.float32).tobytes()
    data[start : start + len(noise)] = noise
    path.write_bytes(bytes(data))


CACHES = {
    "inputs": lambda cache: sorted((cache / "inputs").rglob("*.arrow")),
    "activations": lambda cache: sorted((cache / "activations").rglob("*.arrow")),
    "statistics": lambda cache: sorted(
        p
        for p in (cache / "activations").rglob("*.npy")
        if p.name == "gram.npy" or p.parent.name in ("pairs", "branch")
    ),
    "prefix": lambda cache: sorted((cache / "prefix").rglob("*.arrow")),
    "latency": lambda cache: sorted((cache / "latency").rglob("*.json")),
}


@pytest.mark.parametrize("kind", list(CACHES))
def test_corrupted_cache_values_are_found_and_the_front_is_the_same(
    kind, undisturbed, tiny_dirs, graded_dataset_dir, tmp_path
):
    args = _args(tiny_dirs, graded_dataset_dir, tmp_path)
    assert _main(args).returncode == 0
    files = [p for p in CACHES[kind](tmp_path / "cache") if p.name != "manifest.json"]
    assert files, f"no {kind} cache files"
    for path in files:
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
            path.write_text(json.dumps(doc).replace("0.", "9."))
        else:
            _flip_values(path)
    shutil.rmtree(tmp_path / "run")  # a new run on the damaged cache: every value comes from it
    again = _main(args)
    assert again.returncode == 0, again.stderr
    assert _outcome(tmp_path / "run") == undisturbed
