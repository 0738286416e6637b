"""The default run directory (issue 19, item 4): `runs/<model>-<dataset>-<key>`, the key 8 hex digits of what binds a
run (`SearchSettings.identity()`), so re-running the same command without `--out` resumes its study, and changing a
binding option starts a run of its own."""

from __future__ import annotations

import csv
import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from toast.search import SearchSettings
from toast.search._settings import default_run_dir
from toast.search.cli import main


def test_the_default_run_directory_is_named_by_what_binds_the_run():
    base = SearchSettings.from_flat(model="facebook/dinov2-base", dataset="./data/cifar100")
    assert re.fullmatch(r"runs/dinov2-base-cifar100-[0-9a-f]{8}", base.out.as_posix())
    assert (
        base.out
        == default_run_dir(base)
        == SearchSettings.from_flat(model="facebook/dinov2-base", dataset="./data/cifar100").out
    )
    # what may change on a resume keeps the directory; what binds it gives another
    same = dict(trials=7, timeout=60.0, sampler="random", budget_fraction=0.5, batch_size=8, progress=False)
    assert SearchSettings.from_flat(model=base.model, dataset=base.dataset, **same).out == base.out
    for binding in (dict(seed=1), dict(calib_samples=100), dict(activation_dtype="float32"), dict(refit="sequential")):
        assert SearchSettings.from_flat(model=base.model, dataset=base.dataset, **binding).out != base.out, binding
    # an explicit `out` is kept as given, and `replace` keeps the directory already derived
    assert SearchSettings.from_flat(model="m", dataset="d", out="elsewhere").out == Path("elsewhere")
    assert base.updated(trials=3).out == base.out


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_the_same_command_without_out_resumes_and_another_seed_starts_anew(
    tiny_dirs, image_dataset_dir, tmp_path, monkeypatch, one_thread
):
    monkeypatch.chdir(tmp_path)
    command = [
        *("--model", str(tiny_dirs["vit"]), "--dataset", str(image_dataset_dir), "--cache-dir", str(tmp_path / "c")),
        *("--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"),
        *("--trials", "3", "--sampler", "random", "--max-removed", "2"),
    ]
    code, first, err = _run(command)
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"vit-colours-[0-9a-f]{8}", run.name)
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert len(rows) == 3 and f"wrote {Path('runs') / run.name}/trials.csv" in first

    code, again, err = _run(command)  # the same command: the same directory, its study resumed, no trial run again
    assert code == 0, err
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]
    assert list(csv.DictReader((run / "trials.csv").open())) == rows

    code, _, err = _run([*command, "--seed", "1"])  # a binding option changed: a run of its own
    assert code == 0, err
    assert len(list((tmp_path / "runs").iterdir())) == 2
