"""The front and the choice, checked against brute-force references written independently here."""

from __future__ import annotations

import io
import itertools
import math
import subprocess
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

from toast.objectives import get_objectives
from toast.search import (
    Front,
    SearchSettings,
    choose,
    format_front_table,
    hypervolume,
    non_dominated,
    non_dominated_sort,
    plot_pareto,
)
from toast.search._export import scored_head
from toast.search._final import Final, choose_plan
from toast.search._measured import EndToEnd, meets_measured_latency
from toast.search._pareto import on_task_plane, pareto_axes
from toast.search._plot import clipped_range, pareto_figure
from toast.spaces import MissingDependencyError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIXED = {
    2: ["maximize", "minimize"],
    3: ["maximize", "minimize", "minimize"],
    4: ["minimize", "maximize", "minimize", "maximize"],
}


# ---------------------------------------------------------------- independent references


def better_or_equal(a, b, directions) -> bool:
    return all((x >= y) if d == "maximize" else (x <= y) for x, y, d in zip(a, b, directions))


def strictly_better_somewhere(a, b, directions) -> bool:
    return any((x > y) if d == "maximize" else (x < y) for x, y, d in zip(a, b, directions))


def brute_non_dominated(values, directions) -> list[bool]:
    """O(n^2) double loop over plain Python floats."""
    rows = [list(map(float, r)) for r in values]
    out = []
    for i, a in enumerate(rows):
        if any(math.isnan(v) for v in a):
            out.append(False)
            continue
        dominated = False
        for j, b in enumerate(rows):
            if j != i and not any(math.isnan(v) for v in b):
                if better_or_equal(b, a, directions) and strictly_better_somewhere(b, a, directions):
                    dominated = True
                    break
        out.append(not dominated)
    return out


def brute_ranks(values, directions) -> list[int]:
    """Peel brute-force fronts one at a time; NaN rows rank after the last front."""
    rows = [list(map(float, r)) for r in values]
    ranks = [None] * len(rows)
    left = [i for i, r in enumerate(rows) if not any(math.isnan(v) for v in r)]
    rank = 0
    while left:
        mask = brute_non_dominated([rows[i] for i in left], directions)
        for i, on in zip(left, mask):
            if on:
                ranks[i] = rank
        left = [i for i, on in zip(left, mask) if not on]
        rank += 1
    return [rank if r is None else r for r in ranks]


def to_losses(values, directions):
    """Every objective minimised: maximised ones negated (the reference's own conversion)."""
    return [[-v if d == "maximize" else v for v, d in zip(row, directions)] for row in values]


def grid_hypervolume(values, directions, reference) -> int:
    """Count the unit cells of the integer grid that some point dominates (integer coordinates only)."""
    losses = np.array(to_losses(values, directions), dtype=np.int64)
    ref = np.array(to_losses([reference], directions)[0], dtype=np.int64)
    low = losses.min(axis=0)
    axes = [np.arange(lo, r) for lo, r in zip(low, ref)]
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(ref))  # lower corners
    covered = np.zeros(len(cells), dtype=bool)
    for p in losses:
        if np.all(p < ref):
            covered |= np.all(cells >= p, axis=1)
    return int(covered.sum())


def inclusion_exclusion_hypervolume(values, directions, reference) -> float:
    """Sum over every non-empty subset of the (clipped) boxes' intersection volumes, alternating signs."""
    losses = to_losses(values, directions)
    ref = to_losses([reference], directions)[0]
    boxes = [p for p in losses if all(v < r for v, r in zip(p, ref))]
    total = 0.0
    for size in range(1, len(boxes) + 1):
        for subset in itertools.combinations(boxes, size):
            corner = [max(c) for c in zip(*subset)]
            total += (-1) ** (size + 1) * math.prod(r - c for r, c in zip(ref, corner))
    return total


# ---------------------------------------------------------------- non-dominated


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mixed", [False, True])
def test_non_dominated_equals_brute_force(m, seed, mixed):
    rng = np.random.default_rng(seed)
    values = rng.random((60, m))
    if seed % 2:  # coarse integer values: many ties on single objectives and exact duplicates
        values = rng.integers(0, 4, size=(60, m)).astype(float)
    directions = MIXED[m] if mixed else ["minimize"] * m
    expected = brute_non_dominated(values, directions)
    assert non_dominated(values, directions).tolist() == expected


def test_infinite_values_and_a_single_objective():
    values = np.array([[np.inf, 1.0], [np.inf, 1.0], [np.inf, 2.0], [3.0, -np.inf], [2.0, -np.inf], [5.0, 0.0]])
    for directions in (["maximize", "minimize"], ["minimize", "maximize"], ["minimize", "minimize"]):
        assert non_dominated(values, directions).tolist() == brute_non_dominated(values, directions)
        # a constant third objective changes nothing, and takes the general (m >= 3) path
        wide = np.hstack([values, np.ones((len(values), 1))])
        assert non_dominated(wide, directions + ["minimize"]).tolist() == brute_non_dominated(values, directions)
    one = np.array([[3.0], [1.0], [1.0], [np.nan], [2.0]])
    assert non_dominated(one, ["minimize"]).tolist() == [False, True, True, False, False]
    assert non_dominated_sort(one, ["maximize"]).tolist() == [0, 2, 2, 3, 1]


def test_duplicates_of_a_front_point_are_all_kept():
    values = np.array([[0.9, 10.0], [0.9, 10.0], [0.8, 5.0], [0.8, 5.0], [0.8, 10.0], [0.9, 12.0]])
    mask = non_dominated(values, ["maximize", "minimize"])
    assert mask.tolist() == [True, True, True, True, False, False]


def test_nan_rows_are_never_on_the_front_and_do_not_dominate():
    values = np.array([[np.nan, 1.0], [0.5, 5.0], [0.7, np.nan], [0.4, 6.0]])
    mask = non_dominated(values, ["maximize", "minimize"])
    assert mask.tolist() == [False, True, False, False]
    # a NaN row whose finite part would dominate everything changes nothing
    values = np.array([[1.0, np.nan], [0.5, 5.0]])
    assert non_dominated(values, ["maximize", "minimize"]).tolist() == [False, True]


def test_empty_and_single_inputs():
    assert non_dominated(np.zeros((0, 2)), ["minimize", "minimize"]).shape == (0,)
    assert non_dominated(np.array([[1.0, 2.0]]), ["maximize", "minimize"]).tolist() == [True]
    assert non_dominated_sort(np.zeros((0, 3)), ["minimize"] * 3).shape == (0,)


def test_directions_are_validated_and_accept_optuna_enums():
    optuna = pytest.importorskip("optuna")
    values = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0]])
    enum = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert non_dominated(values, enum).tolist() == non_dominated(values, ["maximize", "minimize"]).tolist()
    with pytest.raises(ValueError, match="'maximize' or 'minimize'"):
        non_dominated(values, ["max", "minimize"])
    with pytest.raises(ValueError, match="one direction per objective"):
        non_dominated(values, ["minimize"])
    with pytest.raises(ValueError, match="2-D"):
        non_dominated(np.zeros(3), ["minimize"])


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_non_dominated_sort_equals_brute_force_peeling(m, seed):
    rng = np.random.default_rng(100 + seed)
    values = rng.integers(0, 6, size=(50, m)).astype(float)
    values[rng.random(50) < 0.1, rng.integers(0, m)] = np.nan
    directions = MIXED[m]
    ranks = non_dominated_sort(values, directions)
    assert ranks.tolist() == brute_ranks(values, directions)
    assert (ranks == 0).tolist() == non_dominated(values, directions).tolist()


def test_large_input_stays_consistent():
    rng = np.random.default_rng(7)
    values = rng.random((10_000, 3))
    mask = non_dominated(values, ["maximize", "minimize", "minimize"])
    front = values[mask]
    # no front point dominates another, and every other point is dominated by some front point
    losses = front * np.array([-1.0, 1.0, 1.0])
    all_losses = values * np.array([-1.0, 1.0, 1.0])
    le = np.all(losses[:, None] <= losses[None], axis=2) & np.any(losses[:, None] < losses[None], axis=2)
    assert not le.any()
    rest = all_losses[~mask][:500]
    dominated = np.all(losses[:, None] <= rest[None], axis=2) & np.any(losses[:, None] < rest[None], axis=2)
    assert dominated.any(axis=0).all()


# ---------------------------------------------------------------- hypervolume


@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_2d_equals_a_grid_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 15))
    values = np.stack([rng.integers(0, 30, n), rng.integers(0, 40, n)], axis=1).astype(float)  # accuracy, gflops
    directions = ["maximize", "minimize"]
    reference = [5.0, 35.0]  # some points are below 5 or above 35: they contribute nothing
    assert hypervolume(values, directions, reference) == grid_hypervolume(values, directions, reference)


def test_hypervolume_2d_by_hand_and_invariant_to_dominated_points():
    # minimise both; reference (10, 10); points (2, 6) and (5, 3): 8*4 + 5*7 - 5*4 = 47
    front = np.array([[2.0, 6.0], [5.0, 3.0]])
    directions = ["minimize", "minimize"]
    assert hypervolume(front, directions, [10, 10]) == pytest.approx(47.0)
    more = np.vstack([front, [[3.0, 7.0], [5.0, 3.0], [9.0, 9.0], [np.nan, 1.0], [11.0, 0.0], [1.0, 10.0]]])
    assert hypervolume(more, directions, [10, 10]) == pytest.approx(47.0)


def test_points_not_strictly_dominating_the_reference_contribute_nothing():
    directions = ["maximize", "minimize"]
    assert hypervolume(np.array([[0.5, 20.0]]), directions, [0.5, 30.0]) == 0.0
    assert hypervolume(np.array([[0.9, 30.0]]), directions, [0.5, 30.0]) == 0.0
    assert hypervolume(np.zeros((0, 2)), directions, [0.5, 30.0]) == 0.0
    assert hypervolume(np.array([[0.9, 10.0]]), directions, [0.5, 30.0]) == pytest.approx(0.4 * 20.0)


def test_hypervolume_rejects_a_bad_reference():
    with pytest.raises(ValueError, match="one value per objective"):
        hypervolume(np.ones((2, 2)), ["minimize", "minimize"], [1.0])
    with pytest.raises(ValueError, match="finite"):
        hypervolume(np.ones((2, 2)), ["minimize", "minimize"], [np.inf, 1.0])


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("m", [3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_nd_equals_inclusion_exclusion(m, seed, fallback, monkeypatch):
    if fallback:  # Optuna's implementation is private: the exact fallback must agree on its own
        monkeypatch.setitem(sys.modules, "optuna._hypervolume", None)
    rng = np.random.default_rng(seed)
    values = rng.random((7, m)) * 10
    values[0] = values[1]  # a duplicate
    directions = MIXED[m]
    reference = [1.0 if d == "maximize" else 9.0 for d in directions]  # some points fall outside it
    expected = inclusion_exclusion_hypervolume(values, directions, reference)
    assert hypervolume(values, directions, reference) == pytest.approx(expected, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("fallback", [False, True])
def test_hypervolume_3d_equals_a_grid_count(fallback, monkeypatch):
    if fallback:
        monkeypatch.setitem(sys.modules, "optuna._hypervolume", None)
    rng = np.random.default_rng(3)
    values = rng.integers(0, 12, size=(20, 3)).astype(float)
    directions = ["maximize", "minimize", "minimize"]
    reference = [1.0, 11.0, 10.0]
    assert hypervolume(values, directions, reference) == pytest.approx(grid_hypervolume(values, directions, reference))


# ---------------------------------------------------------------- records, front, choice


def make_records(seed: int = 0, n: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        gflops = float(rng.integers(5, 25))
        records.append(
            {
                "number": i,
                "state": "COMPLETE",
                "spans": [[i % 5, i % 5 + 2, "linear"]],
                "plan": f"{i % 5}→{i % 5 + 2}:linear #{i}",
                "accuracy": float(np.round(0.5 + 0.02 * gflops + rng.normal(0, 0.05), 3)),
                "gflops": gflops,
                "params": float(rng.integers(10, 30)) * 1e6,
            }
        )
    records[3]["state"] = "FAIL"
    records[3]["accuracy"] = 1.0  # would dominate everything if failed trials counted
    records[3]["gflops"] = 0.0
    records[4]["accuracy"] = float("nan")
    del records[5]["gflops"]
    records[6]["accuracy"] = None
    return records


def test_front_from_records_matches_brute_force_and_drops_failed_trials():
    records = make_records()
    front = Front.from_records(records, ("accuracy", "gflops"), ("maximize", "minimize"))
    ok = [i for i, r in enumerate(records) if i not in (3, 4, 5, 6)]
    values = [[records[i]["accuracy"], records[i]["gflops"]] for i in ok]
    expected = {ok[j] for j, on in enumerate(brute_non_dominated(values, ["maximize", "minimize"])) if on}
    assert set(front.indices.tolist()) == expected
    assert not {3, 4, 5, 6} & set(front.indices.tolist())
    assert front.objectives == ("accuracy", "gflops") and front.directions == ("maximize", "minimize")
    assert np.all(np.diff(front.values[:, 1]) >= 0)  # cheapest first
    assert [r["number"] for r in front.records] == front.indices.tolist()
    assert front.values.tolist() == [[r["accuracy"], r["gflops"]] for r in front.records]
    assert len(front) == len(expected)


def test_front_order_uses_the_first_minimised_objective():
    records = [
        {"accuracy": 0.9, "gflops": 20.0, "params": 5.0},
        {"accuracy": 0.8, "gflops": 10.0, "params": 9.0},
        {"accuracy": 0.7, "gflops": 5.0, "params": 1.0},
    ]
    front = Front.from_records(records, ["accuracy", "params", "gflops"], ["maximize", "minimize", "minimize"])
    assert front.indices.tolist() == [2, 0, 1]  # by params ascending
    front = Front.from_records(records, ["accuracy", "gflops"], ["maximize", "minimize"])
    assert front.indices.tolist() == [2, 1, 0]


def test_feasible_only_front_and_hypervolume_method():
    records = [
        {"accuracy": 0.9, "gflops": 20.0, "feasible": False},
        {"accuracy": 0.8, "gflops": 10.0},
        {"accuracy": 0.7, "gflops": 5.0, "feasible": True},
    ]
    assert Front.from_records(records, ["accuracy", "gflops"], ["maximize", "minimize"]).indices.tolist() == [2, 1, 0]
    front = Front.from_records(records, ["accuracy", "gflops"], ["maximize", "minimize"], feasible_only=True)
    assert front.indices.tolist() == [2, 1]
    assert front.hypervolume([0.5, 30.0]) == pytest.approx(0.2 * 25 + 0.1 * 20)


def test_choose_picks_the_most_accurate_feasible_record():
    records = make_records(1, 60)
    budgets = {"gflops": 15.0, "params": 20e6}
    chosen = choose(records, budgets=budgets)
    feasible = [
        r
        for r in records
        if r.get("state") == "COMPLETE"
        and isinstance(r.get("accuracy"), float)
        and not math.isnan(r["accuracy"])
        and "gflops" in r
        and r["gflops"] <= 15.0
        and r["params"] <= 20e6
    ]
    assert feasible
    assert chosen is not None and chosen in feasible
    assert chosen["accuracy"] == max(r["accuracy"] for r in feasible)
    assert chosen["gflops"] <= 15.0 and chosen["params"] <= 20e6


def test_choose_respects_every_budget_and_breaks_ties():
    records = [
        {"plan": "a", "accuracy": 0.95, "gflops": 10.0, "params": 30e6},  # over the params budget
        {"plan": "b", "accuracy": 0.95, "gflops": 30.0, "params": 10e6},  # over the gflops budget
        {"plan": "c", "accuracy": 0.90, "gflops": 12.0, "params": 15e6},
        {"plan": "d", "accuracy": 0.90, "gflops": 11.0, "params": 19e6},  # tie: lower gflops wins
        {"plan": "e", "accuracy": 0.90, "gflops": 11.0, "params": 16e6},  # ... then fewer params
        {"plan": "f", "accuracy": 0.99, "gflops": 1.0, "params": 1e6, "state": "FAIL"},
        {"plan": "g", "accuracy": 0.99, "params": 1e6},  # no gflops: cannot be shown to fit
        {"plan": "h", "accuracy": 0.90, "gflops": 15.0, "params": 20e6},  # exactly at the budget
    ]
    assert choose(records, budgets={"gflops": 15.0, "params": 20e6})["plan"] == "e"
    assert choose(records, budgets={"gflops": 15.0})["plan"] == "a"
    assert choose(records, budgets={})["plan"] == "g"
    assert choose(records[7:], budgets={"gflops": 15.0, "params": 20e6})["plan"] == "h"
    assert choose(records, budgets={"gflops": 0.5}) is None
    assert choose([], budgets={"gflops": 15.0}) is None
    assert choose([{"acc": 0.5, "gflops": 1.0}], accuracy_key="acc", budgets={"gflops": 2.0}) is not None
    with pytest.raises(ValueError, match="budget must be a number"):
        choose(records, budgets={"gflops": "fifteen"})


PERPLEXITY_RECORDS = [
    {"spans": [[i, i + 1, "identity"]], **record}  # distinct plans
    for i, record in enumerate(
        [
            {"plan": "a", "perplexity": 12.0, "accuracy": 0.1, "gflops": 10.0, "params": 5.0},
            {"plan": "b", "perplexity": 9.0, "gflops": 20.0, "params": 5.0},  # the best, over the gflops budget
            {"plan": "c", "perplexity": 11.0, "gflops": 14.0, "params": 5.0},
            {"plan": "d", "perplexity": 11.0, "gflops": 13.0, "params": 6.0},  # tie with c: lower gflops wins
            {"plan": "e", "perplexity": float("nan"), "gflops": 1.0, "params": 1.0},  # undefined: never chosen
            {"plan": "f", "perplexity": 2.0, "gflops": 1.0, "params": 1.0, "state": "FAIL"},
        ]
    )
]


def test_choose_minimises_a_minimised_task_score():
    records = PERPLEXITY_RECORDS
    assert choose(records, accuracy_key="perplexity", budgets={"gflops": 15.0})["plan"] == "d"
    assert choose(records, accuracy_key="perplexity", budgets={})["plan"] == "b"
    assert choose(records, accuracy_key="perplexity", budgets={"gflops": 0.5}) is None
    assert choose(records, budgets={"gflops": 15.0})["plan"] == "a"  # by default the registry's first: accuracy
    assert EndToEnd.off().choose(records, {"gflops": 15.0}, accuracy_key="perplexity")["plan"] == "d"
    pool = [{**r, "latency": 1.0} for r in records[:4]]
    measured = {"a": 1.0, "b": 3.0, "c": 1.0, "d": 1.0}  # b is over the latency budget as measured
    with redirect_stdout(io.StringIO()) as said:
        chosen = meets_measured_latency(
            pool, {"latency": 2.0}, lambda r: measured[r["plan"]], accuracy_key="perplexity"
        )
    assert chosen["plan"] == "d" and "b is estimated" in said.getvalue()  # the next lowest perplexity


def test_the_choice_and_the_plot_follow_the_study_task_score():
    study = Front.from_values(np.zeros((0, 2)), ["perplexity", "gflops"], ["minimize", "minimize"])
    final = Final(study=study, context=None, baseline={}, front=list(PERPLEXITY_RECORDS[:2]))
    scored = PERPLEXITY_RECORDS[2:]
    lm = choose_plan(final, scored, {"gflops": 15.0}, list(get_objectives("perplexity,gflops")), EndToEnd.off())
    assert lm.record["plan"] == "d"
    vision = choose_plan(final, scored, {"gflops": 15.0}, list(get_objectives("accuracy,gflops")), EndToEnd.off())
    assert vision.record["plan"] == "a"
    assert (
        choose_plan(final, scored, {"gflops": 15.0}, list(get_objectives("kl,gflops")), EndToEnd.off()).record is None
    )
    assert pareto_axes() == ("gflops", "accuracy") == pareto_axes(["accuracy", "gflops", "latency"])
    assert (
        pareto_axes(["perplexity", "gflops"]) == ("gflops", "perplexity") == pareto_axes(["gflops", "kl", "perplexity"])
    )
    assert pareto_axes(["kl", "params"]) == ("params", "kl")
    assert on_task_plane(["perplexity", "gflops"]) and on_task_plane(["latency", "accuracy", "gflops"])
    assert not on_task_plane(["perplexity", "params"]) and not on_task_plane(["fidelity", "gflops"])
    settings = SearchSettings.from_flat  # a perplexity is the LM head's own: no classification head to export
    assert scored_head(settings(model="m", dataset="d", objectives=["perplexity", "gflops"])) is None
    assert scored_head(settings(model="m", dataset="d", head="original")) == "original"


def test_a_minimised_y_is_clipped_above():
    assert clipped_range([0.9, 0.88, 0.86, 0.85], [0.1]) == pytest.approx((0.7728, 0.9072))  # as before: below
    low, high = clipped_range([10.0, 11.0, 12.0, 13.0], [5000.0], maximize=False)
    assert low < 10.0 < 13.0 < high < 5000.0
    assert clipped_range([10.0, 11.0, 12.0], [11.5], maximize=False) is None
    records = [*PERPLEXITY_RECORDS[:4], {"plan": "g", "perplexity": 5000.0, "gflops": 2.0, "params": 1.0}]
    figure = pareto_figure(records, x="gflops", y="perplexity")
    texts = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert any(t.startswith("1 above the axis (highest 5000.000)") for t in texts)
    assert figure.axes[0].get_ylim()[1] < 5000.0


# ---------------------------------------------------------------- presenting


def test_plot_pareto_writes_a_png(tmp_path):
    records = make_records(2)
    for r in records[::4]:
        r["feasible"] = False
    baseline = {"accuracy": 0.97, "gflops": 22.0, "params": 86e6}
    path = plot_pareto(records, tmp_path / "pareto.png", baseline=baseline, budget=15.0, title="test")
    assert path == tmp_path / "pareto.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    front = Front.from_records(records, ["accuracy", "gflops", "params"], ["maximize", "minimize", "minimize"])
    assert plot_pareto(records, tmp_path / "p2.png", x="params", front=front).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="no default direction"):
        plot_pareto(records, tmp_path / "p3.png", x="number")


def test_missing_matplotlib_gives_an_install_hint(monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match="pip install matplotlib"):
        plot_pareto(make_records(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_importing_the_module_does_not_import_matplotlib():
    code = (
        "import sys, toast.search\n"
        "leaked = sorted(m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_front_table_lists_every_plan_with_its_delta():
    # records hold accuracy in % and params in millions (the objectives' units)
    baseline = {"accuracy": 90.00, "gflops": 22.5, "params": 86.6}
    front = [
        {"plan": "9→11:linear", "accuracy": 88.75, "gflops": 18.75, "params": 80.1, "fidelity": 0.98},
        {"plan": "3→4:identity, 9→11:linear", "accuracy": 85.12, "gflops": 15.0, "params": 73.0},
        {"spans": [[2, 5, "linear"]], "accuracy": 91.00, "gflops": 12.0, "params": 60},
    ]
    table = format_front_table(front, baseline, ["accuracy", "gflops", "params", "fidelity"])
    lines = table.splitlines()
    assert len(lines) == 2 + 1 + len(front)  # header, rule, original, one line per plan
    assert (
        lines[0].split()[:2] == ["plan", "accuracy"]
        and "Δ" in lines[0]
        and "GFLOPs" in lines[0]
        and "params (M)" in lines[0]
    )
    assert lines[2].startswith("original") and "+0.00" in lines[2]
    for plan, delta, line in zip(
        ["9→11:linear", "3→4:identity, 9→11:linear", "2→5:linear"], ["-1.25", "-4.88", "+1.00"], lines[3:]
    ):
        assert line.startswith(plan) and delta in line
    assert "88.75" in lines[3] and "18.75" in lines[3] and "80.10" in lines[3] and "0.9800" in lines[3]
    assert lines[4].rstrip().endswith("-")  # no fidelity for that plan
    assert len({len(line) for line in lines[:2]}) == 1  # the rule spans the header
    # numbers are right-aligned in columns: every row ends its GFLOPs cell at the same place
    ends = {line.index(cell) + len(cell) for line, cell in zip(lines[2:], ["22.5", "18.75", "15", "12"])}
    assert len(ends) == 1
    # a Front is accepted as well, and no baseline means no Δ column
    fr = Front.from_records(front, ["accuracy", "gflops"], ["maximize", "minimize"])
    plain = format_front_table(fr, None, ["accuracy", "gflops"])
    assert "Δ" not in plain and "2→5:linear" in plain and "original" not in plain
