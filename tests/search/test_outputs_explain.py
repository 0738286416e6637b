"""The run's outputs explain themselves (issue 19, item 8).

similarity.png's axes are in the plans' notation and its colour bar is labelled; trials.csv says which trials are
on the front, as front.json does; front.json says where chosen/ is, its format and what each field measures; the
Pareto plot's legend and the printed table count the same front; `--help` names both subcommands; the README's
tables have no blank line inside.
"""

from __future__ import annotations

import csv
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_RUN

from toast.models._plain import checkpoint_layout
from toast.objectives import OBJECTIVES, SimilarityReport
from toast.objectives._plots import CKA_LABEL, cka_figure, similarity_figure
from toast.search._pareto import Front
from toast.search._plot import pareto_figure
from toast.search._study import write_trials_csv
from toast.search._summary import field_glossary, format_front_table, front_caption
from toast.search.cli import main

REPO = Path(__file__).resolve().parents[2]
OBJECTIVES3 = ("accuracy", "fidelity", "gflops")
DIRECTIONS3 = ("maximize", "maximize", "minimize")


def _ticks(labels) -> list[str]:
    return [t.get_text() for t in labels]


# ---------------------------------------------------------------- similarity.png


def test_cka_axes_are_in_the_plans_notation_and_the_colour_bar_is_labelled():
    figure = cka_figure(np.eye(7))
    heatmap, colour_bar = figure.axes
    assert _ticks(heatmap.get_xticklabels()) == ["-1", "0", "1", "2", "3", "4", "5"]  # h_0 … h_6
    assert _ticks(heatmap.get_yticklabels()) == _ticks(heatmap.get_xticklabels())
    assert "-1: the embeddings" in heatmap.get_xlabel() and "-1: the embeddings" in heatmap.get_ylabel()
    assert colour_bar.get_ylabel() == CKA_LABEL and "CKA" in CKA_LABEL


def test_the_similarity_report_figure_labels_every_axis_and_colour_bar():
    S = 5
    report = SimilarityReport(cka=np.eye(S), cosine_cls=np.eye(S), block_redundancy=-np.arange(S, dtype=float))
    figure = similarity_figure(report)
    cka, cosine, bars, *colour_bars = figure.axes
    assert _ticks(cka.get_xticklabels())[0] == "-1" and _ticks(cosine.get_yticklabels())[-1] == str(S - 2)
    assert _ticks(bars.get_xticklabels()) == ["0", "1", "2", "3"]  # Block Redundancy of blocks 0 … L-1
    assert "block" in bars.get_xlabel()
    assert [c.get_ylabel() for c in colour_bars] == [CKA_LABEL, "[CLS] cosine similarity"]


# ---------------------------------------------------------------- the front: plot legend, table, trials.csv


def _records() -> list[dict]:
    """Four plans on three objectives: `b` beats `a` by fidelity alone (same accuracy and GFLOPs), `c` is dominated on
    the accuracy-GFLOPs plane but has the best fidelity: the front is b, c, d; on the plane only b and d."""
    rows = [("a", 90.0, 0.90, 10.0), ("b", 90.0, 0.95, 10.0), ("c", 85.0, 0.99, 12.0), ("d", 95.0, 0.80, 20.0)]
    return [
        {"number": i, "plan": p, "spans": [], "accuracy": acc, "fidelity": fid, "gflops": g, "state": "COMPLETE"}
        for i, (p, acc, fid, g) in enumerate(rows)
    ]


def test_legend_caption_and_table_count_the_same_front():
    records = _records()
    front = Front.from_records(records, OBJECTIVES3, DIRECTIONS3)
    assert [r["plan"] for r in front.records] == ["b", "c", "d"]
    figure = pareto_figure(records, x="gflops", y="accuracy", front=front)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "Pareto front (3 plans; 2 on this plane)" in legend
    assert "on the front by fidelity (1)" in legend
    caption = front_caption(front, "gflops", "accuracy")
    assert caption.startswith("Pareto front on accuracy, fidelity and GFLOPs: 3 plans, 2 of them best")
    table = format_front_table(front, None, OBJECTIVES3).splitlines()
    assert len(table) == 2 + len(front)  # header, rule, one row per front plan: the legend's 3


def test_a_front_on_the_plotted_objectives_alone_is_counted_once():
    records = _records()
    front = Front.from_records(records, ("accuracy", "gflops"), ("maximize", "minimize"))
    legend = [t.get_text() for t in pareto_figure(records, front=front).axes[0].get_legend().get_texts()]
    assert f"Pareto front ({len(front)} plans)" in legend  # a and b tie: both on it
    assert front_caption(front, "gflops", "accuracy") == f"Pareto front on accuracy and GFLOPs: {len(front)} plans"


def test_trials_csv_says_which_trials_are_on_the_front(tmp_path):
    records = _records()
    front = Front.from_records(records, OBJECTIVES3, DIRECTIONS3)
    write_trials_csv(records, tmp_path / "trials.csv", front={r["number"] for r in front.records})
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["on_front"] for r in rows] == ["False", "True", "True", "True"]


def test_the_glossary_takes_the_objectives_descriptions():
    glossary = field_glossary(["plan", "accuracy", "fidelity", "cosine", "gflops", "unknown_field"])
    assert glossary["fidelity"].startswith(OBJECTIVES["fidelity"].description)
    assert glossary["accuracy"].startswith(OBJECTIVES["accuracy"].description)
    assert "cosine" in glossary["cosine"] and "original" in glossary["cosine"]
    assert "s→e:kind" in glossary["plan"]
    assert "unknown_field" not in glossary
    for objective in OBJECTIVES.values():  # every field an objective reports is described
        for column in (*objective.columns, *((objective.search_field,) if objective.search_field else ())):
            assert objective.describe(column), (objective.name, column)


# ---------------------------------------------------------------- a run's front.json and trials.csv


@pytest.fixture(scope="module")
def run(tiny_dirs, image_dataset_dir, tmp_path_factory) -> tuple[Path, str]:
    """A tiny search on three objectives that exports chosen/; its directory and what it printed."""
    out = tmp_path_factory.mktemp("explain-run") / "run"
    argv = [
        "--model",
        str(tiny_dirs["vit-cls"]),
        "--dataset",
        str(image_dataset_dir),
        "--objectives",
        ",".join(OBJECTIVES3),
        *SMALL_RUN,
        "--trials",
        "6",
        "--budget-fraction",
        "0.9",
        "--cache-dir",
        str(out.parent / "cache"),
        "--out",
        str(out),
    ]
    printed = StringIO()
    with redirect_stdout(printed), redirect_stderr(StringIO()):
        assert main(argv) == 0
    return out, printed.getvalue()


def test_front_json_says_where_chosen_is_its_format_and_what_each_field_measures(run):
    out, _ = run
    doc = json.loads((out / "front.json").read_text())
    assert doc["chosen"] is not None and (out / doc["chosen_dir"]).is_dir()
    assert doc["chosen_format"] == checkpoint_layout(out / doc["chosen_dir"])
    reported = {k for r in (doc["baseline"], *doc["front"], doc["chosen"]) for k in r}
    assert {"fidelity", "cosine", "accuracy", "gflops"} <= reported
    assert reported - {"fidelity_undefined"} <= set(doc["glossary"]) | {"head"}
    assert doc["glossary"]["fidelity"].startswith(OBJECTIVES["fidelity"].description)


def test_trials_csv_on_front_is_front_json_s_front(run):
    out, printed = run
    doc = json.loads((out / "front.json").read_text())
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert {r["on_front"] for r in rows} <= {"True", "False"}
    assert {int(r["number"]) for r in rows if r["on_front"] == "True"} == {r["number"] for r in doc["front"]}
    n = len(doc["front"])
    assert f"Pareto front on accuracy, fidelity and GFLOPs: {n} plan" in printed  # the caption above the table


# ---------------------------------------------------------------- --help and the README


def test_help_names_both_subcommands(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
    assert "toast-search analyze --help" in text and "toast-search export --help" in text


def test_readme_tables_have_no_blank_line_inside():
    lines = (REPO / "README.md").read_text().splitlines()
    separator = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+\s*$")
    for i in range(1, len(lines) - 1):
        if lines[i].strip() == "" and lines[i - 1].startswith("|") and lines[i + 1].startswith("|"):
            # a row after a blank line must start a new table: a header followed by its separator
            assert i + 2 < len(lines) and separator.match(lines[i + 2]), f"README.md line {i + 2}: {lines[i + 1]}"
