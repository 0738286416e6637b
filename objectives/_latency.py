"""The `latency` objective (estimated from the run's `LatencyTable`), and timing a callable: median of repeats."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._objectives import CostObjective, Display, ObjectiveError
from ._registry import register_objective

if TYPE_CHECKING:
    from toast.spaces import Plan

    from ._cost import Cost
    from ._trial import TrialOutputs

__all__ = ["ESTIMATED_FIELD", "LATENCY", "MEASURED_FIELD", "Latency", "LatencyResult", "measure_latency"]

MEASURED_FIELD = "latency_ms"  # measured end to end at the end of a run (front plans and the chosen one)
ESTIMATED_FIELD = "latency_ms_estimated"  # the latency table's estimate (every plan)


@dataclass(frozen=True, kw_only=True)
class LatencyResult:
    """Milliseconds per call over `repeats` timed calls: median and the 10th / 90th percentiles."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int


def _synchronizer(device: str | torch.device | None) -> Callable[[], None]:
    """What waits for queued device work: CUDA / MPS synchronize, nothing on CPU.

    With `device=None`, CUDA is synchronized when the process has initialized it (decided after the
    warm-up, so a callable that first touches CUDA there is covered).
    """
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.synchronize
        return lambda: None
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device | None = None,
) -> LatencyResult:
    """Time `fn()`: `warmup` untimed calls, then `repeats` calls timed one by one with `time.perf_counter`.

    On CUDA (or MPS) the device is synchronized before and after each timed call, so queued kernels are
    counted; `device=None` synchronizes CUDA if this process has initialized it. Exceptions from `fn`
    propagate. Run it under `torch.inference_mode()` yourself if `fn` should not build graphs.
    """
    problems = []
    if not callable(fn):
        problems.append(f"fn must be callable, got {fn!r}")
    for key, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least):
            problems.append(f"{key} must be an integer >= {least}, got {value!r}")
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            problems.append(f"device {device!r} is not a torch device")
    if problems:
        raise ObjectiveError("invalid latency settings: " + "; ".join(problems))

    for _ in range(int(warmup)):
        fn()
    synchronize = _synchronizer(device)
    repeats = int(repeats)
    times = np.empty(repeats)
    for i in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times[i] = time.perf_counter() - start
    times *= 1e3
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return LatencyResult(median_ms=float(median), p10_ms=float(p10), p90_ms=float(p90), repeats=repeats)


class Latency(CostObjective):
    """Milliseconds per batch on the run's device, estimated from its latency table (`Cost.latency_ms`): known for
    every plan without running it, so a budget can be stated in it. The run measures its front end to end at the
    end (`latency_ms`); `latency_ms_estimated` repeats the estimate beside it."""

    def of_plan(self, plan: Plan, cost: Cost) -> float:
        """`cost.latency_ms`; NaN when the cost table carries no latency table."""
        return math.nan if cost.latency_ms is None else float(cost.latency_ms)

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"latency": ms, "latency_ms_estimated": ms}` from the trial's cost; nothing without a latency table."""
        if trial.cost.latency_ms is None:
            return {}
        estimate = float(trial.cost.latency_ms)
        return {self.name: estimate, ESTIMATED_FIELD: estimate}


LATENCY = register_objective(
    Latency(
        name="latency",
        direction="minimize",
        unit="ms",
        description="milliseconds per batch on the run's device, estimated from its latency table "
        "(--latency-batch-size inputs at the model's input size)",
        display=Display(
            title="latency ms", axis="latency (ms per batch, estimated)", name="latency", unit="ms", fmt="{:.2f}"
        ),
        fields=(MEASURED_FIELD, ESTIMATED_FIELD),
        field_descriptions={
            MEASURED_FIELD: "milliseconds per batch measured end to end at the end of the run (median of repeats; "
            "the original, the front plans and the chosen one) on the run's device and dtype",
            ESTIMATED_FIELD: "the latency table's estimate of latency, beside the measured value (ms)",
        },
    )
)
