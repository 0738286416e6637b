"""`toast-search analyze`: outputs with the documented schema, bad input as one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toast.search.cli import main


def test_analyze_writes_similarity(tiny_dirs, image_dataset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "analyze",
            "--model",
            str(tiny_dirs["vit"]),
            "--dataset",
            str(image_dataset_dir),
            "--calib-samples",
            "16",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
        ]
    )
    assert code == 0
    report = json.loads((out / "similarity.json").read_text())
    assert set(report) >= {"cka", "cosine_cls", "block_redundancy", "states"}
    L = 4
    assert report["states"] == [f"h_{k}" for k in range(L + 1)]
    assert len(report["cka"]) == L + 1 and all(len(r) == L + 1 for r in report["cka"])
    assert report["block_redundancy"][0] is None
    assert (out / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "most redundant blocks" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "does not exist"),
        (["--model", "not-a-known-alias-or-id"], "cannot load model"),
        (["--dataset", "/nonexistent/data"], "not found"),
        (["--calib-samples", "1"], "at least 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_dirs, image_dataset_dir, tmp_path, args, message):
    base = {"--model": str(tiny_dirs["vit"]), "--dataset": str(image_dataset_dir), "--calib-samples": "8"}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = [
        "analyze",
        *[x for kv in base.items() for x in kv],
        "--out",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--no-progress",
    ]
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "toast.search.cli", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("toast-search: error:") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_errors_name_analyze_s_own_flags(tiny_dirs, image_dataset_dir, tmp_path, capsys):
    """A split that does not exist: analyze reads it from --split (the search's --split-train)."""
    argv = ["analyze", "--model", str(tiny_dirs["vit"]), "--dataset", str(image_dataset_dir), "--split", "nope"]
    code = main([*argv, "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    line = capsys.readouterr().err.strip()
    assert code == 2 and line.endswith("(splits: train, test): pass --split"), line
