"""The local runner: trials one after another in this process, through Optuna's own loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
    with storage_failures_raised():
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(Exception,),
            callbacks=list(callbacks),
            gc_after_trial=False,
        )


@contextmanager
def storage_failures_raised() -> Iterator[None]:
    """Raise the storage's own error (e.g. a full disk) where Optuna's loop hides it: when a trial's final state
    cannot be written, `study.optimize` ends in its own `AssertionError("Should not reach.")`, the real cause in
    its context."""
    try:
        yield
    except AssertionError as exc:
        cause = exc.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from None
