"""`--cache-dir` holds everything a run keeps (issue 19, item 6): with a fresh, empty home, a run writes nothing
outside its cache dir and its run directory: not the `docstrings` corpus, not `datasets`' Arrow conversion of a local
parquet folder (both went to ~/.cache before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def fresh_home(tmp_path) -> tuple[dict[str, str], Path]:
    """An environment whose home and every cache variable point into an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOAST_", "HF_", "XDG_", "TRANSFORMERS_"))}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        HF_HOME=str(home / ".cache" / "huggingface"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MPLCONFIGDIR=str(tmp_path / "matplotlib"),  # matplotlib's own font cache, shared by every program using it
    )
    return env, home


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "toast.search.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_search_on_a_parquet_folder_writes_only_under_cache_dir_and_out(
    tiny_dirs, image_dataset_dir, tmp_path, fresh_home
):
    import datasets

    env, home = fresh_home
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for split in ("train", "test"):
        datasets.load_from_disk(str(image_dataset_dir))[split].to_parquet(str(parquet / f"{split}.parquet"))
    cache, out, cwd = tmp_path / "cache", tmp_path / "run", tmp_path / "cwd"
    _run(
        [
            *("--model", str(tiny_dirs["vit"]), "--dataset", str(parquet), "--cache-dir", str(cache)),
            *("--out", str(out), "--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20"),
            *("--trials", "2", "--sampler", "random", "--device", "cpu"),
        ],
        env,
        cwd,
    )
    assert _files(home) == [] and _files(cwd) == []
    assert (out / "trials.csv").is_file()
    held = _files(cache)
    assert any(f.startswith("datasets/arrow/parquet") for f in held), held  # datasets' conversion, under the cache


def test_the_docstrings_corpus_is_built_under_cache_dir(tiny_dirs, tmp_path, fresh_home):
    env, home = fresh_home
    cache, out, cwd = tmp_path / "cache", tmp_path / "analysis", tmp_path / "cwd"
    _run(
        [
            "analyze",
            *("--model", str(tiny_dirs["bert"]), "--dataset", "docstrings", "--cache-dir", str(cache)),
            *("--out", str(out), "--calib-samples", "8", "--device", "cpu"),
        ],
        env,
        cwd,
    )
    assert _files(home) == [] and _files(cwd) == []
    assert (cache / "datasets" / "docstrings" / "dataset_dict.json").is_file()
    assert (out / "similarity.json").is_file()
