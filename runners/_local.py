"""The local runner: trials one after another in this process, through Optuna's own loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toast.errors import DISK_ERRORS

from .._compat import study_storage, trial_id
from .._faults import fault_point
from ._runner import register_runner, validated
from ._storage import set_user_attrs
from ._trial import TRIAL_ID, TRIAL_NUMBER, TrialFactory

__all__ = ["LocalOptions", "LocalRunner", "run_local", "storage_failures_raised"]

INTERRUPTED = "interrupted: Ctrl-C (KeyboardInterrupt) while this trial ran"


@dataclass(frozen=True, kw_only=True)
class LocalOptions:
    """The local runner has no options of its own (the trials, their timeout and the device are the search's)."""


@register_runner("local", LocalOptions)
class LocalRunner:
    """Trials one after another in this process: the factory's trial function is built here, once, and every trial
    asked (`define`) and scored in turn; an exception fails its trial with the reason, never the run."""

    def check(self, options: LocalOptions | None) -> None:
        validated(options, LocalOptions)

    def run(
        self,
        study: Any,
        factory: TrialFactory,
        *,
        n_trials: int,
        options: LocalOptions | None,
        timeout: float | None = None,
        callbacks: Sequence[Callable] = (),
        directory: Path | None = None,
    ) -> dict[str, Any]:
        validated(options, LocalOptions)
        if n_trials <= 0:
            return {"trials": 0}
        objective = _Objective(study, factory)
        run_local(study, objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks)
        if objective.disk_error is not None:  # it stopped the study: every later write would fail the same way
            raise objective.disk_error
        return {"trials": n_trials}


class _Objective:
    """The Optuna objective of a trial factory: ask (`define`), score (the built trial function), store the attrs.

    Optuna marks a trial that raises as failed but does not store why: the reason is stored here (`fail_reason`),
    for Ctrl-C as for any error, before the exception goes on. A full disk stops the study (`disk_error`)."""

    def __init__(self, study: Any, factory: TrialFactory) -> None:
        self.study = study
        self.storage = study_storage(study)
        self.factory = factory
        self.metrics = list(factory.metrics)
        self.function = factory.build()
        self.disk_error: OSError | None = None

    def __call__(self, trial: Any) -> list[float]:
        tid = trial_id(trial)
        try:
            fault_point("trial")
            config = {**self.factory.define(trial), TRIAL_ID: tid, TRIAL_NUMBER: trial.number}
            values, attrs = self.function(config)
            set_user_attrs(self.storage, tid, attrs)  # one commit, not one per attr
            return [values[m] for m in self.metrics]
        except KeyboardInterrupt:
            self.storage.set_trial_system_attr(tid, "fail_reason", INTERRUPTED)
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:  # every later trial would fail the same way
                self.disk_error = exc
                self.study.stop()
            self.storage.set_trial_system_attr(tid, "fail_reason", f"{type(exc).__name__}: {exc}")
            raise


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
