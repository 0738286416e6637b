"""The `downstream` objective: a causal LM's accuracy on lm-eval-harness tasks, through the optional extra `[llm]`.

lm-eval does everything but the model: it finds the tasks (its own, or YAML files in a local folder), reads their
documents, builds the requests and computes the metrics; `toast.objectives._lm_eval.ToastLM` scores the requests'
token sequences with the plan's compressed model. Only log-likelihood tasks are in scope (multiple choice,
loglikelihood, loglikelihood_rolling): generation tasks are refused.

A task's score is its `acc_norm` where the task reports it, else its `acc`, in percent: `acc_norm` (lm-eval's
length-normalised accuracy: each choice's log-likelihood divided by its length in characters) is what results are usually
quoted in for tasks whose choices differ in length (HellaSwag, ARC), and tasks that report only `acc` are quoted in
it; a task that reports neither is refused. The objective is the mean over the tasks (each task weighs the same), the
per-task scores beside it as JSON text (`downstream_tasks`). The value does not depend on the run's evaluation
samples (lm-eval reads its own, the first `lm_eval_limit` documents of each task), so it has no standard error and a
multi-fidelity search never stops a plan early on it.

Nothing here imports lm-eval until it is used: without the extra, choosing the objective fails in one line
(`require_lm_eval`), before any model is loaded.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toast.errors import MissingDependencyError

from ._objectives import Display, Objective, ObjectiveError, Role
from ._registry import register_objective

if TYPE_CHECKING:
    import torch

    from ._trial import TrialOutputs

__all__ = [
    "DOWNSTREAM",
    "DOWNSTREAM_TASKS_FIELD",
    "LM_EVAL_HINT",
    "Downstream",
    "check_downstream",
    "downstream_scores",
    "require_lm_eval",
    "task_accuracy",
]

LM_EVAL_HINT = "objective downstream needs lm-eval: pip install 'toast-search[llm]'"
DOWNSTREAM_TASKS_FIELD = "downstream_tasks"
#: the metrics a task's score is read from, the first the task reports (see the module's docstring)
SCORE_METRICS = ("acc_norm", "acc")


def require_lm_eval() -> None:
    """Raise `MissingDependencyError` (`LM_EVAL_HINT`, one line) when lm-eval cannot be imported."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise MissingDependencyError(LM_EVAL_HINT) from None


def check_downstream(tasks: Sequence[str], include_path: str | Path | None) -> None:
    """Everything that can be checked before a model is loaded: lm-eval installed, the local task folder, each task
    known (to the folder or to lm-eval) and loadable (its documents read), none a generation task, each leaf task
    reporting `acc_norm` or `acc`. `MissingDependencyError` or `ObjectiveError` in one line listing every problem."""
    require_lm_eval()
    if not tasks:
        raise ObjectiveError("objective downstream needs `lm_eval_tasks`: the lm-eval tasks to score, comma-separated")
    if include_path is not None and not Path(include_path).is_dir():
        raise ObjectiveError(f"`lm_eval_include` {str(include_path)!r} is not a folder of lm-eval task YAML files")
    from . import _lm_eval

    unknown, known = _lm_eval.unknown_tasks(tasks, include_path)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        where = f"in {str(include_path)!r} nor " if include_path is not None else ""
        raise ObjectiveError(f"`lm_eval_tasks`: no task {', '.join(hints)} {where}among lm-eval's own tasks")
    loaded = _lm_eval.load_tasks(tasks, include_path)
    problems = []
    generating = _lm_eval.generation_tasks(loaded)
    if generating:
        problems.append(f"{', '.join(generating)}: {_lm_eval.GENERATION_OUT_OF_SCOPE}")
    for name in tasks:
        task = loaded["tasks"].get(name)
        if task is not None and name not in generating and not set(SCORE_METRICS) & set(task.aggregation()):
            problems.append(
                f"task {name!r} reports neither acc_norm nor acc (it reports {', '.join(task.aggregation())})"
            )
    if problems:
        raise ObjectiveError("`lm_eval_tasks`: " + "; ".join(problems))


def task_accuracy(name: str, metrics: Mapping[str, Any]) -> float:
    """The score (%) of task `name` in lm-eval's results (`{"acc,none": 0.5, …}`): its `acc_norm`, else its `acc`
    (under the filter `none` where there are several)."""
    for metric in SCORE_METRICS:
        keys = sorted((k for k in metrics if k.partition(",")[0] == metric), key=lambda k: k != f"{metric},none")
        if keys and isinstance(metrics[keys[0]], (int, float)):
            return 100.0 * float(metrics[keys[0]])
    shown = ", ".join(k for k in metrics if "," in k) or "none"
    raise ObjectiveError(f"lm-eval task {name!r} reported neither acc_norm nor acc (it reported: {shown})")


def downstream_scores(
    model_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    config: Any = None,
    device: Any = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Each task's score (%, `task_accuracy`) of the causal LM whose next-token logits `model_logits(input_ids,
    attention_mask)` gives `(B, T, V)`, by lm-eval's evaluator on `tasks` (names lm-eval or the local folder
    `include_path` knows), the first `limit` documents of each, `batch_size` sequences per call. `max_length`: the
    longest input (default: the model's from `config`, else the tokenizer's, else lm-eval's 2048). `progress`: lm-eval's
    progress bars on stderr."""
    require_lm_eval()
    from ._lm_eval import ToastLM, evaluate_tasks

    lm = ToastLM(model_logits, tokenizer, max_length=max_length, config=config, batch_size=batch_size, device=device)
    results = evaluate_tasks(lm, tasks, include_path=include_path, limit=limit, progress=progress)
    missing = [t for t in tasks if t not in results]
    if missing:
        raise ObjectiveError(
            f"lm-eval gave no result for {', '.join(map(repr, missing))} (a tag, not a task or group?); it gave "
            f"{', '.join(results)}"
        )
    return {t: task_accuracy(t, results[t]) for t in tasks}


class Downstream(Objective):
    """The mean score (%) over the lm-eval tasks (`TrialOutputs.downstream`), the per-task scores as JSON text."""

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"downstream": mean %, "downstream_tasks": '{"task": %, …}'}`."""
        scores = {str(k): float(v) for k, v in dict(trial.downstream).items()}
        if not scores:
            raise ObjectiveError("objective downstream: no task was scored (`lm_eval_tasks` is empty)")
        bad = {k: v for k, v in scores.items() if not (math.isfinite(v) and 0.0 <= v <= 100.0)}
        if bad:
            raise ObjectiveError(f"objective downstream: task scores must be percentages in [0, 100], got {bad}")
        return {
            self.name: sum(scores.values()) / len(scores),
            DOWNSTREAM_TASKS_FIELD: json.dumps({k: round(v, 4) for k, v in scores.items()}),
        }


DOWNSTREAM = register_objective(
    Downstream(
        name="downstream",
        direction="maximize",
        unit="%",
        description="mean accuracy over the lm-eval-harness tasks of `lm_eval_tasks` (each task's acc_norm where it "
        "reports one, else its acc)",
        display=Display(
            title="downstream %",
            axis="downstream tasks accuracy (%)",
            name="downstream accuracy",
            unit="%",
            fmt="{:.2f}",
        ),
        fields=(DOWNSTREAM_TASKS_FIELD,),
        field_descriptions={
            DOWNSTREAM_TASKS_FIELD: "each lm-eval task's score (%), as JSON text: {task: acc_norm, else acc}",
        },
        role=Role.MEASURE,
        worst=0.0,  # no question answered right
        needs=frozenset({"downstream"}),
    )
)
