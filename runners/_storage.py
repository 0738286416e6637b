"""Writing trial attributes to an Optuna storage at once: one transaction (SQLite) or one append (journal)."""

from __future__ import annotations

from typing import Any

from .._compat import set_user_attrs_at_once


def set_user_attrs(storage: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Every attr of a trial in one transaction where the storage is Optuna's RDBStorage, or in one append where it
    is a JournalStorage (one commit or append, and one fsync, instead of one per attr: the driver writes every
    trial's attrs), else one by one."""
    if set_user_attrs_at_once(storage, trial_id, attrs):
        return
    for k, v in attrs.items():
        storage.set_trial_user_attr(trial_id, k, v)
