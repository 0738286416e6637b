"""The runner interface: the registry, each runner's options class, and the conformance check every registered
runner passes (`toast.runners.testing.check_runner`: the same toy study, the same factory, the same trials).

The local runner's check takes a second; the others are slow (the Ray runner starts a local Ray instance)."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest

from toast.errors import SettingsError
from toast.runners import (
    LocalOptions,
    RayOptions,
    get_runner,
    list_runners,
    register_runner,
    runner_options_class,
)
from toast.runners.testing import ToyTrials, check_runner, expected_trials


def _case(name: str):
    marks = [] if name == "local" else [pytest.mark.slow]
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_case(n) for n in list_runners()])
def test_every_runner_records_the_same_trials(name, tmp_path):
    if name == "ray":
        pytest.importorskip("ray")
    check_runner(name, directory=tmp_path)


def test_the_check_fails_a_runner_that_loses_a_trial(tmp_path):
    """The check is no formality: a runner that records one trial fewer is caught, by name."""
    from toast.runners import _runner

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Options:
        pass

    class Lossy:
        def check(self, options):
            pass

        def run(self, study, factory, *, n_trials, options, timeout=None, callbacks=(), directory=None):
            return get_runner("local").run(study, factory, n_trials=max(0, n_trials - 1), options=None)

    try:
        register_runner("lossy", Options)(Lossy)
        assert list_runners()[-1] == "lossy" and runner_options_class("lossy") is Options
        with pytest.raises(AssertionError, match="runner 'lossy'"):
            check_runner("lossy", directory=tmp_path)
    finally:
        _runner._REGISTRY.pop("lossy", None)


def test_the_toy_study_has_a_failing_trial_and_pickles():
    states = [t["state"] for t in expected_trials()]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == len(states) - 1
    assert pickle.loads(pickle.dumps(ToyTrials())) == ToyTrials()


# ---- the registry -------------------------------------------------------------------------------------------------
def test_the_built_in_runners_are_registered_with_their_options():
    assert list_runners()[:2] == ("local", "ray")
    assert runner_options_class("local") is LocalOptions and runner_options_class("ray") is RayOptions
    assert type(get_runner("ray")).name == "ray" and get_runner("local").options_class is LocalOptions


def test_an_unknown_runner_is_refused_naming_the_known_ones():
    with pytest.raises(SettingsError, match=r"`runner` must be one of local, ray.*, got 'dask'"):
        get_runner("dask")
    with pytest.raises(SettingsError, match="got 'dask'"):
        runner_options_class("dask")


def test_register_runner_refuses_a_taken_name_and_loose_options():
    @dataclasses.dataclass(kw_only=True)  # not frozen
    class Loose:
        pass

    class NoRun:
        def check(self, options):
            pass

    with pytest.raises(ValueError, match="'local' is already registered"):
        register_runner("local", LocalOptions)(NoRun)
    with pytest.raises(ValueError, match="must be a frozen dataclass"):
        register_runner("loose", Loose)
    with pytest.raises(ValueError, match="NoRun lacks run"):
        register_runner("norun", LocalOptions)(NoRun)
    assert "loose" not in list_runners() and "norun" not in list_runners()


def test_a_runner_takes_only_its_own_options():
    with pytest.raises(TypeError, match="expected LocalOptions options, got RayOptions"):
        get_runner("local").check(RayOptions())
    get_runner("local").check(None)  # None: the runner's defaults
    get_runner("local").check(LocalOptions())


# ---- the Ray runner's options ---------------------------------------------------------------------------------------
HELP = {  # `toast-search --help` before the runners had options classes, word for word
    "ray_address": "--runner ray: address of an existing Ray cluster (default: $RAY_ADDRESS, else start a local Ray "
    "instance)",
    "cpus_per_trial": "--runner ray: CPUs each trial reserves (default: 1)",
    "gpus_per_trial": "--runner ray: GPUs each trial reserves, fractions allowed, e.g. 0.25 (default: 1 when the "
    "cluster has GPUs and --device is not cpu, else 0)",
    "max_concurrent": "--runner ray: at most this many trials at once (default: as many as the resources hold)",
    "max_failures": "--runner ray: retries of a trial whose worker died before it is recorded as failed (default: 2)",
}


def test_ray_options_carry_their_command_line_help_and_defaults():
    fields = {f.name: f for f in dataclasses.fields(RayOptions)}
    assert {name: f.metadata["help"] for name, f in fields.items()} == HELP
    assert all(f.default is None for f in fields.values())  # settings.json keeps writing null for each
    assert {name: f.metadata.get("type") for name, f in fields.items()} == {
        "ray_address": None,
        "cpus_per_trial": float,
        "gpus_per_trial": float,
        "max_concurrent": int,
        "max_failures": int,
    }
    assert dataclasses.fields(LocalOptions) == ()
    assert RayOptions().retries == 2 and RayOptions(max_failures=0).retries == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (dict(cpus_per_trial=math.nan), "`cpus_per_trial` must be a finite number, got nan"),
        (dict(gpus_per_trial=math.inf), "`gpus_per_trial` must be a finite number, got inf"),
        (dict(cpus_per_trial=-1.0), "`cpus_per_trial` must be >= 0, got -1.0"),
        (dict(max_failures=-1), "`max_failures` must be >= 0, got -1"),
        (dict(max_concurrent=0), "`max_concurrent` must be at least 1, got 0"),
        (
            dict(cpus_per_trial=0),
            "`cpus_per_trial` 0 needs `gpus_per_trial` above 0: a trial must ask for some resource",
        ),
        (
            dict(cpus_per_trial=-math.inf, max_concurrent=0),
            "`cpus_per_trial` must be a finite number, got -inf; `cpus_per_trial` must be >= 0, got -inf; "
            "`max_concurrent` must be at least 1, got 0",
        ),
    ],
)
def test_ray_options_list_every_problem_as_the_settings_did(values, message):
    with pytest.raises(SettingsError) as info:
        RayOptions(**values)
    assert str(info.value) == message


def test_ray_options_are_checked_without_starting_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    get_runner("ray").check(RayOptions(cpus_per_trial=0, gpus_per_trial=0.5))  # no address: a local Ray will start
    get_runner("ray").check(None)
