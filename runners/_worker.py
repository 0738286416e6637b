"""A Ray worker's trial function: built once per worker process from a picklable factory, reused by its trials.

Tune reuses a worker process (an actor) for many trials; what a trial function needs (a model, statistics,
inputs) is built on the first and kept while the same search runs there. The runner knows only the factory and
the key naming what it builds, never what the trial computes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ._trial import TrialFactory, TrialFunction

__all__ = ["BuiltTrial", "WorkerTrial"]


@dataclass
class BuiltTrial:
    """A worker process's trial function, with how long it took to build and how many trials it has run."""

    key: str
    function: TrialFunction
    setup_seconds: float
    trials: int = 0


_BUILT: BuiltTrial | None = None  # this process's trial function: built once, reused by every trial it runs


@dataclass(frozen=True, kw_only=True)
class WorkerTrial:
    """What the Ray runner sends to its workers (pickled): `factory()` builds the trial function, once per worker
    process (a `TrialFactory`'s `build`); `key` names what it builds (one search's settings), so that a process
    reused for another search builds afresh.

    `factory` must pickle and should be light: a top-level function, or a `TrialFactory`'s build (`WorkerTrial.of`)
    holding settings and paths, not a loaded model (it travels to every worker).
    """

    factory: Callable[[], TrialFunction]
    key: str

    @classmethod
    def of(cls, factory: TrialFactory) -> WorkerTrial:
        """What a worker needs of a trial factory: its `build` and its `key`."""
        return cls(factory=Build(factory), key=factory.key)

    def get(self) -> BuiltTrial:
        """This process's trial function: built (and timed) on first use, reused while the key stays the same."""
        global _BUILT
        if _BUILT is None or _BUILT.key != self.key:
            _BUILT = None  # one search per worker process: drop another search's trial function first
            start = time.perf_counter()
            function = self.factory()
            _BUILT = BuiltTrial(self.key, function, time.perf_counter() - start)
        return _BUILT


@dataclass(frozen=True)
class Build:
    """`factory.build` as a picklable callable that compares by its factory (a bound method compares by identity)."""

    factory: TrialFactory

    def __call__(self) -> TrialFunction:
        return self.factory.build()
