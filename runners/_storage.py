"""Writing trial attributes to an Optuna storage in one transaction (one commit, one fsync)."""

from __future__ import annotations

from typing import Any


def set_user_attrs(storage: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Every attr of a trial in one transaction where the storage is Optuna's RDBStorage (one commit, and one
    fsync, instead of one per attr: the driver writes every trial's attrs), else one by one."""
    backend = getattr(storage, "_backend", storage)  # optuna's _CachedStorage passes attr writes through
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        if isinstance(backend, RDBStorage) and attrs:
            with _create_scoped_session(backend.scoped_session, True) as session:
                for k, v in attrs.items():
                    backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, k, v)
            return
    except (ImportError, AttributeError):  # another Optuna's internals: the public API below
        pass
    for k, v in attrs.items():
        storage.set_trial_user_attr(trial_id, k, v)
