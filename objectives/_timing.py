"""Timing a callable: the median and spread of repeated calls, with the device synchronized around each.

A module of its own, below the objectives and the trial: `TrialOutputs.time_batch` returns a `LatencyResult`,
and the `latency` objective's module takes `TrialOutputs`; with the result kept there, the two imported each other.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toast.errors import ObjectiveError

__all__ = ["LatencyResult", "measure_latency"]


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
