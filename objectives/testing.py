"""The checks every objective passes, importable for plug-ins: `check_objective(name)`.

Like scikit-learn's `check_estimator` and Optuna's shared sampler tests, `check_objective` runs one suite on
any registered objective (or an `Objective` instance): a valid declaration, a display that formats its
values, a worst value no real value ranks below, and `compute` on a small real `TrialOutputs`
(`random_trial`: random features that carry their labels, a causal LM's token scores and lm-eval task scores, a plan,
its cost) returning
finite values of the declared fields only, from the declared inputs only, the same values twice. The tests run it over
`list_objectives()`, so a new objective is checked on arrival.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from toast.spaces import Plan

from ._accuracy import HEADS  # every head the suite scores an objective under
from ._cost import Cost, CostTable
from ._language import reference_rows, token_scores
from ._latency_table import LatencyTable
from ._objectives import DIRECTIONS, CostObjective, Display, Objective, ObjectiveError, undefined_field
from ._registry import OBJECTIVES, get_objective
from ._timing import LatencyResult, measure_latency
from ._trial import TrialOutputs

__all__ = ["HEADS", "ArrayTrial", "check_objective", "random_trial"]

_LABELS = {"eval_labels": "labels", "probe_labels": "labels"}


class ArrayTrial(TrialOutputs):
    """A `TrialOutputs` over given arrays, for testing objectives without a model.

    Records which members were read (`read`, the head aside) and how many passes computed each lazy member (`passes`);
    the evaluation features and logits come from one pass when the logits are expected, as in a search.
    `token_scores` (a causal LM's, `(n_eval, 4)`) and `downstream` (its lm-eval task scores, `{task: %}`) are
    optional: reading one not given raises `ObjectiveError`.
    """

    def __init__(
        self,
        *,
        plan: Plan,
        cost: Cost,
        eval_features: np.ndarray,
        probe_features: np.ndarray,
        eval_logits: np.ndarray,
        eval_labels: np.ndarray,
        probe_labels: np.ndarray,
        original_features: np.ndarray,
        token_scores: np.ndarray | None = None,
        downstream: Mapping[str, float] | None = None,
        head: str = "probe",
        probe: str = "ridge",
    ) -> None:
        super().__init__(plan=plan, cost=cost, head=head, probe=probe)
        self._arrays: dict[str, Any] = {
            "eval_features": eval_features,
            "probe_features": probe_features,
            "eval_logits": eval_logits,
        }
        if token_scores is not None:
            self._arrays["token_scores"] = token_scores
        if downstream is not None:
            self._arrays["downstream"] = dict(downstream)
        self._labels = {"eval_labels": eval_labels, "probe_labels": probe_labels}
        self._original = original_features
        self.read: set[str] = set()
        self.passes: Counter[str] = Counter()

    def __getattribute__(self, name: str) -> Any:
        if (
            name in TrialOutputs.MEMBERS and name != "head"
        ) or name in _LABELS:  # `inputs(head=...)` accounts for the head
            object.__getattribute__(self, "read").add(_LABELS.get(name, name))
        return object.__getattribute__(self, name)

    @property
    def eval_labels(self) -> np.ndarray:
        return self._labels["eval_labels"]

    @property
    def probe_labels(self) -> np.ndarray:
        return self._labels["probe_labels"]

    @property
    def original_features(self) -> np.ndarray:
        return self._original

    def _compute(self, name: str) -> Mapping[str, Any]:
        names = [name]
        if name in ("eval_features", "eval_logits") and "eval_logits" in self.expected:
            names = ["eval_features", "eval_logits"]
        missing = [n for n in names if n not in self._arrays]
        if missing:
            raise ObjectiveError(
                f"this trial has no {', '.join(missing)} (token_scores, downstream: a causal LM's only)"
            )
        self.passes.update(names)
        return {n: self._arrays[n] for n in names}

    def time_batch(self, *, warmup: int, repeats: int) -> LatencyResult:
        x = self._arrays["eval_features"]
        return measure_latency(lambda: x @ x.T, warmup=warmup, repeats=repeats)


def random_trial(
    *,
    seed: int = 0,
    head: str = "probe",
    probe: str = "ridge",
    n_eval: int = 48,
    n_probe: int = 96,
    width: int = 16,
    classes: int = 3,
    num_blocks: int = 4,
    tokens: int = 8,
    vocabulary: int = 11,
) -> ArrayTrial:
    """A small `ArrayTrial`: features that carry their labels (a probe scores above chance), logits of a
    head that mostly agrees with them, original features close to the compressed ones, the `token_scores` of
    `n_eval` sequences of `tokens` tokens (random next-token logits over `vocabulary` tokens, close to an original's
    whose top 4 are the reference and which drew each next token), scores (%) on two made-up lm-eval tasks
    (`downstream`), and the plan `0→2:linear` of a
    `num_blocks`-block model with its cost from a made-up cost and latency table."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, width)) * 3.0
    probe_labels = np.arange(n_probe) % classes
    eval_labels = rng.integers(0, classes, n_eval)
    probe_features = centers[probe_labels] + rng.normal(size=(n_probe, width))
    eval_features = centers[eval_labels] + rng.normal(size=(n_eval, width))
    logits = eval_features @ centers.T
    original = eval_features + 0.1 * rng.normal(size=eval_features.shape)
    original_logits = torch.from_numpy(3.0 * rng.normal(size=(n_eval, tokens, vocabulary)))
    compressed_logits = original_logits + torch.from_numpy(rng.normal(size=original_logits.shape))
    # each next token drawn from the original's distribution
    cumulative = torch.softmax(original_logits, dim=-1).cumsum(dim=-1).numpy()
    drawn = (cumulative[:, :-1] < rng.random((n_eval, tokens - 1, 1))).sum(axis=-1).clip(max=vocabulary - 1)
    input_ids = torch.from_numpy(np.concatenate([rng.integers(0, vocabulary, (n_eval, 1)), drawn], axis=1))
    scores = token_scores(compressed_logits, input_ids, reference_rows(original_logits, 4), chunk=3)
    table = CostTable(
        embed=Cost(1_000_000, 10_000),
        blocks=tuple(Cost(5_000_000, 50_000) for _ in range(num_blocks)),
        tail=Cost(200_000, 2_000),
        translators={"identity": Cost(0, 0), "linear": Cost(300_000, 272)},
        latency=LatencyTable(
            embed_ms=0.2,
            blocks_ms=(1.0,) * num_blocks,
            tail_ms=0.05,
            translators_ms={"identity": 0.0, "linear": 0.1},
            device="cpu: made up",
        ),
    )
    downstream = {"task_a": float(rng.integers(0, 101)), "task_b": 100.0 * float(rng.random())}
    plan = Plan.parse("0→2:linear", num_blocks)
    return ArrayTrial(
        plan=plan,
        cost=table.cost(plan),
        eval_features=eval_features,
        probe_features=probe_features,
        eval_logits=logits,
        eval_labels=eval_labels,
        probe_labels=probe_labels,
        original_features=original,
        token_scores=scores,
        downstream=downstream,
        head=head,
        probe=probe,
    )


def _fail(objective: Objective, rule: str) -> AssertionError:
    return AssertionError(f"objective {objective.name!r}: {rule}")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    return a == b or (_is_real(a) and _is_real(b) and math.isnan(a) and math.isnan(b))


def _check_declaration(objective: Objective) -> None:
    if objective.direction not in DIRECTIONS:
        raise _fail(objective, f"direction must be one of {DIRECTIONS}, got {objective.direction!r}")
    for name in ("unit", "description"):
        if not isinstance(getattr(objective, name), str) or not getattr(objective, name).strip():
            raise _fail(objective, f"declares no {name}")
    display = objective.display
    if not isinstance(display, Display):
        raise _fail(objective, f"display must be a Display, got {display!r}")
    for name in ("title", "axis", "name"):
        if not getattr(display, name).strip():
            raise _fail(objective, f"its display has no {name}")
    columns = objective.columns
    if len(set(columns)) != len(columns):
        raise _fail(objective, f"its columns repeat: {columns}")
    if objective.search_field is not None and objective.search_field in columns:
        raise _fail(objective, f"search_field {objective.search_field!r} is one of its columns")
    for head in HEADS:
        unknown = objective.inputs(head=head) - set(TrialOutputs.MEMBERS)
        if unknown:
            raise _fail(
                objective,
                f"inputs(head={head!r}) names {sorted(unknown)}, which a TrialOutputs does not provide ({TrialOutputs.MEMBERS})",
            )
    worst = objective.worst_value
    if not _is_real(worst) or math.isnan(worst):
        raise _fail(objective, f"worst value must be a number, got {worst!r}")
    if OBJECTIVES.get(objective.name) not in (None, objective):
        raise _fail(objective, "another objective is registered under its name")


def _check_values(objective: Objective, values: dict[str, Any], head: str) -> float | None:
    """The objective's value in `values`, after checking every field; None when undefined (with its reason)."""
    where = f"compute() with head={head!r}"
    if not isinstance(values, dict):
        raise _fail(objective, f"{where} must return a dict, got {type(values).__name__}")
    extra = sorted(set(values) - set(objective.columns))
    if extra:
        raise _fail(objective, f"{where} returned fields {extra} it does not declare (columns: {objective.columns})")
    if objective.name not in values:
        raise _fail(objective, f"{where} returned no {objective.name!r}")
    for key, value in values.items():
        if not (value is None or isinstance(value, str) or (_is_real(value) and math.isfinite(value))):
            raise _fail(objective, f"{where}: field {key!r} must be a finite number, a string or None, got {value!r}")
    value = values[objective.name]
    if value is None:
        reason = values.get(undefined_field(objective.name))
        if not isinstance(reason, str) or not reason:
            raise _fail(objective, f"{where} gave no value and no reason in {undefined_field(objective.name)!r}")
        return None
    if not _is_real(value):
        raise _fail(objective, f"{where}: the value must be a number, got {value!r}")
    return float(value)


def check_objective(objective: str | Objective, *, seeds: tuple[int, ...] = (0, 1)) -> None:
    """Run every check on the registered objective `objective` (or on an `Objective` instance).

    Raises `AssertionError` naming the objective and the rule it breaks; returns None when it passes.
    """
    if isinstance(objective, str):
        objective = get_objective(objective)
    if not isinstance(objective, Objective):
        raise TypeError(f"check_objective takes an Objective or a registered objective's name, got {objective!r}")
    _check_declaration(objective)
    for head in HEADS:
        for seed in seeds:
            trial = random_trial(seed=seed, head=head)
            declared = objective.inputs(head=head)
            values = objective.compute(trial)
            value = _check_values(objective, values, head)
            undeclared = trial.read - declared
            if undeclared:
                raise _fail(
                    objective,
                    f"compute() with head={head!r} read {sorted(undeclared)}, which inputs() does not declare ({sorted(declared)})",
                )
            if value is not None:
                if objective.better(objective.worst_value, value):
                    raise _fail(
                        objective, f"worst value {objective.worst_value!r} ranks above the real value {value!r}"
                    )
                shown = objective.display.format(value)
                if not isinstance(shown, str) or not shown or shown == "-":
                    raise _fail(objective, f"display formats {value!r} as {shown!r}")
            if objective.deterministic:
                again = objective.compute(random_trial(seed=seed, head=head))
                if set(again) != set(values) or not all(_same(values[k], again[k]) for k in values):
                    raise _fail(
                        objective,
                        f"compute() is not deterministic: {values} then {again} (declare deterministic=False if so)",
                    )
            if isinstance(objective, CostObjective):
                counted = objective.of_plan(trial.plan, trial.cost)
                if not _same(float(counted), value):
                    raise _fail(objective, f"of_plan() gives {counted!r} but compute() {value!r}")
                if trial.passes:
                    raise _fail(objective, f"a cost objective ran the model ({dict(trial.passes)})")
