"""A causal LM's search with the `downstream` objective (issue 23, part 3): lm-eval-harness tasks from a local folder.

The real command on a tiny random-weight llama and the offline corpus, with a small multiple-choice task written
here (`test_downstream.write_tasks`): trials.csv and front.json carry each plan's downstream score and its per-task
scores, the original model's equal to what lm-eval gives its Hugging Face model directly. The refusals are one line
and exit status 2, before any model is loaded: no tasks, tasks without the objective, a bad limit, an unknown or a
generation task, the objective on a vision model, and lm-eval not installed.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest
from conftest import save_tiny

pytest.importorskip("lm_eval")

from test_downstream import write_tasks  # noqa: E402

from toast.objectives import LM_EVAL_HINT, downstream_scores  # noqa: E402
from toast.search.cli import main  # noqa: E402

pytestmark = pytest.mark.slow

SMALL = ["--seq-len", "32", "--calib-samples", "16", "--eval-samples", "20", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-downstream")
    return {
        "model": save_tiny("llama", root / "llama"),
        "tasks": write_tasks(root / "tasks"),
        "cache": root / "cache",
        "root": root,
    }


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def _args(setup, name: str, *extra: str, model=None) -> list[str]:
    return [
        "--model",
        str(model or setup["model"]),
        "--cache-dir",
        str(setup["cache"]),
        "--out",
        str(setup["root"] / name),
        *SMALL,
        *extra,
    ]


def test_a_search_reports_each_plans_downstream_scores(setup):
    import transformers

    flags = ["--objectives", "perplexity,gflops,downstream", "--trials", "3"]
    flags += ["--lm-eval-tasks", "mytask,mytask_acc", "--lm-eval-include", str(setup["tasks"]), "--lm-eval-limit", "8"]
    code, stdout, stderr = _run(_args(setup, "run", *flags))
    assert code == 0, stderr
    assert "downstream %" in stdout  # the front table's column
    out = setup["root"] / "run"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and {"downstream", "downstream_tasks"} <= set(rows[0])
    for row in rows:
        tasks = json.loads(row["downstream_tasks"])
        assert list(tasks) == ["mytask", "mytask_acc"]
        assert float(row["downstream"]) == pytest.approx(sum(tasks.values()) / 2, abs=1e-3)
        assert all(v * 8 / 100 == pytest.approx(round(v * 8 / 100), abs=1e-3) for v in tasks.values())  # of 8
    front = json.loads((out / "front.json").read_text())
    assert "downstream" in [o["name"] for o in front["objectives"]]
    assert all(json.loads(r["downstream_tasks"]).keys() == {"mytask", "mytask_acc"} for r in front["front"])
    # the original model's scores are lm-eval's on the Hugging Face model itself
    model = transformers.AutoModelForCausalLM.from_pretrained(setup["model"]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(setup["model"])
    direct = downstream_scores(
        lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits,
        tokenizer,
        ["mytask", "mytask_acc"],
        include_path=setup["tasks"],
        limit=8,
    )
    assert json.loads(front["baseline"]["downstream_tasks"]) == pytest.approx(direct, abs=1e-3)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["lm_eval_tasks"] == ["mytask", "mytask_acc"] and settings["lm_eval_limit"] == 8


def _refused(setup, name: str, *flags: str, model=None) -> str:
    code, _, stderr = _run(_args(setup, name, *flags, model=model))
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert not (setup["root"] / name / "trials.csv").exists()
    return lines[0]


DOWNSTREAM = ["--objectives", "perplexity,downstream"]


def test_settings_refusals(setup):
    line = _refused(setup, "no-tasks", *DOWNSTREAM)
    assert "objective downstream needs --lm-eval-tasks" in line
    line = _refused(setup, "no-objective", "--objectives", "perplexity,gflops", "--lm-eval-tasks", "mytask")
    assert "--lm-eval-tasks needs objective downstream" in line
    line = _refused(setup, "bad-limit", *DOWNSTREAM, "--lm-eval-tasks", "mytask", "--lm-eval-limit", "0")
    assert "--lm-eval-limit must be at least 1" in line
    from toast.errors import SettingsError
    from toast.search import SearchSettings

    flat = {
        "model": str(setup["model"]),
        "dataset": "python-docs",
        "objectives": ("perplexity", "downstream"),
        "lm_eval_tasks": ("mytask",),
    }
    for bad in (float("nan"), 2.5, True):
        with pytest.raises(SettingsError, match="`lm_eval_limit` must be a whole number"):
            SearchSettings.from_flat(**flat, lm_eval_limit=bad)
    keyed = SearchSettings.from_flat(**flat)  # the lm_eval_* keys bind the run (set away from their defaults)
    assert keyed.identity()["lm_eval_tasks"] == ["mytask"] and "lm_eval_include" not in keyed.identity()
    assert keyed.run_key() != SearchSettings.from_flat(**{**flat, "lm_eval_limit": 50}).run_key()


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: what is refused is refused before."""
    from toast.search import _prepare

    def load_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(_prepare, "load_model", load_model)


def test_task_refusals_before_the_model(setup, monkeypatch, no_model):
    # an unknown name is looked for among lm-eval's own ~15,000 tasks too (seconds to index): the folder stands for them
    from lm_eval.tasks import TaskManager

    from toast.objectives import _lm_eval

    monkeypatch.setattr(
        _lm_eval, "task_manager", lambda path, defaults: TaskManager(include_path=path, include_defaults=False)
    )
    include = ["--lm-eval-include", str(setup["tasks"])]
    line = _refused(setup, "unknown", *DOWNSTREAM, "--lm-eval-tasks", "mytsk", *include)
    assert "no task 'mytsk' (did you mean 'mytask'?)" in line
    line = _refused(setup, "generating", *DOWNSTREAM, "--lm-eval-tasks", "mytask,mytask_gen", *include)
    assert "mytask_gen: generation tasks" in line


def test_downstream_is_a_causal_lms_objective(setup, tmp_path, no_model):
    vit = save_tiny("vit", tmp_path / "vit")
    flags = [
        "--objectives",
        "accuracy,downstream",
        "--lm-eval-tasks",
        "mytask",
        "--lm-eval-include",
        str(setup["tasks"]),
    ]
    line = _refused(setup, "vision", *flags, "--dataset", "digits", model=vit)
    assert "'downstream'" in line and "causal language model" in line


def test_without_lm_eval_one_line_says_what_to_install(setup, monkeypatch, no_model):
    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    line = _refused(setup, "no-extra", *DOWNSTREAM, "--lm-eval-tasks", "mytask")
    assert line.endswith(LM_EVAL_HINT)
