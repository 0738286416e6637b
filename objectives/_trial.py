"""What a trial gives the objectives: the plan and its cost at once, features and logits on first use.

`TrialOutputs` is the one interface between objectives and whoever runs the model: the search implements
it over its compressed model and inputs (`toast.search`), `toast.objectives.testing` over small arrays.
The expensive members are computed lazily, once, and timed: the model passes as `"forward"`, any phase an
objective wraps in `timed` under its own name (the probe fit as `"probe"`), each phase excluding those nested in it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from toast.spaces import Plan

    from ._cost import Cost
    from ._timing import LatencyResult

__all__ = ["TrialOutputs"]


class TrialOutputs(ABC):
    """The outputs of one plan that objectives are computed from.

    Always at hand: `plan`, `cost`, `head` (`"probe"`: a linear probe on the features scores accuracy;
    `"original"`: the model's own head), `probe` (the probe protocol, e.g. `"ridge"`), the labels and the
    original model's evaluation features. Computed on first access (`LAZY`): `eval_features`,
    `probe_features`, `eval_logits` and, for a causal LM, `token_scores` and `downstream` (its lm-eval task scores);
    `time_batch` runs the model.
    `available(member)` says whether a member can be read without new work on the model; `expect` announces what
    will be read, so that members from the same pass (evaluation features and logits) are computed together.
    """

    LAZY: ClassVar[tuple[str, ...]] = ("eval_features", "probe_features", "eval_logits", "token_scores", "downstream")
    MEMBERS: ClassVar[tuple[str, ...]] = (
        "plan",
        "cost",
        "head",
        "probe",
        "labels",
        "original_features",
        *LAZY,
        "time_batch",
    )

    def __init__(self, *, plan: Plan, cost: Cost, head: str = "probe", probe: str = "ridge") -> None:
        self.plan = plan
        self.cost = cost
        self.head = head
        self.probe = probe
        self.expected: frozenset[str] = frozenset()
        self.seconds: dict[str, float] = {}
        self._values: dict[str, Any] = {}  # arrays; `downstream`: a mapping
        self._nested = 0.0

    # ---- what the implementation provides ------------------------------------------------------
    @abstractmethod
    def _compute(self, name: str) -> Mapping[str, Any]:
        """Compute the lazy member `name`; the mapping may hold other lazy members from the same pass."""

    @abstractmethod
    def time_batch(self, *, warmup: int, repeats: int) -> LatencyResult:
        """Time the compressed model on one batch of evaluation inputs (see `measure_latency`)."""

    @property
    @abstractmethod
    def eval_labels(self) -> np.ndarray:
        """The labels of the evaluation samples, `(n_eval,)`."""

    @property
    @abstractmethod
    def probe_labels(self) -> np.ndarray:
        """The labels of the probe's training samples, `(n_probe,)`."""

    @property
    @abstractmethod
    def original_features(self) -> np.ndarray:
        """The original model's features of the evaluation samples, `(n_eval, d)`."""

    @property
    def has_labels(self) -> bool:
        """Whether the labels are the dataset's (a search that scores no labelled objective may not load them)."""
        return True

    # ---- lazily computed members -----------------------------------------------------------------
    @property
    def eval_features(self) -> np.ndarray:
        """The compressed model's pooled features of the evaluation samples, `(n_eval, d)`."""
        return self._lazy("eval_features")

    @property
    def probe_features(self) -> np.ndarray:
        """The compressed model's pooled features of the probe's training samples, `(n_probe, d)`."""
        return self._lazy("probe_features")

    @property
    def eval_logits(self) -> np.ndarray:
        """The model head's outputs on the evaluation samples, `(n_eval, n_classes)`."""
        return self._lazy("eval_logits")

    @property
    def token_scores(self) -> np.ndarray:
        """A causal LM's scores of the evaluation sequences, `(n_eval, 4)` float64, one row per sequence:
        `[nll_sum, kl_sum, top1_agreements, predicted_tokens]`, sums over its predicting positions `0 … T-2` (of the
        tokens `1 … T-1`) against the original model's next-token distribution (`toast.objectives.token_scores`)."""
        return self._lazy("token_scores")

    @property
    def downstream(self) -> Mapping[str, float]:
        """A causal LM's score (%) on each lm-eval task the run names, `{task: acc_norm, else acc}`
        (`toast.objectives.downstream_scores`: lm-eval's own documents, not the evaluation samples)."""
        return self._lazy("downstream")

    def _lazy(self, name: str) -> Any:
        if name not in self._values:
            with self.timed("forward"):
                self._values.update(self._compute(name))
        return self._values[name]

    # ---- bookkeeping ---------------------------------------------------------------------------
    def expect(self, members: frozenset[str] | set[str]) -> None:
        """Announce the members that will be read (before reading any)."""
        self.expected = frozenset(members)

    def available(self, member: str) -> bool:
        """Whether `member` can be read without new work on the model (lazy members: once computed)."""
        if member in self.LAZY:
            return member in self._values
        if member == "labels":
            return self.has_labels
        return member in self.MEMBERS and member != "time_batch"

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall-clock time of the block to `seconds[phase]`, less the phases timed inside it."""
        outer, self._nested = self._nested, 0.0
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[phase] = self.seconds.get(phase, 0.0) + elapsed - self._nested
            self._nested = outer + elapsed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(plan={str(self.plan)!r}, head={self.head!r}, probe={self.probe!r}, computed={sorted(self._values)})"
