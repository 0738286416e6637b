"""The Ray runner (`--runner ray`): same front as the local runner, trials spread over a two-node cluster with
the capture done once, a killed worker neither loses the study nor a finished trial, and the search resumes.

Slow: each test starts Ray (a local instance, or a two-node `ray.cluster_utils.Cluster` on this machine) and
shuts it down afterwards. The pure pieces of the runner are tested without Ray at the end.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from toast.runners import _ray as ray_runner
from toast.search.cli import main

ray = pytest.importorskip("ray")
slow = pytest.mark.slow


def _args(tiny_dirs, data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(tiny_dirs["vit"]),
        "--dataset",
        str(data),
        "--calib-samples",
        "16",
        "--probe-samples",
        "30",
        "--eval-samples",
        "20",
        "--max-removed",
        "2",
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _study(out: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from toast.search import load_run_study

    return load_run_study(out)


def _front(out: Path) -> dict[str, tuple[float, float]]:
    doc = json.loads((out / "front.json").read_text())
    return {json.dumps(r["spans"]): (r["accuracy"], r["gflops"]) for r in doc["front"]}


def _capture_entries(cache: Path) -> list[Path]:
    return [p.parent for p in (cache / "activations").glob("*/manifest.json")]


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@slow
def test_ray_front_equals_local_front(tiny_dirs, image_dataset_dir, tmp_path, local_ray):
    cache = tmp_path / "cache"
    exhaustive = ("--sampler", "exhaustive", "--seed", "3")
    assert main(_args(tiny_dirs, image_dataset_dir, cache, tmp_path / "local", *exhaustive)) == 0
    assert main(_args(tiny_dirs, image_dataset_dir, cache, tmp_path / "ray", *exhaustive, "--runner", "ray")) == 0

    local, on_ray = _front(tmp_path / "local"), _front(tmp_path / "ray")
    assert local.keys() == on_ray.keys() and local
    for key, (acc, gflops) in local.items():
        assert on_ray[key] == pytest.approx((acc, gflops), abs=1e-9)
    trials = _study(tmp_path / "ray").trials
    assert len(trials) == 33 and all(t.state.name == "COMPLETE" for t in trials)  # 4 blocks, 2 kinds, <= 2 removed
    assert {json.dumps(t.user_attrs["spans"]) for t in trials} == {
        json.dumps(t.user_attrs["spans"]) for t in _study(tmp_path / "local").trials
    }
    # each worker built its context once (from the cache) and ran many trials: actors are reused
    workers = {t.user_attrs["ray_pid"] for t in trials}
    assert len(workers) <= 2
    assert sum("ray_worker_setup_seconds" in t.user_attrs for t in trials) == len(workers)
    assert all(t.user_attrs["ray_worker_cache_hit"] for t in trials)
    csv = (tmp_path / "ray" / "trials.csv").read_text().splitlines()
    assert csv[0] == (tmp_path / "local" / "trials.csv").read_text().splitlines()[0] and len(csv) == 34
    assert (tmp_path / "ray" / "ray").is_dir()  # Tune's own results


@slow
def test_two_node_cluster_spreads_trials_and_captures_once(tiny_dirs, image_dataset_dir, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cache, out = tmp_path / "cache", tmp_path / "run"
        args = _args(
            tiny_dirs,
            image_dataset_dir,
            cache,
            out,
            "--sampler",
            "random",
            "--trials",
            "8",
            "--runner",
            "ray",
            "--ray-address",
            cluster.address,
        )
        assert main(args) == 0
        nodes = {n.node_id for n in [cluster.head_node, *cluster.worker_nodes]}
    finally:
        ray.shutdown()
        cluster.shutdown()

    trials = [t for t in _study(out).trials if "ray_node" in t.user_attrs]
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert {t.user_attrs["ray_node"] for t in trials} == nodes  # both nodes ran trials
    # the capture ran once, on the driver: one cache entry, and every worker read it (no capture pass there)
    assert len(_capture_entries(cache)) == 1
    assert all(t.user_attrs["ray_worker_cache_hit"] for t in trials)
    assert len({(t.user_attrs["ray_node"], t.user_attrs["ray_pid"]) for t in trials}) == 2  # one reused worker per node


@slow
def test_the_default_sampler_steps_from_the_front_on_ray(tiny_dirs, image_dataset_dir, tmp_path, local_ray):
    """`tpe-local` asks on the driver through Ray Tune's searcher: its local steps and untried-plan replacements are
    the trials' plans, and no plan is scored twice."""
    from toast.search.samplers import PROPOSED_BY

    cache, out = tmp_path / "cache", tmp_path / "run"
    # no removal limit: a plan past it is not scored, and TPE's first draws would leave too few fully scored plans
    # for the local steps to start within 16 trials
    extra = ("--trials", "16", "--runner", "ray", "--max-concurrent", "1", "--max-removed", "4")
    assert main(_args(tiny_dirs, image_dataset_dir, cache, out, *extra)) == 0
    trials = _study(out).trials
    assert len(trials) == 16 and all(t.state.name == "COMPLETE" for t in trials)
    steps = [t for t in trials if t.system_attrs.get(PROPOSED_BY) == "front-neighbour"]
    assert steps and all(t.number % 2 == 0 for t in steps)
    assert not any("duplicate_of" in t.user_attrs for t in trials)


@slow
def test_killed_worker_keeps_the_study_and_resume_completes(
    tiny_dirs, image_dataset_dir, tmp_path, monkeypatch, local_ray
):
    cache, out = tmp_path / "cache", tmp_path / "run"
    args = _args(tiny_dirs, image_dataset_dir, cache, out, "--sampler", "random", "--trials", "6", "--runner", "ray")

    # 1. no retries: the worker running trial 2 dies mid-trial; the trial is recorded FAIL with Ray's reason
    monkeypatch.setenv(ray_runner.CRASH_ENV, f"2:{tmp_path / 'crashed-2'}")
    assert main([*args, "--max-failures", "0"]) == 0
    assert (tmp_path / "crashed-2").exists()
    first = {t.number: t for t in _study(out).trials}
    assert sorted(first) == list(range(6))
    assert first[2].state.name == "FAIL" and "failed 1 time" in first[2].system_attrs["fail_reason"]
    assert all(t.state.name == "COMPLETE" for n, t in first.items() if n != 2)
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 7 and "failed 1 time" in next(r for r in rows if r.startswith("2,FAIL"))

    # 2. resume: the finished trials are kept and not rerun; the one missing trial runs, and the worker that
    #    dies under it this time is retried (FailureConfig), so the study completes
    monkeypatch.setenv(ray_runner.CRASH_ENV, f"6:{tmp_path / 'crashed-6'}")
    assert main(args) == 0
    assert (tmp_path / "crashed-6").exists()
    after = {t.number: t for t in _study(out).trials}
    assert sorted(after) == list(range(7))
    assert sum(t.state.name == "COMPLETE" for t in after.values()) == 6
    for n, t in first.items():
        assert after[n].state == t.state and after[n].user_attrs == t.user_attrs
    assert after[6].state.name == "COMPLETE" and after[6].user_attrs["ray_pid"] != int(
        (tmp_path / "crashed-6").read_text()
    )


@slow
def test_a_trial_that_raises_is_recorded_failed_with_its_reason(tiny_dirs, image_dataset_dir, tmp_path, local_ray):
    """A worker whose context cannot be built (here: the cache entry vanished) fails its trials with the reason."""
    from toast.runners import RayOptions, get_runner
    from toast.search import SearchSettings
    from toast.search._context import SearchContext
    from toast.search._study import Search
    from toast.search._trial import SearchTrials

    settings = SearchSettings.from_flat(
        model=str(tiny_dirs["vit"]),
        dataset=str(image_dataset_dir),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        calib_samples=16,
        probe_samples=30,
        eval_samples=20,
        max_removed=2,
        sampler="random",
        trials=2,
        device="cpu",
        progress=False,
        runner="ray",
        seeds_per_study=0,
    )
    ctx = SearchContext.build(settings, progress=False)
    search = Search(settings, space=ctx.space, costs=ctx.costs, evaluate=ctx.evaluate)
    seen = []
    get_runner("ray").run(
        search.study,
        SearchTrials.of(settings, capture=tmp_path / "nowhere", search=search),
        n_trials=2,
        options=RayOptions(max_failures=0),
        callbacks=[lambda s, t: seen.append(t)],
        directory=tmp_path,
    )
    records = search.records()
    assert [r["state"] for r in records] == ["FAIL", "FAIL"] and len(seen) == 2
    assert all("CacheError" in r["failure"] and "not visible on this node" in r["failure"] for r in records)
    assert all(r["spans"] is not None for r in records)


# ---- without Ray ------------------------------------------------------------------------------------
def test_importing_runners_does_not_import_ray():
    import subprocess

    code = "import sys, toast.runners, toast.search.cli; print('ray' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_space_adds_the_token():
    import optuna

    from toast.runners import trial_id

    storage = optuna.storages.InMemoryStorage()
    other, study = optuna.create_study(storage=storage), optuna.create_study(storage=storage)
    other.ask(), other.ask()
    trial = study.ask()  # the storage's third trial, its study's first: the token is the storage id, not the number
    assert trial_id(trial) == 2 and trial.number == 0
    assert ray_runner.tune_space(lambda t: {"spans": "[]"})(trial) == {
        "spans": "[]",
        ray_runner.TOKEN: 2,
        ray_runner.NUMBER: 0,
    }


def test_worker_trial_is_built_once_per_process_and_key(monkeypatch):
    from toast.runners import WorkerTrial, _worker

    monkeypatch.setattr(_worker, "_BUILT", None)
    built = []

    def factory():
        built.append(len(built))
        n = len(built)
        return lambda config: ({"a": float(n)}, {"x": config["x"]})

    first = WorkerTrial(factory=factory, key="search-1")
    one = first.get()
    assert built == [0] and one.trials == 0 and one.setup_seconds >= 0 and one.key == "search-1"
    assert (
        first.get() is one and WorkerTrial(factory=factory, key="search-1").get() is one and built == [0]
    )  # reused, not rebuilt
    assert one.function({"x": 3}) == ({"a": 1.0}, {"x": 3})
    other = WorkerTrial(factory=factory, key="search-2").get()  # another search in the same process: built afresh
    assert built == [0, 1] and other is not one and other.function({"x": 0})[0] == {"a": 2.0}


def test_search_worker_trial_pickles_with_what_a_worker_needs(tiny_dirs, monkeypatch):
    import pickle

    from toast.runners import WorkerTrial
    from toast.search import SearchSettings
    from toast.search._trial import SearchTrials

    monkeypatch.chdir(tiny_dirs["vit"].parent)  # relative paths, as a user types them
    settings = SearchSettings.from_flat(
        model="vit", dataset="an-alias-not-a-path", out=Path("run"), cache_dir=Path("cache"), runner="ray"
    )
    factory = SearchTrials.of(settings, capture=Path("cache") / "entry", search=object())  # a driver's search
    worker = WorkerTrial.of(factory)  # what the Ray runner sends
    assert isinstance(worker, WorkerTrial) and isinstance(worker.factory.factory, SearchTrials)
    back = pickle.loads(pickle.dumps(worker))
    assert back == worker and back.key == worker.key == back.factory.factory.key
    back = back.factory.factory
    assert back.search is None  # the driver's search never travels
    sent = back.settings
    assert (
        sent.model == str(tiny_dirs["vit"].resolve()) and sent.dataset == "an-alias-not-a-path"
    )  # Tune runs trials elsewhere
    assert sent.out.is_absolute() and sent.cache_dir.is_absolute() and not sent.progress
    assert back.capture == str((tiny_dirs["vit"].parent / "cache" / "entry").resolve())
    assert SearchTrials.of(settings.updated(seed=1), capture="cache/entry").key != worker.key


@pytest.mark.parametrize(
    "options, cluster, resources, slots",
    [
        (dict(), {"CPU": 8}, {"cpu": 1.0, "gpu": 0.0}, 8),
        (dict(), {"CPU": 16, "GPU": 2}, {"cpu": 1.0, "gpu": 1.0}, 2),
        (dict(device="cpu"), {"CPU": 16, "GPU": 2}, {"cpu": 1.0, "gpu": 0.0}, 16),
        (dict(gpus_per_trial=0.25, cpus_per_trial=2), {"CPU": 16, "GPU": 2}, {"cpu": 2.0, "gpu": 0.25}, 8),
        (dict(cpus_per_trial=4), {"CPU": 2}, {"cpu": 4.0, "gpu": 0.0}, 1),
    ],
)
def test_resources_and_concurrency(options, cluster, resources, slots):
    device = options.get("device", "auto")  # the trial factory's device
    given = {k: v for k, v in options.items() if k != "device"}
    got = ray_runner.resources_per_trial(ray_runner.RayOptions(**given), cluster, device)
    assert got == resources and ray_runner.default_concurrency(got, cluster) == slots


def test_failure_reason_reads_the_last_failure(tmp_path):
    log = tmp_path / "error.txt"
    log.write_text(
        "Failure # 1 (occurred at x)\nray.exceptions.ActorDiedError: The actor died unexpectedly\n\tdetails\n"
        "Failure # 2 (occurred at y)\nTraceback\nValueError: boom\n"
    )
    reason = ray_runner.failure_reason(str(log), 2, 1)
    assert reason.startswith("the Ray trial failed 2 time(s) (--max-failures 1): ValueError: boom")


def test_ray_options_need_the_ray_runner(tmp_path):
    from toast.errors import SettingsError
    from toast.search import SearchSettings

    with pytest.raises(SettingsError, match="`gpus_per_trial` needs `runner` ray.*`max_concurrent` must be at least 1"):
        SearchSettings.from_flat(model="m", dataset="d", out=tmp_path, gpus_per_trial=0.5, max_concurrent=0)
    SearchSettings.from_flat(model="m", dataset="d", out=tmp_path, runner="ray", gpus_per_trial=0.5, max_concurrent=3)


def test_user_attrs_written_in_one_go_equal_the_public_api(tmp_path):
    import optuna

    from toast.runners import study_storage, trial_id

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    a, b = study.ask(), study.ask()
    attrs = {"accuracy": 91.5, "spans": [[0, 2, "linear"]], "feasible": True, "ray_node": "n1"}
    ray_runner.set_user_attrs(study_storage(study), trial_id(a), attrs)
    for k, v in attrs.items():
        b.set_user_attr(k, v)
    ray_runner.set_user_attrs(study_storage(study), trial_id(a), {"accuracy": 92.0})  # overwrites, like set_user_attr
    got = {t.number: t.user_attrs for t in study.get_trials()}
    assert got[0] == {**attrs, "accuracy": 92.0} and got[1] == attrs


# ---- an address no Ray cluster answers at: one line, in seconds, before the run directory (no Ray started) ----
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: the connection is refused at once


def test_unreachable_ray_address_fails_fast_naming_it():
    from toast.runners import RayAddressError, check_ray_address
    from toast.spaces import ToastError

    start = time.monotonic()
    with pytest.raises(RayAddressError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1\b") as info:
        check_ray_address(UNREACHABLE)
    assert time.monotonic() - start < 10
    assert isinstance(info.value, ToastError) and "\n" not in str(info.value)


def test_ray_address_comes_from_the_environment(monkeypatch):
    from toast.runners import RayAddressError, check_ray_address, get_runner

    monkeypatch.setenv("RAY_ADDRESS", UNREACHABLE)
    with pytest.raises(RayAddressError, match="127.0.0.1:1"):
        check_ray_address(None)
    get_runner("local").check(None)  # the local runner never looks at it
    monkeypatch.delenv("RAY_ADDRESS")
    assert check_ray_address(None) is None and check_ray_address("local") is None  # a local Ray instance will start
    with pytest.raises(RayAddressError, match="'no-port' is not host:port"):
        check_ray_address("no-port")


def test_a_port_that_is_no_ray_gcs_fails_fast():
    """Something accepts the connection but never answers as a GCS (the dashboard's port, a proxy)."""
    pytest.importorskip("grpc")
    from toast.runners import RayAddressError, check_ray_address

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(
            RayAddressError, match=f"cannot reach the Ray cluster at {address}: no answer from a Ray GCS within 1 s"
        ):
            check_ray_address(address, timeout=1)
        assert time.monotonic() - start < 10


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_cli_unreachable_ray_address_exits_2_before_the_run_directory(tmp_path, capsys, dry_run):
    # model and dataset do not exist: had anything been loaded first, the error would name them instead
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [
        "--model",
        str(tmp_path / "no-model"),
        "--dataset",
        str(tmp_path / "no-data"),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--no-progress",
        "--runner",
        "ray",
        "--ray-address",
        UNREACHABLE,
        *(["--dry-run"] if dry_run else []),
    ]
    start = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("toast-search: error: cannot reach the Ray cluster at 127.0.0.1:1"), err
    assert not out.exists() and not cache.exists()
