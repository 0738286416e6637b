"""`toast._compat`: every private Optuna / Ray attribute the code relies on, pinned on the installed versions.

Each test names the attribute it pins; an upgrade that moves one fails here, by name, rather than deep inside a
run (where `set_user_attrs` would quietly fall back to one commit per attr, or a Ray search would crash).
"""

from __future__ import annotations

import pickle

import pytest

from toast import _compat as compat

optuna = pytest.importorskip("optuna")


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", directions=["maximize", "minimize"]
    )


def _storage_trial_ids(storage, study) -> list[int]:
    study_id = storage.get_study_id_from_name(study.study_name)
    return [storage.get_trial_id_from_study_id_trial_number(study_id, n) for n in range(len(study.trials))]


# ---- Optuna ------------------------------------------------------------------------------------
def test_trial_id_is_the_storage_id_of_trial_and_frozen_trial(study):
    """`Trial._trial_id`, `FrozenTrial._trial_id`: the id storage calls take, not the number."""
    asked = [study.ask() for _ in range(3)]
    storage = compat.study_storage(study)
    ids = _storage_trial_ids(storage, study)
    assert [compat.trial_id(t) for t in asked] == ids
    assert [compat.trial_id(t) for t in study.get_trials(deepcopy=False)] == ids
    assert all(isinstance(i, int) for i in ids)
    storage.set_trial_user_attr(compat.trial_id(asked[1]), "k", 1)
    assert study.trials[1].user_attrs == {"k": 1}


def test_study_storage_is_what_the_study_writes_through(study):
    """`Study._storage`: a `BaseStorage` the study's own trials go through (the cached wrapper of an RDBStorage)."""
    storage = compat.study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    trial = study.ask()
    storage.set_trial_system_attr(compat.trial_id(trial), "fail_reason", "why")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert study.trials[0].system_attrs["fail_reason"] == "why" and study.trials[0].state.name == "FAIL"
    # a study loaded over the same storage object sees the same trials: the Ray searcher's study shares it
    again = optuna.load_study(study_name="s", storage=storage)
    assert compat.study_storage(again) is storage and len(again.trials) == 1


def test_rdb_storage_unwraps_the_cache(study, tmp_path):
    """`_CachedStorage._backend`: the RDBStorage under the study's storage."""
    storage = compat.study_storage(study)
    backend = compat.rdb_storage(storage)
    assert isinstance(backend, optuna.storages.RDBStorage)
    assert compat.rdb_storage(backend) is backend
    assert compat.rdb_storage(optuna.storages.InMemoryStorage()) is None


@pytest.mark.parametrize("unwrapped", [False, True], ids=["cached", "rdb"])
def test_user_attrs_in_one_transaction(study, unwrapped):
    """`_create_scoped_session`, `RDBStorage.scoped_session`, `RDBStorage._set_trial_attr_without_commit`,
    `models.TrialUserAttributeModel`: all attrs written in one commit, equal to the public API's."""
    from sqlalchemy import event

    storage = compat.study_storage(study)
    target = compat.rdb_storage(storage) if unwrapped else storage
    a, b = study.ask(), study.ask()
    attrs = {"accuracy": 91.5, "spans": [[0, 2, "linear"]], "feasible": True, "note": None}
    commits = []

    def count(connection) -> None:
        commits.append(connection)

    engine = compat.rdb_storage(storage).engine
    event.listen(engine, "commit", count)
    try:
        assert compat.set_user_attrs_at_once(target, compat.trial_id(a), attrs) is True
        assert len(commits) == 1
        for k, v in attrs.items():
            b.set_user_attr(k, v)
        assert len(commits) == 1 + len(attrs)  # the public API: one commit per attr
    finally:
        event.remove(engine, "commit", count)
    assert compat.set_user_attrs_at_once(
        target, compat.trial_id(a), {"accuracy": 92.0}
    )  # overwrites, like set_user_attr
    got = {t.number: t.user_attrs for t in study.get_trials()}
    assert got[0] == {**attrs, "accuracy": 92.0} and got[1] == attrs


def test_journal_user_attrs_in_one_append(tmp_path, monkeypatch):
    """`JournalStorage._backend.append_logs`, `._replay_result.worker_id`, `._thread_lock`, `._sync_with_backend` and
    `JournalOperation.SET_TRIAL_USER_ATTR`: every attr in one append (one lock, one fsync), read back as the public
    API writes them, by this process and by a fresh storage on the file."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = str(tmp_path / "s.journal")
    storage = JournalStorage(JournalFileBackend(path))
    assert (
        compat.journal_storage(storage) is storage and compat.journal_storage(optuna.storages.InMemoryStorage()) is None
    )
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    assert compat.study_storage(study) is storage  # not wrapped in a cache, as an RDB storage is
    a, b = study.ask(), study.ask()
    attrs = {"accuracy": 91.5, "spans": [[0, 2, "linear"]], "feasible": True, "seconds": 0.25}
    appends = []
    real = storage._backend.append_logs
    monkeypatch.setattr(storage._backend, "append_logs", lambda logs: (appends.append(len(logs)), real(logs)))
    assert compat.set_user_attrs_at_once(storage, compat.trial_id(a), attrs) is True
    assert appends == [len(attrs)]
    for k, v in attrs.items():
        b.set_user_attr(k, v)
    compat.set_user_attrs_at_once(storage, compat.trial_id(a), {"accuracy": 92.0})  # overwrites, like set_user_attr
    for reader in (storage, JournalStorage(JournalFileBackend(path))):
        got = {t.number: t.user_attrs for t in optuna.load_study(study_name="s", storage=reader).trials}
        assert got[0] == {**attrs, "accuracy": 92.0} and got[1] == attrs


def test_user_attrs_at_once_declines_other_storages():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert compat.set_user_attrs_at_once(storage, compat.trial_id(trial), {"a": 1}) is False
    assert compat.set_user_attrs_at_once(compat.study_storage(study), compat.trial_id(trial), {}) is False
    assert study.trials[0].user_attrs == {}


# ---- Ray ---------------------------------------------------------------------------------------
@pytest.fixture
def searcher(tmp_path):
    pytest.importorskip("ray.tune.search.optuna")
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def space(trial):
        trial.suggest_int("x", 0, 3)

    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'r.db'}", study_name="r", directions=["maximize", "minimize"]
    )
    search = OptunaSearch(
        space,
        metric=["a", "b"],
        mode=["max", "min"],
        storage=compat.study_storage(study),
        study_name="r",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    return search, study


def test_optuna_search_trials_and_told(searcher):
    """`OptunaSearch._ot_trials` (Tune trial id -> the Optuna trial asked), `OptunaSearch._completed_trials`
    (the live set of Tune trial ids told, which `on_trial_complete` checks before telling again)."""
    searcher, study = searcher
    config = searcher.suggest("t1")
    assert set(config) == {"x"}
    trials = compat.optuna_search_trials(searcher)
    assert list(trials) == ["t1"] and isinstance(trials["t1"], optuna.trial.Trial)
    assert compat.optuna_search_told(searcher) == set()
    searcher.on_trial_complete("t1", {"a": 1.0, "b": 2.0})
    assert compat.optuna_search_told(searcher) == {"t1"}
    frozen = study.trials[0]  # the searcher's study shares the storage: the driver sees what it told
    assert frozen.values == [1.0, 2.0] and compat.trial_id(frozen) == compat.trial_id(trials["t1"])
    # a trial marked told from outside is not told again by the searcher
    searcher.suggest("t2")
    compat.optuna_search_told(searcher).add("t2")
    searcher.on_trial_complete("t2", {"a": 3.0, "b": 4.0})
    assert study.trials[1].state.name == "RUNNING"


def test_searcher_state_restores_metric_and_mode(searcher):
    """`Searcher._metric`, `Searcher._mode`: what the public `metric` and `mode` read, so a searcher pickled with
    only them comes back with its metric and mode."""
    searcher, _ = searcher
    state = compat.searcher_state(searcher)
    assert state == {"_metric": ["a", "b"], "_mode": ["max", "min"]}
    restored = type(searcher).__new__(type(searcher))
    restored.__dict__.update(pickle.loads(pickle.dumps(state)))
    assert restored.metric == ["a", "b"] and restored.mode == ["max", "min"]


def test_local_ray_address_lookup_exists():
    """`ray._private.services.canonicalize_bootstrap_address_or_die`: the lookup of `auto`; with no cluster
    started on this machine it raises ConnectionError (what `check_ray_address` turns into one line)."""
    services = pytest.importorskip("ray._private.services")
    assert callable(services.canonicalize_bootstrap_address_or_die)
    import inspect

    assert list(inspect.signature(services.canonicalize_bootstrap_address_or_die).parameters)[0] == "addr"


def test_exact_hypervolume_is_optunas_wfg():
    """Three minimised objectives: two boxes of volume 1 below (2, 2, 2) overlapping in a unit cube's eighth."""
    import numpy as np

    losses = np.array([[1.0, 1.0, 1.0], [1.5, 0.5, 1.0]])
    assert compat.exact_hypervolume(losses, np.array([2.0, 2.0, 2.0])) == pytest.approx(
        1.0 + 0.5 * 1.5 * 1.0 - 0.5 * 1.0 * 1.0
    )


# ---- accelerate --------------------------------------------------------------------------------------------------
def test_accelerate_hook_is_the_hook_add_hook_to_module_sets():
    """`module._hf_hook`: where a dispatched model's module computes (`execution_device`)."""
    import torch
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    module = torch.nn.Linear(2, 2)
    assert compat.accelerate_hook(module) is None
    hook = AlignDevicesHook(execution_device="cpu")
    add_hook_to_module(module, hook)
    assert compat.accelerate_hook(module) is hook and compat.accelerate_hook(module).execution_device == "cpu"
