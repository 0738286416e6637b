"""The local runner: trials one after another in this process, through Optuna's own loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def run_local(
    study: Any,
    objective: Callable[[Any], Sequence[float]],
    *,
    n_trials: int,
    timeout: float | None = None,
    callbacks: Sequence[Callable] = (),
) -> None:
    """`study.optimize` with every exception recorded as a failed trial (with its reason), not raised.

    Ctrl-C marks the running trial failed (Optuna does) and propagates, so the caller can still
    write what finished.
    """
    if n_trials <= 0:
        return
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout,
        catch=(Exception,),
        callbacks=list(callbacks),
        gc_after_trial=False,
    )
