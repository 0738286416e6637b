"""Every use of a private Optuna, Ray or fvcore attribute, each behind one named function.

Optuna, Ray and fvcore keep these to themselves and may move them in any release; `tests/test_compat.py` pins each
one on the installed versions, so that an upgrade that breaks one fails there, by name, and not deep inside a
run. Use the public API where there is one; add a function here only where there is none.

Nothing here imports Optuna, Ray or fvcore before a function that needs them is called.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cache
from typing import Any

__all__ = [
    "exact_hypervolume",
    "journal_storage",
    "local_ray_address",
    "optuna_search_told",
    "optuna_search_trials",
    "rdb_storage",
    "searcher_state",
    "set_user_attrs_at_once",
    "study_storage",
    "traced_flop_count_analysis",
    "trial_id",
]


# ---- Optuna ------------------------------------------------------------------------------------
def exact_hypervolume(losses: Any, reference: Any) -> float | None:
    """Optuna's exact WFG hypervolume of minimised `losses` below `reference` (O(n^2) for 3 objectives), or
    None where this Optuna has none (`optuna._hypervolume.compute_hypervolume`, Optuna 3 to 5)."""
    try:
        from optuna._hypervolume import compute_hypervolume
    except ImportError:
        return None
    return float(compute_hypervolume(losses, reference))


def trial_id(trial: Any) -> int:
    """The storage id of an Optuna `Trial` or `FrozenTrial`: what every storage call takes (not the trial's
    `number`). Optuna has no public accessor (`_trial_id`, Optuna 3 to 5)."""
    return trial._trial_id


def study_storage(study: Any) -> Any:
    """The storage an Optuna `Study` reads and writes (`Study._storage`, no public accessor). For an RDB storage
    Optuna wraps it in a cache (`_CachedStorage`) that the study's trials go through: share this object, never
    open a second one on the same database."""
    return study._storage


def rdb_storage(storage: Any) -> Any | None:
    """The `RDBStorage` under `storage` (itself, or the backend of Optuna's `_CachedStorage`), else None."""
    from optuna.storages import RDBStorage

    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def journal_storage(storage: Any) -> Any | None:
    """`storage` where it is Optuna's `JournalStorage`, else None."""
    from optuna.storages.journal import JournalStorage

    return storage if isinstance(storage, JournalStorage) else None


def _journal_user_attrs_at_once(storage: Any, trial_id: int, attrs: dict[str, Any]) -> bool:
    """Every attr of a trial appended to a `JournalStorage` in one `append_logs` call (one lock, one write, one
    fsync), one log line per attr as `JournalStorage.set_trial_user_attr` writes it (its replay takes one attr
    per line). Uses `JournalStorage._thread_lock`, `._backend`, `._replay_result.worker_id`,
    `._sync_with_backend` and `optuna.storages.journal._storage.JournalOperation.SET_TRIAL_USER_ATTR`."""
    try:
        from optuna.storages.journal._storage import JournalOperation
    except ImportError:
        return False
    op = getattr(JournalOperation, "SET_TRIAL_USER_ATTR", None)
    needed = ("_thread_lock", "_backend", "_replay_result", "_sync_with_backend")
    if op is None or not all(hasattr(storage, n) for n in needed):
        return False
    with storage._thread_lock:
        worker_id = storage._replay_result.worker_id
        storage._backend.append_logs(
            [
                {"op_code": op, "worker_id": worker_id, "trial_id": trial_id, "user_attr": {k: v}}
                for k, v in attrs.items()
            ]
        )
        storage._sync_with_backend()
    return True


def set_user_attrs_at_once(storage: Any, trial_id: int, attrs: dict[str, Any]) -> bool:
    """Write every attr of a trial in one transaction (one commit, and one fsync) where `storage` is, or wraps,
    an `RDBStorage`, or in one append where it is a `JournalStorage`: True when written. False, with nothing
    written, for another storage (or an Optuna without these internals): the caller writes them through the
    public API.

    Uses `optuna.storages._rdb.storage._create_scoped_session`, `RDBStorage.scoped_session`,
    `RDBStorage._set_trial_attr_without_commit` and `optuna.storages._rdb.models.TrialUserAttributeModel`,
    as `RDBStorage.set_trial_user_attr` does for one attr.
    """
    if not attrs:
        return False
    if journal_storage(storage) is not None:
        return _journal_user_attrs_at_once(storage, trial_id, attrs)
    backend = rdb_storage(storage)
    if backend is None:
        return False
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return False
    model = getattr(models, "TrialUserAttributeModel", None)
    write = getattr(backend, "_set_trial_attr_without_commit", None)
    if model is None or write is None or not hasattr(backend, "scoped_session"):
        return False
    with _create_scoped_session(backend.scoped_session, True) as session:
        for k, v in attrs.items():
            write(session, model, trial_id, k, v)
    return True


# ---- Ray ---------------------------------------------------------------------------------------
def optuna_search_trials(searcher: Any) -> dict[str, Any]:
    """Ray Tune's `OptunaSearch`: the Optuna trial it asked for each Tune trial id (`_ot_trials`, the live dict)."""
    return searcher._ot_trials


def optuna_search_told(searcher: Any) -> set[str]:
    """Ray Tune's `OptunaSearch`: the Tune trial ids whose Optuna trial it considers told (`_completed_trials`,
    the live set: add a trial told elsewhere, so that the searcher does not tell it again)."""
    return searcher._completed_trials


def searcher_state(searcher: Any) -> dict[str, Any]:
    """The state to pickle a Tune `Searcher` with when its real state lives elsewhere (the Optuna storage): its
    metric and mode only, under the attribute names its public `metric` and `mode` read (`_metric`, `_mode`)."""
    return {"_metric": searcher.metric, "_mode": searcher.mode}


def local_ray_address() -> str:
    """The address of the Ray cluster this machine started (`ray start`), or the one running here, as `ray.init`
    finds it for `auto` (`ray._private.services.canonicalize_bootstrap_address_or_die`; no public lookup).
    Raises ConnectionError or ValueError when there is none."""
    from ray._private import services

    return services.canonicalize_bootstrap_address_or_die("auto")


# ---- fvcore ------------------------------------------------------------------------------------
@cache
def _traced_analysis_class() -> type:
    from fvcore.nn import FlopCountAnalysis

    class TracedFlopCountAnalysis(FlopCountAnalysis):
        """fvcore's analysis, whose one trace runs inside a context the caller gives (fvcore's `_analyze`, which
        caches its `Statistics` in `_stats`, is the only place the trace happens; no public hook wraps it)."""

        def __init__(self, model: Any, inputs: Any, context: Callable[[Any], AbstractContextManager]) -> None:
            super().__init__(model, inputs)
            self._toast_context = context

        def _analyze(self):  # noqa: ANN202 - fvcore's Statistics
            if self._stats is not None:
                return self._stats
            with self._toast_context(self._model):
                return super()._analyze()

    return TracedFlopCountAnalysis


def traced_flop_count_analysis(model: Any, inputs: tuple, context: Callable[[Any], AbstractContextManager]) -> Any:
    """An fvcore `FlopCountAnalysis` of `model(*inputs)` whose trace runs inside `context(model)` (eval mode, no
    grad, a forward that returns tensors: what the tracer needs of a Transformers model)."""
    return _traced_analysis_class()(model, inputs, context)


# ---- accelerate --------------------------------------------------------------------------------------------------
def accelerate_hook(module: Any) -> Any | None:
    """`module._hf_hook`: the hook accelerate's `dispatch_model` / `add_hook_to_module` set on a module of a model
    loaded with a device map (its `execution_device`, its offloaded weights), or None where it has none."""
    return getattr(module, "_hf_hook", None)
