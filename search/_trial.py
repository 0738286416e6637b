"""The search's trial factory, `SearchTrials`: what `run_search` gives the runner (`toast.runners`), whichever it is.

The driver asks each trial through `Search.define` (the plan, and the scores known without scoring it); the process
that runs the trial scores the plan with a `SearchContext`: the driver's own where the search runs (the local
runner), else one a Ray worker builds once from the caches the driver wrote (no capture pass, no path checks).
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from toast.objectives import get_objectives
from toast.runners import TRIAL_ID, TrialFunction
from toast.spaces import Plan

from ..capture import ActivationCache
from ..errors import CacheError
from ._context import SearchContext
from ._quiet import quiet_libraries
from ._settings import SearchSettings
from ._study import Search, promote_rule

__all__ = ["SearchTrials", "settings_for_workers"]


def settings_for_workers(settings: SearchSettings) -> SearchSettings:
    """Settings as a Ray worker needs them: local paths absolute (Tune runs trials in their own folders), the cache
    root explicit (the driver's, which every node must see), no progress bars."""

    def absolute(name: str) -> str:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name

    return replace(
        settings,
        data=replace(settings.data, model=absolute(settings.data.model), dataset=absolute(settings.data.dataset)),
        study=replace(settings.study, out=settings.out.resolve()),
        cache_dir=ActivationCache(settings.cache_dir).root.resolve(),
        progress=False,
    )


@dataclass(frozen=True)
class SearchTrials:
    """A search's `toast.runners.TrialFactory`: `define` on the driver, `build` wherever trials run.

    Pickled (the Ray runner sends it to its workers), it carries the settings and the calibration capture entry
    only; the driver's `Search` stays on the driver (left out of the pickled state, and of equality)."""

    settings: SearchSettings  # as `settings_for_workers` makes them
    capture: str  # the activation cache entry the driver captured (`CapturedActivations.directory`)
    search: Search | None = field(default=None, compare=False, repr=False)  # the driver's: None on a worker

    @classmethod
    def of(cls, settings: SearchSettings, *, capture: str | Path, search: Search | None = None) -> SearchTrials:
        """The factory of a search with these `settings`, whose calibration capture is the cache entry `capture`
        (`CapturedActivations.directory`); `search`, the driver's `Search`, asks its trials (`define`)."""
        return cls(settings=settings_for_workers(settings), capture=str(Path(capture).resolve()), search=search)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "search": None}  # a worker builds its own context: the driver's never travels

    @property
    def metrics(self) -> tuple[str, ...]:
        """The study's objective names, in its order."""
        return tuple(o.name for o in get_objectives(self.settings.scoring.objectives))

    @property
    def key(self) -> str:
        """Names what this factory builds: one search's settings."""
        return hashlib.sha256(json.dumps(self.settings.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def device(self) -> str:
        return self.settings.device

    def define(self, trial) -> dict[str, Any]:
        """The driver side of a trial: the plan (and any scores known without scoring it, and the fully scored
        trials a subset stage is held to) as JSON text."""
        if self.search is None:
            raise RuntimeError("SearchTrials.define runs on the driver, with its search (`SearchTrials.of`)")
        plan, known = self.search.define(trial)
        front = json.dumps(self.search.front()) if self.search.staged and known is None else ""
        return {
            "spans": json.dumps(plan.to_json()),
            "known": "" if known is None else json.dumps(known),
            "front": front,
        }

    def build(self) -> TrialFunction:
        """The trial function `config -> (objective values, attrs)` of this process: with the driver's context where
        the search runs, else with a context built here from the driver's caches."""
        return self._on_driver(self.search) if self.search is not None else self._on_worker()

    def _on_driver(self, search: Search) -> TrialFunction:
        """Scored by the driver's `Search`: a plan's subset scores are kept with its trial as they come
        (`Search.score`), so a resumed study does not score it on the subset again."""
        names = self.metrics

        def trial(config: dict) -> tuple[dict[str, float], dict[str, Any]]:
            if config["known"]:
                metrics = json.loads(config["known"])
            else:
                plan = Plan.of(json.loads(config["spans"]), search.space.num_blocks)
                metrics = search.score(plan, config[TRIAL_ID])
            return dict(zip(names, search.values(metrics), strict=True)), metrics

        return trial

    def _on_worker(self) -> TrialFunction:
        """Scored by a `SearchContext` built here from the caches the driver wrote (the capture entry must be
        visible on this node: `CacheError` otherwise)."""
        quiet_libraries()
        manifest = Path(self.capture) / "manifest.json"
        if not manifest.is_file():
            raise CacheError(
                f"the activation cache entry {self.capture} is not visible on this node ({socket.gethostname()}): "
                "`cache_dir` must be a path every node sees (a shared filesystem)"
            )
        before = manifest.stat().st_mtime_ns
        ctx = SearchContext.build(self.settings, progress=False, check_paths=False, notes=False)  # the driver's
        cache_hit = ctx.captured.directory.resolve() == Path(self.capture) and manifest.stat().st_mtime_ns == before
        objectives = get_objectives(self.settings.scoring.objectives)

        def trial(config: dict) -> tuple[dict[str, float], dict[str, Any]]:
            if config["known"]:
                metrics = json.loads(config["known"])
            else:
                plan = Plan.of(json.loads(config["spans"]), ctx.loaded.num_blocks)
                front = config.get("front")
                options = (
                    {"promote": promote_rule(json.loads(front), objectives, self.settings.scoring.fidelity_z)}
                    if front
                    else {}
                )
                metrics = dict(ctx.evaluate(plan, **options), scored=True)
            return {o.name: Search._value(o, metrics) for o in objectives}, {
                **metrics,
                "ray_worker_cache_hit": cache_hit,
            }

        return trial
