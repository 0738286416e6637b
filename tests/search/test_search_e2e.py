"""`toast-search` end to end, offline, on tiny random models and a made-up dataset.

Each test runs the real command (in this process through `main(argv)`, or as a subprocess where the
exit status, stderr and a fresh process matter) and checks what it wrote against DESIGN.md's file
formats: a full search's outputs, NSGA-II against exhaustive enumeration by hypervolume, resuming
after Ctrl-C or a killed process, the budget pick, `--plan`, and bad input as one line and exit 2.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_main

from toast.search import hypervolume, load_run_study, non_dominated
from toast.search._context import SearchContext
from toast.search._export import build_export
from toast.search._study import STUDY_NAME, plan_key
from toast.search.cli import build_search_parser, main, settings_from
from toast.search.samplers import PROPOSED_BY
from toast.spaces import Plan, PlanSpace

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

L = 4  # blocks of the tiny models (conftest.SMALL)
SMALL_RUN = [
    "--calib-samples",
    "16",
    "--probe-samples",
    "60",
    "--eval-samples",
    "40",
    "--device",
    "cpu",
    "--no-progress",
]
NSGA2_TRIALS = 40
OFFLINE = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRIAL_CSV_COLUMNS = ["number", "state", "spans", "plan", "accuracy", "gflops", "params", "seconds", "failure"]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Where the run directories go: in memory when the machine has /dev/shm. The study database
    commits every trial attribute on its own, and on a busy shared disk each commit's fsync costs
    more than scoring a tiny model's plan, which would put this module far over its time."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="toast-e2e-") as d:
            yield Path(d)
    else:
        yield tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One activation and input cache for the whole module: later runs hit it."""
    return tmp_path_factory.mktemp("cache")


def argv(model: Path, dataset: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--cache-dir",
        str(cache),
        "--out",
        str(out),
        *SMALL_RUN,
        *extra,
    ]


def load_study(out: Path):
    """The run's study, from whichever study file it holds (`study.journal`, or an older run's `study.db`)."""
    return load_run_study(out)


def read_csv(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out / "trials.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def read_front(out: Path) -> dict:
    """front.json, parsed strictly: NaN or Infinity (not JSON) is an error."""

    def reject(name):
        raise ValueError(f"front.json holds {name}, which is not JSON")

    return json.loads((out / "front.json").read_text(), parse_constant=reject)


def scored(trials) -> list:
    """COMPLETE trials that were actually scored (not far over budget), duplicates included."""
    return [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("scored", True)]


def front_hypervolume(doc: dict) -> float:
    points = [[r["accuracy"], r["gflops"]] for r in doc["front"]]
    return hypervolume(points, ["maximize", "minimize"], [0.0, doc["baseline"]["gflops"]])


_EVALUATE = SearchContext.evaluate


def count_evaluations(monkeypatch, *, raise_on: int | None = None) -> collections.Counter:
    """Wrap `SearchContext.evaluate`: count finished evaluations per plan; raise Ctrl-C on call `raise_on`."""
    real = _EVALUATE  # not an earlier wrapper: each run counts only its own evaluations
    counts: collections.Counter = collections.Counter()
    calls = [0]

    def evaluate(self, plan, **kwargs):
        calls[0] += 1
        if calls[0] == raise_on:
            raise KeyboardInterrupt
        result = real(self, plan, **kwargs)
        counts[plan_key(plan)] += 1
        return result

    monkeypatch.setattr(SearchContext, "evaluate", evaluate)
    return counts


def trial_evaluations(counts: collections.Counter) -> collections.Counter:
    """The counts without the one baseline evaluation (the empty plan) every run makes."""
    out = collections.Counter(counts)
    assert out[plan_key(Plan((), L))] >= 1, "every run scores the original model once"
    out[plan_key(Plan((), L))] -= 1
    return +out


def assert_each_plan_scored_once(trials, evaluations: collections.Counter) -> None:
    """Every plan was evaluated at most once; a COMPLETE trial repeating an earlier plan reused its
    scores (`duplicate_of` names the first trial with that plan) instead of being scored again."""
    assert not evaluations or max(evaluations.values()) == 1, evaluations
    first_of: dict[str, int] = {}
    values = {t.number: t.values for t in trials}
    for t in sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.number):
        key = json.dumps(t.user_attrs["spans"])
        if key in first_of:
            assert t.user_attrs.get("duplicate_of") == first_of[key] and t.values == values[first_of[key]], t.number
        else:
            assert "duplicate_of" not in t.user_attrs, t.number
            first_of[key] = t.number
    assert set(evaluations) == set(first_of), "exactly the distinct plans were evaluated"


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def full_run(tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """One full search with a budget: 12 NSGA-II trials, 70 % of the original's GFLOPs."""
    out = runs / "full"
    args = argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--trials", "12", "--budget-fraction", "0.7")
    code, stdout, stderr = run_main(args)
    assert code == 0, stderr
    return {"out": out, "args": args, "stdout": stdout}


# ---------------------------------------------------------------- 1. a full search


def test_full_search_writes_every_output_with_its_schema(full_run):
    import optuna

    out = full_run["out"]
    assert {p.name for p in out.iterdir()} >= {
        "study.journal",
        "trials.csv",
        "front.json",
        "pareto.png",
        "similarity.png",
        "chosen",
        "settings.json",
    }

    # study.journal (new runs; not SQLite): the named study, accuracy maximised and GFLOPs minimised, 12 finished trials
    study = load_study(out)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 12
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)

    # trials.csv: the documented columns, one row per trial, spans as JSON matching the s→e plan text
    columns, rows = read_csv(out)
    assert columns[:4] == ["number", "state", "spans", "plan"]
    assert set(TRIAL_CSV_COLUMNS) <= set(columns)
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    for row, t in zip(rows, trials):
        assert row["state"] == t.state.name
        spans = json.loads(row["spans"])
        assert all(isinstance(s, int) and isinstance(e, int) and isinstance(k, str) for s, e, k in spans)
        plan = Plan.of(spans, L)
        assert row["plan"] == str(plan) and spans == t.user_attrs["spans"]
        assert float(row["gflops"]) > 0 and float(row["params"]) > 0 and float(row["seconds"]) >= 0
        if t.user_attrs.get("scored", True):
            assert 0 <= float(row["accuracy"]) <= 100
            assert float(row["accuracy"]) == pytest.approx(t.values[0], rel=1e-5)

    # front.json: baseline, the front as [[s, e, kind], ...] records, the chosen plan (a budget was given)
    doc = read_front(out)
    assert {"baseline", "front", "chosen"} <= set(doc)
    base = doc["baseline"]
    assert base["spans"] == [] and 0 <= base["accuracy"] <= 100 and base["gflops"] > 0 and base["params"] > 0
    assert doc["front"], "a search with scored trials has a non-empty front"
    for r in doc["front"]:
        assert {"spans", "accuracy", "gflops", "params"} <= set(r)
        assert all(
            len(s) == 3 and isinstance(s[0], int) and isinstance(s[1], int) and isinstance(s[2], str)
            for s in r["spans"]
        )
        assert r["gflops"] <= base["gflops"] and r["params"] <= base["params"]
    # the front is exactly the non-dominated set of the scored trials (by accuracy, GFLOPs)
    distinct = {json.dumps(t.user_attrs["spans"]): t for t in scored(trials) if "duplicate_of" not in t.user_attrs}
    values = np.array([[t.user_attrs["accuracy"], t.user_attrs["gflops"]] for t in distinct.values()])
    mask = non_dominated(values, ["maximize", "minimize"])
    expected = {key for key, keep in zip(distinct, mask) if keep}
    assert {json.dumps(r["spans"]) for r in doc["front"]} == expected
    assert isinstance(doc["chosen"], dict) and {"spans", "accuracy", "gflops", "params"} <= set(doc["chosen"])

    # the plots are real PNG images
    from PIL import Image

    for name in ("pareto.png", "similarity.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        with Image.open(out / name) as im:
            im.verify()
            assert im.size[0] > 100 and im.size[1] > 100

    # the summary table lists the original and every front plan in s→e notation
    stdout = full_run["stdout"]
    assert "original" in stdout
    for r in doc["front"]:
        assert str(Plan.of(r["spans"], L)) in stdout
    assert re.search(r"chosen within budget .*" + re.escape(str(Plan.of(doc["chosen"]["spans"], L))), stdout)


def test_chosen_model_loads_in_a_fresh_process_and_matches(full_run, tmp_path):
    out = full_run["out"]
    chosen = read_front(out)["chosen"]
    meta = json.loads((out / "chosen" / "toast.json").read_text())
    assert meta["plan"] == {"num_blocks": L, "spans": chosen["spans"]}

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch\n"
        "from toast.models import CompressedModel\n"
        "m = CompressedModel.from_pretrained(sys.argv[1])\n"
        "x = torch.load(sys.argv[2])\n"
        "with torch.inference_mode():\n"
        "    torch.save({'out': m(pixel_values=x), 'features': m.features({'pixel_values': x}), 'kept': sorted(map(int, m.blocks))}, sys.argv[3])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out / "chosen"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        env=OFFLINE,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = torch.load(tmp_path / "y.pt")

    # the same plan built in this process, from the same (cached) calibration statistics
    ctx = SearchContext.build(settings_from(build_search_parser().parse_args(full_run["args"])), progress=False)
    plan = Plan.of(chosen["spans"], L)
    model = build_export(ctx.full_evaluation(), plan).model  # with the probe the run scored, as its classifier
    with torch.inference_mode():
        expected_out, expected_features = model(pixel_values=x), model.features({"pixel_values": x})
    assert fresh["kept"] == list(plan.kept)
    torch.testing.assert_close(fresh["out"], expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fresh["features"], expected_features, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 4. the budget pick


def test_budget_pick_is_the_most_accurate_feasible_plan(full_run):
    out = full_run["out"]
    doc = read_front(out)
    budget = doc["budgets"]["gflops"]
    assert budget == pytest.approx(0.7 * doc["baseline"]["gflops"], rel=1e-9)
    trials = scored(load_study(out).get_trials(deepcopy=False))
    feasible = [t for t in trials if t.user_attrs["gflops"] <= budget]
    assert feasible and len(feasible) < len(trials), "the budget should rule some scored plans out"
    best = max(t.user_attrs["accuracy"] for t in feasible)
    chosen = doc["chosen"]
    assert chosen["gflops"] <= budget
    assert chosen["accuracy"] == pytest.approx(best, abs=1e-9)
    # and the same from trials.csv alone
    _, rows = read_csv(out)
    rows = [
        r
        for r in rows
        if r["state"] == "COMPLETE" and r["accuracy"] != "" and float(r["gflops"]) <= budget * (1 + 1e-6)
    ]
    assert float(max(rows, key=lambda r: float(r["accuracy"]))["accuracy"]) == pytest.approx(
        chosen["accuracy"], rel=1e-5
    )


# ---------------------------------------------------------------- 2. NSGA-II against exhaustive enumeration


def test_nsga2_finds_the_exhaustive_front_or_comes_close(tiny_dirs, graded_dataset_dir, cache_dir, runs, monkeypatch):
    tmp_path = runs / "hv"
    common = (tiny_dirs["vit"], graded_dataset_dir, cache_dir)
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"))
    assert space.size() == 81

    code, _, err = run_main(argv(*common, tmp_path / "exhaustive", "--sampler", "exhaustive", "--seed", "0"))
    assert code == 0, err
    trials = load_study(tmp_path / "exhaustive").get_trials(deepcopy=False)
    assert len(trials) == 81 and all(t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs for t in trials)
    assert {json.dumps(t.user_attrs["spans"]) for t in trials} == {plan_key(p) for p in space.enumerate()}
    exhaustive = {json.dumps(t.user_attrs["spans"]): (t.user_attrs["accuracy"], t.user_attrs["gflops"]) for t in trials}

    counts = count_evaluations(monkeypatch)
    hv_exhaustive = front_hypervolume(read_front(tmp_path / "exhaustive"))
    assert hv_exhaustive > 0
    for sampler in ("nsga2", "tpe-local"):
        counts.clear()
        out = tmp_path / sampler
        code, _, err = run_main(argv(*common, out, "--sampler", sampler, "--seed", "0", "--trials", str(NSGA2_TRIALS)))
        assert code == 0, err
        trials = load_study(out).get_trials(deepcopy=False)
        assert sum(t.state.name == "COMPLETE" for t in trials) == NSGA2_TRIALS
        assert_each_plan_scored_once(trials, trial_evaluations(counts))
        for t in scored(trials):  # the same plan scores the same in both runs
            assert (t.user_attrs["accuracy"], t.user_attrs["gflops"]) == pytest.approx(
                exhaustive[json.dumps(t.user_attrs["spans"])]
            )
        if sampler == "nsga2":  # NSGA-II repeats plans in a space this small: each repeat reuses the first one's scores
            assert any("duplicate_of" in t.user_attrs for t in trials)
        else:  # local steps from the front, and no repeats while an untried plan is near
            assert any(t.system_attrs.get(PROPOSED_BY) == "front-neighbour" for t in trials)
            assert sum("duplicate_of" in t.user_attrs for t in trials) <= 2
        hv = front_hypervolume(read_front(out))
        distinct = len({json.dumps(t.user_attrs["spans"]) for t in scored(trials)})
        print(
            f"\nhypervolume (accuracy % x GFLOPs, reference: 0 %, the original's GFLOPs): exhaustive (81 plans) "
            f"{hv_exhaustive:.6g}, {sampler} ({NSGA2_TRIALS} trials, {distinct} distinct plans) {hv:.6g} = "
            f"{hv / hv_exhaustive:.1%}"
        )
        assert hv <= hv_exhaustive * (1 + 1e-9), "no sampler can beat the exhaustive front"
        assert hv >= 0.9 * hv_exhaustive


# ---------------------------------------------------------------- 3. resume


def test_resume_after_an_interruption_neither_loses_nor_repeats_a_trial(
    tiny_dirs, graded_dataset_dir, cache_dir, runs, monkeypatch
):
    out = runs / "resume"
    base = argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--seed", "3")
    args = [*base, "--trials", "10"]

    # Ctrl-C during the 5th evaluation (the 1st is the original model's baseline)
    first = count_evaluations(monkeypatch, raise_on=5)
    code, _, err = run_main(args)
    assert code == 130
    assert "interrupted" in err and "re-run" in err
    before = load_study(out).get_trials(deepcopy=False)
    done = {t.number: t for t in before if t.state.name == "COMPLETE"}
    failed = [t for t in before if t.state.name == "FAIL"]
    assert len(done) == 3 and len(failed) == 1
    assert "interrupt" in failed[0].system_attrs["fail_reason"].lower()
    _, rows = read_csv(out)  # written even when interrupted
    assert [r["state"] for r in rows].count("COMPLETE") == 3
    assert "interrupt" in next(r for r in rows if r["state"] == "FAIL")["failure"].lower()

    # the same command again: resumes up to --trials COMPLETE
    second = count_evaluations(monkeypatch)
    code, _, err = run_main(args)
    assert code == 0, err
    after = load_study(out).get_trials(deepcopy=False)
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert len(complete) == 10
    by_number = {t.number: t for t in after}
    for number, t in done.items():  # nothing lost, nothing recomputed
        kept = by_number[number]
        assert kept.state.name == "COMPLETE" and kept.values == t.values and kept.params == t.params
        assert kept.user_attrs == t.user_attrs
    assert by_number[failed[0].number].state.name == "FAIL"

    # no plan was evaluated twice; a plan suggested again reused the first trial's scores
    assert_each_plan_scored_once(after, trial_evaluations(first) + trial_evaluations(second))

    # a killed process leaves a RUNNING trial behind; a plan already scored is suggested again
    study = load_study(out)
    orphan = study.ask()
    repeat = min(done)
    study.enqueue_trial(by_number[repeat].params)
    third = count_evaluations(monkeypatch)
    code, _, err = run_main([*base, "--trials", "11"])  # one more trial: the queued repeat
    assert code == 0, err
    final = {t.number: t for t in load_study(out).get_trials(deepcopy=False)}
    assert final[orphan.number].state.name == "FAIL"
    assert final[orphan.number].system_attrs["fail_reason"].startswith("interrupted")
    new = [t for n, t in final.items() if n not in by_number and n != orphan.number]
    assert len(new) == 1 and new[0].state.name == "COMPLETE"
    assert new[0].user_attrs["duplicate_of"] == repeat and new[0].values == by_number[repeat].values
    assert not trial_evaluations(third), "a repeated plan is reused, not scored again"
    _, rows = read_csv(out)
    assert next(r for r in rows if int(r["number"]) == orphan.number)["failure"].startswith("interrupted")


def test_a_run_made_with_sqlite_resumes_from_its_study_db(tiny_dirs, graded_dataset_dir, cache_dir, runs, monkeypatch):
    """A run directory from before the journal (`study.db`) resumes from its SQLite study: no journal is started
    beside it, nothing finished is lost or scored again."""
    from toast.search import _storage

    out = runs / "resume-sqlite"
    base = argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--seed", "5", "--sampler", "random")
    monkeypatch.setattr(_storage, "DEFAULT_KIND", "sqlite")  # the default before the journal
    first = count_evaluations(monkeypatch)
    code, _, err = run_main([*base, "--trials", "3"])
    assert code == 0, err
    assert (out / "study.db").is_file() and not (out / "study.journal").exists()
    before = {t.number: t for t in load_study(out).get_trials(deepcopy=False)}

    monkeypatch.setattr(_storage, "DEFAULT_KIND", "journal")  # today's default: an old run keeps its study.db
    second = count_evaluations(monkeypatch)
    code, _, err = run_main([*base, "--trials", "6"])
    assert code == 0, err
    assert not (out / "study.journal").exists()
    after = load_study(out).get_trials(deepcopy=False)
    assert sum(t.state.name == "COMPLETE" for t in after) == 6
    by_number = {t.number: t for t in after}
    for number, t in before.items():
        assert by_number[number].values == t.values and by_number[number].user_attrs == t.user_attrs
    assert_each_plan_scored_once(after, trial_evaluations(first) + trial_evaluations(second))


def test_the_journal_is_read_by_optuna_as_a_plain_journal_file(full_run):
    """`study.journal` is a plain Optuna journal: `optuna.load_study` on a `JournalFileBackend` of the path (what
    optuna-dashboard does with a file path) reads the same trials and objective names."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = str(full_run["out"] / "study.journal")
    study = optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(path)))
    ours = load_study(full_run["out"])
    assert [(t.number, t.state, t.values, t.user_attrs) for t in study.trials] == [
        (t.number, t.state, t.values, t.user_attrs) for t in ours.trials
    ]
    assert study.metric_names == ["accuracy", "gflops"]


# ---------------------------------------------------------------- 5. --plan


def test_given_plans_are_scored_without_searching(tiny_dirs, graded_dataset_dir, cache_dir, runs, monkeypatch):
    counts = count_evaluations(monkeypatch)
    out = runs / "manual"
    code, stdout, err = run_main(
        argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--plan", "0→2:linear", "--plan", "1->3:identity")
    )
    assert code == 0, err
    _, rows = read_csv(out)
    assert sorted((r["plan"], r["state"], r["spans"]) for r in rows) == [
        ("0→2:linear", "COMPLETE", json.dumps([[0, 2, "linear"]])),
        ("1→3:identity", "COMPLETE", json.dumps([[1, 3, "identity"]])),
    ]
    assert all(0 <= float(r["accuracy"]) <= 100 for r in rows)
    assert set(trial_evaluations(counts)) == {
        plan_key(Plan.parse("0→2:linear", L)),
        plan_key(Plan.parse("1→3:identity", L)),
    }
    assert len(load_study(out).get_trials(deepcopy=False)) == 2
    assert "0→2:linear" in stdout or "1→3:identity" in stdout  # the front of the two, in the summary


def test_a_plan_from_the_embeddings_is_typed_as_the_papers_write_it(tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """`--plan "-1->0:linear"` as a separate argument (argparse alone would read it as an option)."""
    out = runs / "from-embeddings"
    code, _, err = run_main(
        argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--plan", "-1->0:linear", "--plan", "-1→1:identity")
    )
    assert code == 0, err
    _, rows = read_csv(out)
    assert sorted(json.loads(r["spans"]) for r in rows) == [[[-1, 0, "linear"]], [[-1, 1, "identity"]]]


def test_a_resume_may_change_what_does_not_change_a_trial(tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """--trials, --timeout, --sampler, --no-progress and budgets may differ on a resume; settings.json then
    holds the new values, and the finished trials are kept."""
    out = runs / "resume-other-options"
    code, _, err = run_main(
        argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--trials", "2", "--sampler", "random")
    )
    assert code == 0, err
    code, _, err = run_main(
        argv(
            tiny_dirs["vit"],
            graded_dataset_dir,
            cache_dir,
            out,
            "--trials",
            "3",
            "--timeout",
            "600",
            "--budget-fraction",
            "0.9",
        )
    )
    assert code == 0, err
    assert len(load_study(out).get_trials(deepcopy=False)) == 3
    saved = json.loads((out / "settings.json").read_text())
    assert saved["trials"] == 3 and saved["timeout"] == 600 and saved["budget_fraction"] == 0.9


def test_sample_counts_beyond_the_split_are_said_and_recorded(tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """The graded dataset has 60 train and 40 test samples: asking for more uses them all, says so in one
    line each, and settings.json records what was used beside what was asked."""
    out = runs / "short-splits"
    args = argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--plan", "0→1:identity")
    args[args.index("--calib-samples") + 1] = "1000"
    args[args.index("--eval-samples") + 1] = "500"
    code, stdout, err = run_main(args)
    assert code == 0, err
    notes = [line for line in stdout.splitlines() if line.startswith("note: --")]
    assert notes == [
        f"note: --calib-samples 1000 but split 'train' of {str(graded_dataset_dir)!r} holds 60 samples: using 60",
        f"note: --eval-samples 500 but split 'test' of {str(graded_dataset_dir)!r} holds 40 samples: using 40",
    ]
    saved = json.loads((out / "settings.json").read_text())
    assert saved["calib_samples"] == 1000 and saved["used"] == {
        "calib_samples": 60,
        "probe_samples": 60,
        "eval_samples": 40,
    }


def test_undefined_fidelity_ranks_as_the_worst_agreement_and_says_why(tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """Removing every block leaves the [CLS] token of the embeddings: the same vector for every image, so
    CKA is 0/0. That plan stays in the study (value 0, the worst agreement) and on the front (it is the
    cheapest), with `fidelity: null` and the reason in front.json and trials.csv."""
    out = runs / "undefined-fidelity"
    code, _, err = run_main(
        argv(
            tiny_dirs["vit"],
            graded_dataset_dir,
            cache_dir,
            out,
            "--objectives",
            "accuracy,fidelity,gflops",
            "--plan",
            f"-1->{L - 1}:identity",
            "--plan",
            "0->1:linear",
        )
    )
    assert code == 0, err
    everything = [[-1, L - 1, "identity"]]
    trial = next(t for t in load_study(out).get_trials(deepcopy=False) if t.user_attrs["spans"] == everything)
    assert trial.state.name == "COMPLETE" and trial.values[1] == 0.0
    row = next(r for r in read_csv(out)[1] if json.loads(r["spans"]) == everything)
    assert row["fidelity"] == "" and "undefined" in row["fidelity_undefined"]
    entry = next(r for r in read_front(out)["front"] if r["spans"] == everything)
    assert entry["fidelity"] is None and "constant" in entry["fidelity_undefined"]
    other = next(r for r in read_front(out)["front"] if r["spans"] == [[0, 1, "linear"]])
    assert 0 < other["fidelity"] <= 1 and "fidelity_undefined" not in other


def test_original_head_without_accuracy_needs_no_labels(tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """With fidelity and costs only, nothing reads the labels: the head's label count does not matter
    (the tiny classifier has 5 labels, the dataset 3)."""
    out = runs / "head-no-accuracy"
    args = argv(tiny_dirs["vit-cls"], graded_dataset_dir, cache_dir, out, "--head", "original")
    code, _, err = run_main([*args, "--objectives", "fidelity,gflops", "--plan", "0->1:linear"])
    assert code == 0, err
    assert 0 < read_front(out)["baseline"]["fidelity"] <= 1


def test_budget_above_the_original_is_not_an_error(tiny_dirs, graded_dataset_dir, cache_dir, runs):
    out = runs / "generous"
    code, stdout, err = run_main(
        argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, "--plan", "0→1:linear", "--budget-gflops", "1000")
    )
    assert code == 0, err
    assert "every plan fits" in stdout
    assert read_front(out)["chosen"]["spans"] == [[0, 1, "linear"]]


# ---------------------------------------------------------------- 6. bad input: tests/search/test_bad_inputs.py


# ---------------------------------------------------------------- 7. --help


def test_help_mentions_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse re-wraps lines (and breaks words at hyphens)
    for action in build_search_parser()._actions:
        if "-h" in action.option_strings:
            continue
        assert all(o in text for o in action.option_strings), action.option_strings
        if action.nargs == 0:  # on/off flags: off unless given
            continue
        help_text = " ".join(action.help.split())
        assert "".join(help_text.split()) in text, action.option_strings
        assert "(default:" in help_text, f"{action.option_strings[0]} does not say its default"
        default = action.default
        if isinstance(default, tuple):
            default = ",".join(default)
        if isinstance(default, (str, int, float)) and not isinstance(default, bool):
            assert f"{default}" in help_text.split("(default:")[-1], (
                f"{action.option_strings[0]}: default {default!r} not stated"
            )


@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_a_search_with_folded_spans_runs_end_to_end(family, tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """`--translators identity,linear,folded`: folded spans are proposed, fitted from the capture's MLP branch
    statistics, scored as free spans, and may sit on the front."""
    out = runs / f"folded-{family}"
    args = argv(tiny_dirs[family], graded_dataset_dir, cache_dir, out, "--translators", "identity,linear,folded")
    code, _, err = run_main([*args, "--trials", "12", "--plan", "1->2:folded", "--plan", "0->2:folded"])
    assert code == 0, err
    _, rows = read_csv(out)
    done = {r["plan"]: r for r in rows if r["state"] == "COMPLETE"}
    assert "1→2:folded" in done and "0→2:folded" in done
    assert 0 <= float(done["1→2:folded"]["accuracy"]) <= 100
    # a folded span costs nothing beyond its kept block: cheaper than the original by the blocks it removes
    front = read_front(out)
    assert float(done["1→2:folded"]["gflops"]) < front["baseline"]["gflops"]
    assert all(s[2] != "folded" or s[0] >= 0 for r in front["front"] for s in r["spans"])
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear", "folded"))
    for row in done.values():  # every scored plan: no folded span from the embeddings or after its source's removal
        if row["accuracy"]:
            assert not space.refusals(Plan.of(json.loads(row["spans"]), L)), row


@pytest.mark.parametrize("limit", [("--max-removed", "1"), ("--min-kept", "3")], ids=["max-removed", "min-kept"])
def test_the_space_limits_hold_on_the_front_and_the_chosen_plan(limit, tiny_dirs, graded_dataset_dir, cache_dir, runs):
    """A plan outside `--max-removed` / `--min-kept` is never scored (the sampler may still propose one: Optuna's
    constraints steer it away), so it is neither on the front nor chosen, nor among the seeds."""
    out = runs / f"limits-{limit[0].strip('-')}"
    code, _, err = run_main(
        argv(tiny_dirs["vit"], graded_dataset_dir, cache_dir, out, *limit, "--trials", "12", "--sampler", "random")
        + ["--budget-fraction", "1.0"]
    )
    assert code == 0, err
    doc = read_front(out)
    removed = [len(Plan.of(r["spans"], L).removed) for r in doc["front"]]
    assert removed and max(removed) <= 1
    assert doc["chosen"] is not None and len(Plan.of(doc["chosen"]["spans"], L).removed) <= 1
    _, rows = read_csv(out)
    for row in rows:
        if len(Plan.of(json.loads(row["spans"]), L).removed) > 1:
            assert row["feasible"] == "False" and row["accuracy"] == ""
