"""The search's side of a Ray trial, for `toast.runners.run_ray`: what the driver sends for each trial
(`define_for_ray`), and the factory a worker builds its trial function with (`SearchTrialFactory`: its own
`SearchContext`, from the caches the driver wrote), wrapped in the runner's `WorkerTrial` (`worker_trial`).
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toast.objectives import get_objectives
from toast.runners import TrialFunction, WorkerTrial
from toast.spaces import Plan

from ..errors import CacheError
from ._context import SearchContext
from ._quiet import quiet_libraries
from ._settings import SearchSettings
from ._study import Search, promote_rule

__all__ = ["SearchTrialFactory", "define_for_ray", "settings_for_workers", "worker_trial"]


def define_for_ray(search: Search, trial) -> dict[str, Any]:
    """The driver side of a Ray trial: the plan (and any scores known without scoring it) for the worker."""
    plan, known = search.define(trial)
    front = json.dumps(search.front()) if search.staged and known is None else ""  # what the subset stage is held to
    return {"spans": json.dumps(plan.to_json()), "known": "" if known is None else json.dumps(known), "front": front}


def settings_for_workers(settings: SearchSettings) -> SearchSettings:
    """Settings as a Ray worker needs them: local paths absolute (Tune runs trials in their own folders), the cache
    root explicit (the driver's, which every node must see), no progress bars."""
    from ..capture import ActivationCache

    def absolute(name: str) -> str:
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name

    return replace(
        settings,
        model=absolute(settings.model),
        dataset=absolute(settings.dataset),
        out=settings.out.resolve(),
        cache_dir=ActivationCache(settings.cache_dir).root.resolve(),
        progress=False,
    )


@dataclass(frozen=True)
class SearchTrialFactory:
    """Picklable, called once on each Ray worker: builds the worker's own `SearchContext` from the caches the driver
    wrote (no capture pass, no path checks: the driver made them) and returns the trial function
    `config -> (objective values, attrs)`."""

    settings: SearchSettings  # as `settings_for_workers` makes them
    capture: str  # the activation cache entry the driver captured

    @property
    def key(self) -> str:
        """Names what this factory builds: one search's settings."""
        return hashlib.sha256(json.dumps(self.settings.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def __call__(self) -> TrialFunction:
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
        objectives = get_objectives(self.settings.objectives)

        def trial(config: dict) -> tuple[dict[str, float], dict[str, Any]]:
            if config["known"]:
                metrics = json.loads(config["known"])
            else:
                plan = Plan.of(json.loads(config["spans"]), ctx.loaded.num_blocks)
                front = config.get("front")
                options = (
                    {"promote": promote_rule(json.loads(front), objectives, self.settings.fidelity_z)} if front else {}
                )
                metrics = dict(ctx.evaluate(plan, **options), scored=True)
            return {o.name: Search._value(o, metrics) for o in objectives}, {
                **metrics,
                "ray_worker_cache_hit": cache_hit,
            }

        return trial


def worker_trial(settings: SearchSettings, *, capture: str | Path) -> WorkerTrial:
    """What `run_ray` sends to the workers of this search: the settings as workers need them and the driver's
    calibration capture entry (`capture`, the `CapturedActivations.directory`)."""
    factory = SearchTrialFactory(settings=settings_for_workers(settings), capture=str(Path(capture).resolve()))
    return WorkerTrial(factory=factory, key=factory.key)
