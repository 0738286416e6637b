"""The README's cluster job as it is written there ("Running on a Ray cluster"): `ray start --head`, then
`ray job submit --address http://<head>:<dashboard port> --working-dir . -- toast-search --runner ray ...` from the
project folder, on a one-node cluster on this machine; the job's front equals the local runner's.

Slow (a Ray head with its dashboard starts and stops; under a minute here). The head runs as `ray start --head
--block` so that this test owns it: ending that process stops the node's processes (and its process group
catches any left), where `ray stop` would end every Ray process on the machine (another test's, another user's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from toast.search.cli import main

pytest.importorskip("ray.dashboard")  # ray[default]: the dashboard and the jobs CLI
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]  # the project folder: the job's working directory, as in the README
BIN = Path(sys.executable).parent  # `ray` and `toast-search` of this environment
# No usage-stats prompt or upload, and no token authentication: Ray >= 2.5x turns it on for a head started when
# ~/.ray/auth_token exists (any local `ray.init()` writes one), and the jobs CLI would then need the token.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
SEARCH = (
    "--calib-samples",
    "16",
    "--probe-samples",
    "30",
    "--eval-samples",
    "20",
    "--max-removed",
    "1",
    "--sampler",
    "exhaustive",
    "--seed",
    "3",
    "--device",
    "cpu",
    "--no-progress",
)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _front(out: Path) -> dict[str, tuple[float, float]]:
    doc = json.loads((out / "front.json").read_text())
    return {json.dumps(r["spans"]): (r["accuracy"], r["gflops"]) for r in doc["front"]}


@dataclass(frozen=True)
class Head:
    gcs: str  # host:port, as `ray start --head` prints it
    dashboard: str  # http://host:port, where `ray job submit` goes
    env: dict[str, str]
    log: Path


def _stop(start: subprocess.Popen, grace: float = 30.0) -> None:
    """End the node: SIGTERM to `ray start --block` stops every process it started (Ray's own shutdown of that node,
    as `ray stop` does for all of them); SIGKILL to its process group for anything still there after `grace`."""
    if start.poll() is None:
        start.terminate()
        try:
            start.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(start.pid, signal.SIGKILL)  # `ray start` ran in a session of its own: its pid is the group's
    except (ProcessLookupError, PermissionError):
        pass
    start.wait()


@pytest.fixture
def ray_head(tmp_path):
    """A one-node Ray cluster on this machine (dashboard on 127.0.0.1, free ports), in a temp dir of its own.
    Ray itself reports the machine's own IP as the node's even when given 127.0.0.1; the GCS answers on both."""
    env = {**os.environ, **RAY_ENV, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    temp = tempfile.mkdtemp(
        prefix="toast-ray-", dir="/tmp" if os.path.isdir("/tmp") else None
    )  # Ray's socket paths must stay short
    gcs, dashboard, client, agent = _free_ports(4)
    log = tmp_path / "ray-start.log"
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--port",
        str(gcs),
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--include-dashboard",
        "true",
        "--ray-client-server-port",
        str(client),
        "--dashboard-agent-listen-port",
        str(agent),
        "--num-cpus",
        "2",
        "--num-gpus",
        "0",
        "--temp-dir",
        temp,
        "--disable-usage-stats",
    ]
    with log.open("w") as f:
        start = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while True:  # the jobs API answers once the node is up and the dashboard has loaded its modules
            assert start.poll() is None, f"`ray start --head` failed:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/api/jobs/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the dashboard at {url} did not answer:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield Head(gcs=f"127.0.0.1:{gcs}", dashboard=url, env=env, log=log)
    finally:
        _stop(start)
        shutil.rmtree(temp, ignore_errors=True)


def test_readme_cluster_job_front_equals_local_front(tiny_dirs, image_dataset_dir, tmp_path, ray_head):
    from toast.runners import RayAddressError, check_ray_address

    # the address check passes a running GCS, and refuses the dashboard's port given in its place, in seconds
    assert check_ray_address(ray_head.gcs) == ray_head.gcs
    dashboard = ray_head.dashboard.removeprefix("http://")
    with pytest.raises(RayAddressError, match=f"cannot reach the Ray cluster at {dashboard}: "):
        check_ray_address(dashboard)

    cache, job_out, local_out = tmp_path / "cache", tmp_path / "job", tmp_path / "local"
    paths = ("--model", str(tiny_dirs["vit"]), "--dataset", str(image_dataset_dir), "--cache-dir", str(cache))

    # the README's job command: the project folder as the working directory, absolute paths for the search
    job = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        ray_head.dashboard,
        "--working-dir",
        ".",
        "--",
        "toast-search",
        "--runner",
        "ray",
        *paths,
        *SEARCH,
        "--out",
        str(job_out),
    ]
    start = time.monotonic()
    done = subprocess.run(job, cwd=ROOT, env=ray_head.env, capture_output=True, text=True, timeout=300, check=False)
    took = time.monotonic() - start
    assert done.returncode == 0, f"the job failed after {took:.0f} s:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "succeeded" in done.stdout, done.stdout[-2000:]

    assert main([*paths, *SEARCH, "--out", str(local_out)]) == 0
    local, on_cluster = _front(local_out), _front(job_out)
    assert local.keys() == on_cluster.keys() and local
    for key, (acc, gflops) in local.items():
        assert on_cluster[key] == pytest.approx((acc, gflops), abs=1e-9)
    # the trials ran as Ray Tune trials on the job's cluster (Tune's results are in the run directory)
    assert (job_out / "ray").is_dir()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from toast.search._storage import open_storage

    storage = open_storage(job_out)  # the run's study file (a journal), written by the driver on the cluster
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert trials and all(t.state.name == "COMPLETE" and "ray_node" in t.user_attrs for t in trials)
