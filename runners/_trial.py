"""What every runner is given: a backend-neutral trial factory (`TrialFactory`).

A trial has two sides. The driver, where the study and its sampler live, asks it: `define(trial)` turns an Optuna
trial into a config (JSON-able constants such as the plan to score). The process that runs it scores it: the
factory's `build()` makes, once per process, the `TrialFunction` that takes that config and returns the objective
values and the attrs to store. The local runner calls both in this process; the Ray runner calls `define` on the
driver and sends the (pickled) factory to its workers, which call `build` there. So one factory serves every
runner, and a runner knows nothing of what a trial computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["TRIAL_ID", "TRIAL_NUMBER", "TrialFactory", "TrialFunction"]

#: `trial(config) -> (values by metric name, attrs to store on the Optuna trial)`
TrialFunction = Callable[[dict], tuple[dict[str, float], dict[str, Any]]]

#: added by every runner to each config `define` returns: the Optuna trial's storage id (what storage calls take)
TRIAL_ID = "toast_trial_id"
#: ... and its number in the study
TRIAL_NUMBER = "toast_trial"


@runtime_checkable
class TrialFactory(Protocol):
    """How a study's trials are asked (on the driver) and scored (wherever a runner runs them).

    `metrics`: the study's objective names in its order (the keys of the values a trial function returns).
    `key`: names what `build` builds (one search), so that a process reused for another search builds afresh.
    `device`: where a trial computes (`cpu`, `cuda`, `auto`: a GPU where there is one), for runners that place
    trials (the Ray runner gives a trial a GPU by default only where it may use one).
    `define(trial)`: the driver side, given the Optuna trial (suggest, constrain, set attrs); returns the config
    the trial function receives, JSON-able, to which the runner adds `TRIAL_ID` and `TRIAL_NUMBER`.
    `build()`: the trial function, built in the process that runs trials (once per process and key).

    The factory must pickle, and light: a runner may send it to other processes (a frozen dataclass of settings and
    paths, never a loaded model; anything only the driver holds is left out of its pickled state).
    """

    @property
    def metrics(self) -> Sequence[str]: ...

    @property
    def key(self) -> str: ...

    @property
    def device(self) -> str: ...

    def define(self, trial: Any) -> dict[str, Any]: ...

    def build(self) -> TrialFunction: ...
