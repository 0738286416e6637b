"""`--budget-latency-ms` and `--objectives accuracy,latency` on demo-vit: the budget is an Optuna constraint from the
latency table, the run measures its front and chosen plan end to end, chosen/ meets the budget as measured, and a
budget below the cheapest plan is one line, before any capture. No timed assertions: the budget is set between the
table's own estimates, and measured values are only checked for being positive and within the budget."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_main

from toast.errors import SettingsError
from toast.models import load_model
from toast.objectives import LatencyTable
from toast.search import measure_latency_table
from toast.search._latency import cheapest_latency_plan
from toast.search._measured import EndToEnd
from toast.search._measured import meets_measured_latency as _meets_measured_latency
from toast.search._storage import study_file
from toast.search._study import _latency_notes
from toast.spaces import Plan, PlanSpace

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread

TINY = [
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
]
KINDS = ("identity", "linear")
MADE_UP = LatencyTable(embed_ms=0.5, blocks_ms=(2.0,) * 5, tail_ms=0.0, translators_ms={"identity": 0.0, "linear": 0.3})


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def table(cache):
    """The latency table the runs will read from the cache (the same key: model, device, threads, batch, kinds)."""
    loaded = load_model("demo-vit")
    table, _ = measure_latency_table(loaded, kinds=KINDS, cache_dir=cache)
    return table


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory, cache, table):
    space = PlanSpace(num_blocks=table.num_blocks, kinds=KINDS, max_removed=4)
    _, cheapest = cheapest_latency_plan(table, space)
    # the budget as the command line passes it: an estimate can equal the midpoint exactly (an identity span solved
    # at 0 ms makes estimates linear in the blocks removed), and the run holds plans to the rounded figure
    budget = float(f"{(cheapest + table.original_ms) / 2:.6f}")
    out = tmp_path_factory.mktemp("run") / "run"
    args = [
        *TINY,
        "--trials",
        "12",
        "--budget-latency-ms",
        f"{budget:.6f}",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    code, stdout, stderr = run_main(args)
    assert code == 0, stderr
    return out, budget, stdout


def test_the_budget_is_a_constraint_from_the_table(budget_run, table):
    out, budget, stdout = budget_run
    assert "latency table from the cache" in stdout  # the run measured no part again
    doc = json.loads((out / "front.json").read_text())
    assert doc["budgets"] == {"latency": pytest.approx(budget, rel=1e-6)}
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert rows
    for row in rows:
        plan = Plan.of(json.loads(row["spans"]), table.num_blocks)
        estimate = float(row["latency_ms_estimated"])  # every row: the table's estimate
        assert estimate == pytest.approx(table.estimate(plan), rel=1e-5)
        assert float(row["latency"]) == pytest.approx(estimate, rel=1e-5)
        if estimate > budget + 1e-9:
            assert row["feasible"] == "False"
        if estimate > 1.25 * budget:
            assert row["scored"] == "False" and row["accuracy"] == ""  # far over budget: not scored


def test_front_and_chosen_carry_measured_and_estimated_latency(budget_run):
    out, budget, _ = budget_run
    doc = json.loads((out / "front.json").read_text())
    assert doc["front"]
    for record in [doc["baseline"], *doc["front"]]:
        assert record["latency_ms"] > 0 and record["latency_ms_estimated"] > 0
    chosen = doc["chosen"]
    assert chosen is not None and chosen["latency_ms"] <= budget  # measured end to end
    assert chosen["latency_ms_estimated"] <= budget
    assert (out / "chosen").is_dir()
    measured = {json.dumps(json.loads(r["spans"])) for r in csv.DictReader(open(out / "trials.csv")) if r["latency_ms"]}
    front = {json.dumps(r["spans"]) for r in doc["front"]}
    assert front | {json.dumps(chosen["spans"])} <= measured  # trials.csv: measured for the front plans and chosen
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_budget_below_the_cheapest_plan_is_one_line_before_any_capture(tmp_path, cache, table):
    fresh = tmp_path / "cache"
    code, stdout, stderr = run_main(
        [*TINY, "--budget-latency-ms", "1e-6", "--out", str(tmp_path / "run"), "--cache-dir", str(fresh)]
    )
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert not (fresh / "activations").exists()  # nothing captured
    # The run measured its own table into the fresh cache; its cheapest plan is the one named (the module's table is
    # another timing, whose cheapest plan may differ where two kinds cost nearly the same).
    measured, was_measured = measure_latency_table(load_model("demo-vit"), kinds=KINDS, cache_dir=fresh)
    assert not was_measured  # read back from the cache, not timed again
    space = PlanSpace(num_blocks=measured.num_blocks, kinds=KINDS, max_removed=4)
    cheapest, _ = cheapest_latency_plan(measured, space)
    assert "below the cheapest plan in this space" in line and f"({cheapest}: estimated" in line
    assert study_file(tmp_path / "run") is None  # no study started


def test_latency_objective_is_the_tables_estimate(tmp_path, cache, table):
    out = tmp_path / "run"
    args = [
        *TINY,
        "--objectives",
        "accuracy,latency",
        "--plan",
        "1→3:linear",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    code, stdout, stderr = run_main(args)
    assert code == 0, stderr
    doc = json.loads((out / "front.json").read_text())
    (record,) = [r for r in doc["front"] if r["plan"] == "1→3:linear"]
    assert record["latency"] == pytest.approx(table.estimate(Plan.parse("1→3:linear", table.num_blocks)))
    assert record["latency_ms"] > 0


def test_the_next_best_plan_is_taken_when_the_best_misses_the_budget_as_measured(capsys):
    pool = [
        {"plan": "a", "spans": [[0, 1, "identity"]], "accuracy": 90.0, "latency": 0.9, "gflops": 1.0},
        {"plan": "b", "spans": [[0, 2, "identity"]], "accuracy": 80.0, "latency": 0.8, "gflops": 0.8},
        {"plan": "c", "spans": [[0, 3, "identity"]], "accuracy": 70.0, "latency": 0.7, "gflops": 0.6},
    ]
    measured = {"a": 1.2, "b": 0.95, "c": 0.6}

    def meter(record):
        return measured[record["plan"]]

    chosen = _meets_measured_latency(pool, {"latency": 1.0}, meter)
    assert chosen["plan"] == "b"
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("latency: a is estimated 0.9 ms but measured 1.2 ms") and "took b" in line
    measured["b"] = 1.1
    assert _meets_measured_latency(pool, {"latency": 1.0}, meter)["plan"] == "c"
    measured["c"] = math.inf
    assert _meets_measured_latency(pool, {"latency": 1.0}, meter) is None


def test_without_measuring_here_the_choice_holds_estimates_to_the_tables_margin():
    """A run against a table file measures nothing here: its estimates meet a budget only with the table's margin."""
    pool = [
        {"plan": "a", "spans": [[0, 1, "identity"]], "accuracy": 90.0, "latency": 0.9},
        {"plan": "b", "spans": [[0, 2, "identity"]], "accuracy": 80.0, "latency": 0.8},
    ]
    held = dataclasses.replace(MADE_UP, margin=0.25)  # a 1.0 ms budget holds estimates to 0.8 ms
    assert EndToEnd(None, MADE_UP).choose(pool, {"latency": 1.0})["plan"] == "a"
    assert EndToEnd(None, held).choose(pool, {"latency": 1.0})["plan"] == "b"
    assert EndToEnd(None, held).choose(pool, {"latency": 0.7}) is None


def test_a_budget_the_cheapest_plan_meets_only_without_the_margin_is_refused_and_the_margin_is_said():
    space = PlanSpace(num_blocks=MADE_UP.num_blocks, kinds=KINDS)
    plan, low = cheapest_latency_plan(MADE_UP, space)
    held = SimpleNamespace(latency=dataclasses.replace(MADE_UP, margin=0.2))
    with pytest.raises(SettingsError, match=rf"below the cheapest plan in this space \({plan}: .* 20.0% margin"):
        _latency_notes(low * 1.1, held, space)
    (note,) = _latency_notes(low * 1.3, held, space)
    assert f"held to an estimate of {low * 1.3 / 1.2:.4g} ms" in note and "up to 20.0% slower" in note
    assert _latency_notes(low * 1.1, SimpleNamespace(latency=MADE_UP), space) == []
