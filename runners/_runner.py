"""The runner interface and its registry: `@register_runner(name, options_class)`, `get_runner(name)`.

A runner runs `n_trials` more trials of an Optuna study, each asked and scored through the same `TrialFactory`
(`toast.runners._trial`), and records every trial in the study: COMPLETE with its values and attrs, or FAIL with
its reason (`fail_reason`, a system attr), never dropped. Its options are a frozen, keyword-only dataclass of its
own, whose fields carry their command-line metadata (`help`, `choices`, and optionally `flag`, `metavar`, `type`:
the search's CLI is generated from them; a field without `help` is no option) and which validates itself on
construction (`SettingsError` listing every problem at once, as the settings do). Attrs that only say where a trial
ran start with the runner's name and an underscore (`ray_node`): they are not scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from toast.errors import SettingsError

from ._trial import TrialFactory

__all__ = [
    "Runner",
    "get_runner",
    "list_runners",
    "register_runner",
    "runner_options_class",
    "validated",
]


@runtime_checkable
class Runner(Protocol):
    """Where trials run. `name` and `options_class` are set by `register_runner`."""

    name: ClassVar[str]
    options_class: ClassVar[type]

    def check(self, options: Any | None) -> None:
        """Before a run loads anything or touches its directory: raise a `ToastError` that says what to do when the
        run cannot start with these options (the Ray runner: a cluster address nothing answers at). Takes seconds at
        most."""
        ...

    def run(
        self,
        study: Any,
        factory: TrialFactory,
        *,
        n_trials: int,
        options: Any | None,
        timeout: float | None = None,
        callbacks: Sequence[Callable[[Any, Any], None]] = (),
        directory: Path | None = None,
    ) -> dict[str, Any]:
        """Run `n_trials` more trials of `study`; returns a summary (at least `trials`, the number asked for).
        `options` None: the runner's defaults.

        `timeout` (seconds) stops asking for new trials. `callbacks(study, FrozenTrial)` run in this process after
        each trial is recorded, as `study.optimize`'s do. `directory` is the run directory, where a runner may keep
        files of its own (default: the working directory). Ctrl-C marks the running trials failed and propagates.
        Where trials write in this process (the local runner), a full disk stops the run: its error is raised once
        the finished trials are recorded."""
        ...


_REGISTRY: dict[str, type] = {}
R = TypeVar("R", bound=type)


def register_runner(name: str, options_class: type) -> Callable[[R], R]:
    """Class decorator: make a runner available under `name`, its options an `options_class` (a frozen dataclass
    that validates itself). The class is built without arguments by `get_runner`."""
    problems = []
    if name in _REGISTRY:
        problems.append(f"a runner named {name!r} is already registered")
    if not (dataclasses.is_dataclass(options_class) and options_class.__dataclass_params__.frozen):
        problems.append(f"its options class {options_class.__name__} must be a frozen dataclass")
    if problems:
        raise ValueError(f"cannot register runner {name!r}: " + "; ".join(problems))

    def wrap(cls: R) -> R:
        missing = [m for m in ("check", "run") if not callable(getattr(cls, m, None))]
        if missing:
            raise ValueError(f"cannot register runner {name!r}: {cls.__name__} lacks {' and '.join(missing)}")
        if name in _REGISTRY:  # registered since the decorator was made
            raise ValueError(f"cannot register runner {name!r}: a runner named {name!r} is already registered")
        cls.name = name
        cls.options_class = options_class
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_runners() -> tuple[str, ...]:
    """The registered runners' names, in registration order (`local` first)."""
    return tuple(_REGISTRY)


def _runner_class(name: str) -> type:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise SettingsError(f"`runner` must be one of {', '.join(_REGISTRY)}, got {name!r}") from None


def get_runner(name: str) -> Runner:
    """The runner registered as `name`; `SettingsError` naming the known runners when there is none."""
    return _runner_class(name)()


def runner_options_class(name: str) -> type:
    """The options class of the runner registered as `name` (its fields are the runner's command-line options)."""
    return _runner_class(name).options_class


def validated(options: Any, options_class: type) -> Any:
    """`options` when it is an `options_class` (valid, then: options validate themselves), the class's defaults when
    it is None, else `TypeError`."""
    if options is None:
        return options_class()
    if not isinstance(options, options_class):
        raise TypeError(f"expected {options_class.__name__} options, got {type(options).__name__}")
    return options
