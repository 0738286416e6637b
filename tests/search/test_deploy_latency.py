"""Latency on the deployment machine: `toast-search latency-table` writes a portable table, a search estimates latency
from it (`--latency-table`), refusing in one line a table of another architecture (before any weight loads), another
shape or without a kind; `toast-search measure RUN` times the original, the front and chosen/ in a runtime and writes
the times into front.json, and names the next best plan when the chosen one misses the budget as measured there. No
timed assertions: budgets are set between the table's own estimates; the verdict is checked on given times."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from conftest import run_main

from toast.objectives import LatencyTable
from toast.search import _deploy_latency
from toast.search._latency_file import read_latency_file, write_latency_file
from toast.spaces import Plan

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread

SEARCH = [
    "--model",
    "demo-vit",
    "--dataset",
    "digits",
    "--calib-samples",
    "64",
    "--probe-samples",
    "200",
    "--eval-samples",
    "100",
    "--device",
    "cpu",
    "--no-progress",
    "--max-removed",
    "4",
    "--trials",
    "6",
]


@pytest.fixture(scope="module")
def table_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("table") / "ort.json"
    code, stdout, err = run_main(
        ["latency-table", "--model", "demo-vit", "--runtime", "onnxruntime", "--device", "cpu", "--out", str(out),
         "--repeats", "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0, err
    assert f"wrote {out}: onnxruntime on cpu" in stdout and "search against it" in stdout
    assert "kept blocks 1: " in stdout  # the kept blocks by their count (`LatencyTable.kept_ms`)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, table_file) -> tuple[Path, Path]:
    """A search against the onnxruntime table, with a budget between the table's estimates (with its margin, which
    a busy machine can make large: the search holds estimates to the budget less the margin)."""
    table = read_latency_file(table_file)
    root = tmp_path_factory.mktemp("run")
    budget = table.bound(Plan.parse("1→3:identity", table.num_blocks)) * 1.001
    code, stdout, err = run_main(
        [*SEARCH, "--latency-table", str(table_file), "--budget-latency-ms", f"{budget}", "--out", str(root / "run"),
         "--cache-dir", str(root / "cache")]
    )  # fmt: skip
    assert code == 0, err
    assert f"latency table from {table_file}: onnxruntime on cpu" in stdout
    return root / "run", root / "cache"


def test_the_file_names_where_and_what_it_was_measured_on(table_file):
    doc = json.loads(table_file.read_text())
    assert doc["format"] == "toast-latency-table" and doc["model"] == "demo-vit"
    assert doc["runtime"] == "onnxruntime" and set(doc["versions"]) == {"torch", "onnxruntime"}
    assert doc["device"].startswith("cpu: ") and doc["threads"] == 1 and doc["batch_size"] == 1
    assert doc["input_description"] == "pixel_values (1, 3, 32, 32)" and doc["fingerprint"].startswith("sha256:")
    assert set(doc["translators_ms"]) == {"identity", "linear"}
    assert doc["version"] == 2 and len(doc["kept_ms"]) == 7 and doc["kept_ms"][0] == 0  # 6 blocks: 0 … 6 kept


def test_the_search_estimates_from_the_file_and_measures_nothing_here(run_dir, table_file):
    run, _ = run_dir
    table = read_latency_file(table_file)
    front = json.loads((run / "front.json").read_text())
    assert front["budgets"]["latency"] == pytest.approx(table.bound(Plan.parse("1→3:identity", 6)) * 1.001)
    assert all("latency_ms" not in record for record in front["front"])  # measured where it deploys, not here
    chosen = front["chosen"]
    assert table.estimate(Plan.of(chosen["spans"], 6)) <= front["budgets"]["latency"]
    settings = json.loads((run / "settings.json").read_text())
    assert settings["latency_table"] == str(table_file)


def test_measure_writes_each_plans_time_into_front_json(run_dir):
    run, _ = run_dir
    for _ in range(2):  # measured again in the same runtime: the entry is replaced, not added
        code, stdout, err = run_main(["measure", str(run), "--runtime", "eager", "--device", "cpu", "--repeats", "2"])
        assert code == 0, err
    assert "measured end to end in eager on cpu" in stdout and "chosen/ as saved" in stdout
    front = json.loads((run / "front.json").read_text())
    (measurement,) = front["latency_measurements"]
    assert measurement["runtime"] == "eager" and measurement["budget_ms"] == front["budgets"]["latency"]
    assert math.isfinite(measurement["drift"])  # how steady the machine was while timing
    for record in [front["baseline"], *front["front"], front["chosen"]]:
        (entry,) = record["latency_measured"]
        assert entry["runtime"] == "eager" and entry["ms"] > 0 and entry["threads"] == 1
    assert "latency_measured" in front["glossary"]
    code, _, err = run_main(["measure", str(run), "--runtime", "onnxruntime", "--device", "cpu", "--repeats", "2"])
    assert code == 0, err
    front = json.loads((run / "front.json").read_text())
    assert [m["runtime"] for m in front["latency_measurements"]] == ["eager", "onnxruntime"]
    assert {e["runtime"] for e in front["chosen"]["latency_measured"]} == {"eager", "onnxruntime"}


def test_a_chosen_plan_over_the_budget_as_measured_names_the_next_best(run_dir, monkeypatch, capsys):
    """The verdict on given times: the chosen plan measured over the budget, a front plan under it is named."""
    run, _ = run_dir
    front = json.loads((run / "front.json").read_text())
    chosen = front["chosen"]["plan"]
    under = [r for r in front["front"] if r["plan"] != chosen and r["plan"] != "original"]
    assert under, "the test needs a second front plan"
    best = max(under, key=lambda r: r["accuracy"])

    def given(runtime, builds, inputs, **kw):
        return {k: (1.0 if k == best["plan"] else 5.0) for k in builds}

    monkeypatch.setattr(_deploy_latency, "time_models", given)
    code, stdout, err = run_main(["measure", str(run), "--budget-latency-ms", "2", "--device", "cpu"])
    assert code == 0, err
    assert f"the chosen plan {chosen} misses the 2 ms budget as measured here (5 ms)" in stdout
    assert f"the next best that meets it: {best['plan']} (1 ms" in stdout
    front = json.loads((run / "front.json").read_text())
    assert front["latency_measurements"][-1]["next_best"] == best["plan"]
    code, stdout, _ = run_main(["measure", str(run), "--budget-latency-ms", "0.5", "--device", "cpu"])
    assert code == 0 and "no front plan meets it as measured here" in stdout


@pytest.mark.parametrize("level, said", [(1.0, False), (1.08, False), (1.5, True), (0.6, True)])
def test_an_original_off_its_estimate_says_every_estimate_is_off(run_dir, monkeypatch, level, said):
    """The original measured `level` times its estimate (given times): over 10% off, one warning names the factor,
    and the measurement keeps the estimate and the factor."""
    run, _ = run_dir
    front = json.loads((run / "front.json").read_text())
    estimated = front["baseline"]["latency"]

    def given(runtime, builds, inputs, **kw):
        return {k: estimated * level for k in builds}

    monkeypatch.setattr(_deploy_latency, "time_models", given)
    code, stdout, err = run_main(["measure", str(run), "--device", "cpu"])
    assert code == 0, err
    assert f"original: {estimated * level:.4g} ms (estimated {estimated:.4g})" in stdout
    assert (f"warning: the original ran {level:.2f}x its estimate here" in stdout) is said
    measurement = json.loads((run / "front.json").read_text())["latency_measurements"][-1]
    assert measurement["original_estimated_ms"] == estimated and measurement["level"] == pytest.approx(level)


def _one_line(code: int, err: str) -> str:
    assert code == 2, err
    line = err.strip()
    assert line.count("\n") == 0 and "Traceback" not in line, err
    return line


def test_a_table_of_another_architecture_is_refused_before_the_weights(tmp_path, table_file, monkeypatch):
    doc = json.loads(table_file.read_text())
    other = {**doc, "fingerprint": "sha256:0000000000000000"}
    (tmp_path / "other.json").write_text(json.dumps(other))

    def no_weights(*a, **k):
        raise AssertionError("weights loaded before the table was checked")

    monkeypatch.setattr("toast.search._prepare.load_model", no_weights)
    line = _one_line(
        *run_main([*SEARCH, "--latency-table", str(tmp_path / "other.json"), "--budget-latency-ms", "5", "--out",
                   str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])[::2]
    )  # fmt: skip
    assert "was measured on another architecture" in line and "toast-search latency-table --model demo-vit" in line


@pytest.mark.parametrize(
    ("edit", "extra", "expected"),
    [
        (lambda d: d, ["--latency-batch-size", "2"], "give --latency-batch-size 1 to search against it"),
        (lambda d: {**d, "translators_ms": {"identity": 0.0}}, [], "has no time for translator kind linear"),
        (lambda d: {**d, "embed_ms": math.nan}, [], "bad: embed_ms"),
        (lambda d: {**d, "blocks_ms": [math.inf] * 6}, [], "bad: blocks_ms"),
        (lambda d: {**d, "kept_ms": [0.0, 1.0]}, [], "bad: kept_ms (one per count of kept blocks, 0 to L)"),
        (lambda d: {**d, "kept_ms": [0.0, 1.0, 2.0, -3.0, 4.0, 5.0, 6.0]}, [], "bad: kept_ms"),
        (lambda d: {**d, "kept_ms": 5}, [], "kept_ms must be a list of milliseconds"),
        (lambda d: {**d, "margin": math.nan}, [], "bad: margin"),
        (lambda d: {**d, "margin": -0.5}, [], "bad: margin"),
        (lambda d: {**d, "version": 99}, [], "has format version 99"),
        (lambda d: {"hello": 1}, [], "is not a toast latency table"),
        (lambda d: {k: v for k, v in d.items() if k != "fingerprint"}, [], "lacks fingerprint"),
    ],
)
def test_a_defective_or_misfit_table_is_one_line(tmp_path, table_file, edit, extra, expected):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(edit(json.loads(table_file.read_text()))))
    line = _one_line(
        *run_main([*SEARCH, "--latency-table", str(path), "--budget-latency-ms", "5", *extra, "--out",
                   str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])[::2]
    )  # fmt: skip
    assert expected in line
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").glob("front.json"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--latency-table", "nowhere.json", "--budget-latency-ms", "5"], "no such file"),
        (["--latency-table", "t.json"], "--latency-table is for latency: make latency an objective"),
        (["--latency-runtime", "onnxruntime"], "--latency-runtime is for latency"),
        (["--latency-runtime", "tensorflow", "--budget-latency-ms", "5"], "invalid choice: 'tensorflow'"),
        (["--latency-runtime", "onnxruntime-tensorrt", "--budget-latency-ms", "5"], "does not run on cpu"),
        (["--latency-runtime", "onnxruntime", "--dtype", "bfloat16", "--budget-latency-ms", "5"],
         "no bfloat16 kernels"),
        (["--latency-table", "t.json", "--latency-runtime", "compile", "--budget-latency-ms", "5"],
         "leave --latency-runtime out with it"),
    ],
)  # fmt: skip
def test_bad_latency_options_are_one_line(tmp_path, table_file, args, expected, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text(table_file.read_text())
    line = _one_line(*run_main([*SEARCH, *args, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])[::2])
    assert expected in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--runtime", "tensorflow"], "invalid choice: 'tensorflow'"),
        (["--batch-size", "0"], "--batch-size must be from 1 to 4096"),
        (["--batch-size", "nan"], "--batch-size must be a whole number"),
        (["--mode", "decode"], "is a image encoder: use --mode prefill"),
        (["--translators", "linear,warp"], "warp"),
        (["--runtime", "onnxruntime-tensorrt"], "does not run on cpu"),
        (["--runtime", "onnxruntime", "--dtype", "bfloat16"], "no bfloat16 kernels"),
        (["--model", "no-such-model-anywhere"], "no-such-model-anywhere"),
    ],
)
def test_latency_table_refuses_bad_input_in_one_line(tmp_path, args, expected):
    base = ["latency-table", "--model", "demo-vit", "--device", "cpu", "--out", str(tmp_path / "t.json")]
    line = _one_line(*run_main([*base, *args])[::2])
    assert expected in line and not (tmp_path / "t.json").exists()


def test_a_sliding_window_decode_at_its_window_is_one_line(tmp_path):
    """onnxruntime's decode of a model with sliding-window layers (Gemma 2; the tiny config's window is 4) after 4
    cached tokens: one line, nothing written (the step graph's cache keeps every token, so it would read more than
    the model's own)."""
    from conftest import save_tiny

    folder = save_tiny("gemma2", tmp_path / "gemma2")
    args = ["--runtime", "onnxruntime", "--mode", "decode", "--seq-len", "4", "--device", "cpu"]
    line = _one_line(
        *run_main(["latency-table", "--model", str(folder), *args, "--out", str(tmp_path / "t.json")])[::2]
    )
    assert "fewer than 4 cached tokens" in line and not (tmp_path / "t.json").exists()


def test_latency_table_never_writes_over_another_file(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    line = _one_line(*run_main(["latency-table", "--model", "demo-vit", "--out", str(tmp_path / "notes.json")])[::2])
    assert "exists and is not a latency table" in line and (tmp_path / "notes.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget-latency-ms", "nan"], "positive finite number"),
        (["--budget-latency-ms", "-1"], "positive finite number"),
        (["--runtime", "onnxruntime-tensorrt"], "does not run on cpu"),
        (["--runtime", "onnxruntime", "--dtype", "bfloat16"], "no bfloat16 kernels"),
    ],
)
def test_measure_refuses_bad_input_in_one_line(run_dir, args, expected):
    run, _ = run_dir
    before = (run / "front.json").read_text()
    line = _one_line(*run_main(["measure", str(run), "--device", "cpu", *args])[::2])
    assert expected in line and (run / "front.json").read_text() == before


def test_measure_needs_a_finished_run(tmp_path):
    line = _one_line(*run_main(["measure", str(tmp_path)])[::2])
    assert "is not a run directory" in line


def test_the_table_file_round_trips(tmp_path):
    table = LatencyTable(
        embed_ms=0.5, blocks_ms=(1.0, 1.0), tail_ms=0.0, translators_ms={"linear": 0.1}, runtime="compile",
        versions={"torch": "x"}, fingerprint="sha256:ab",
    )  # fmt: skip
    path = write_latency_file(table, tmp_path / "t.json", model="m")
    assert read_latency_file(path) == table


def test_a_search_measures_its_own_table_and_front_in_latency_runtime(tmp_path):
    """`--latency-runtime onnxruntime`: the table is onnxruntime's (cached apart from eager's) and the end of the run
    times the front in onnxruntime."""
    args = [
        *SEARCH,
        "--latency-runtime",
        "onnxruntime",
        "--budget-latency-ms",
        "1000",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    code, stdout, err = run_main([*args, "--out", str(tmp_path / "r")])
    assert code == 0, err
    assert "latency table measured: onnxruntime on cpu" in stdout
    front = json.loads((tmp_path / "r" / "front.json").read_text())
    assert all(r["latency_ms"] > 0 and r["latency_ms_estimated"] > 0 for r in front["front"])
    code, stdout, err = run_main([*args, "--out", str(tmp_path / "r2")])
    assert code == 0 and "latency table from the cache: onnxruntime on cpu" in stdout, err


def test_latency_table_says_the_kept_blocks_by_count_and_each_class_of_block():
    from toast.search.cli.latency import _blocks

    even = LatencyTable(embed_ms=0.5, blocks_ms=(1.0,) * 4, tail_ms=0.0, kept_ms=(0.0, 0.9, 2.0, 3.0, 4.0))
    assert _blocks(even) == "kept blocks 1: 0.9, 2: 2, 4: 4"
    classes = dataclasses.replace(even, blocks_ms=(0.5, 1.5, 0.5, 1.5))  # Gemma 2: sliding, full, …
    assert _blocks(classes) == "kept blocks 1: 0.9, 2: 2, 4: 4 (a block in the original: 0.5, 1.5)"
    assert _blocks(dataclasses.replace(even, kept_ms=())) == "a block 1"  # a version-1 file
