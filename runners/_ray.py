"""The Ray runner (`ray`): trials spread over a Ray cluster's CPUs and GPUs by Ray Tune, the study kept in Optuna.

Ray Tune's `Tuner` drives `OptunaSearch` over the same Optuna storage and study as the local runner,
so the study file stays the single record of the search (resume, `trials.csv`, the front). The
sampler asks on the driver through the trial factory's define-by-run `define(trial)` (a dict of
constants for the worker); each Tune trial calls the trial function a worker built once from the
pickled factory (`WorkerTrial`, reused across its trials) and reports `(values, attrs)`; a Tune
callback on the driver writes the attrs into the Optuna trial before the searcher tells Optuna the
values. A trial that raises is reported with its reason and recorded FAIL; a worker that dies is
retried (`max_failures`), then recorded FAIL with Ray's error. Nothing here imports Ray until a run
starts (or `check` looks up the address `auto`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from toast.errors import SettingsError

from .._compat import optuna_search_told, optuna_search_trials, searcher_state, study_storage, trial_id
from ._address import check_ray_address, ray_address
from ._runner import register_runner, validated
from ._storage import set_user_attrs
from ._trial import TRIAL_ID, TRIAL_NUMBER, TrialFactory
from ._worker import WorkerTrial

__all__ = ["RayOptions", "RayRunner"]

TOKEN = TRIAL_ID  # the Optuna trial's storage id, in every Tune trial's config
NUMBER = TRIAL_NUMBER  # the Optuna trial number (names the Tune trial)
ATTRS = "toast_attrs"  # reported: the attrs to store, as JSON
ERROR = "toast_error"  # reported: why the trial function raised ("" when it did not)
CRASH_ENV = (
    "TOAST_RAY_CRASH_ONCE"  # tests: "<trial number>:<marker file>" kills the worker on that trial's first attempt
)
STOPPED = "interrupted: the Ray search stopped (Ctrl-C, --timeout or a driver error) before this trial finished"
DEFAULT_CPUS_PER_TRIAL = 1.0
DEFAULT_MAX_FAILURES = 2


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    """Where and how trials run on Ray: the Ray runner's command-line options (`--runner ray`).

    None means the default each help names: `ray_address` `$RAY_ADDRESS`, else a local Ray instance starts;
    `cpus_per_trial` 1; `gpus_per_trial` 1 when the cluster has GPUs and the trials' device is not cpu, else 0
    (fractions allowed); `max_concurrent` as many trials as the resources hold; `max_failures` 2. Values out of
    range raise `SettingsError` listing every problem, named as the settings name them.
    """

    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "--runner ray: address of an existing Ray cluster (default: $RAY_ADDRESS, else start a local "
            "Ray instance)"
        },
    )
    cpus_per_trial: float | None = field(
        default=None, metadata={"help": "--runner ray: CPUs each trial reserves (default: 1)", "type": float}
    )
    gpus_per_trial: float | None = field(
        default=None,
        metadata={
            "help": "--runner ray: GPUs each trial reserves, fractions allowed, e.g. 0.25 (default: 1 when the "
            "cluster has GPUs and --device is not cpu, else 0)",
            "type": float,
        },
    )
    max_concurrent: int | None = field(
        default=None,
        metadata={
            "help": "--runner ray: at most this many trials at once (default: as many as the resources hold)",
            "type": int,
        },
    )
    max_failures: int | None = field(
        default=None,
        metadata={
            "help": "--runner ray: retries of a trial whose worker died before it is recorded as failed (default: 2)",
            "type": int,
        },
    )

    def __post_init__(self) -> None:
        problems = []
        for name in ("cpus_per_trial", "gpus_per_trial"):  # NaN passes every comparison below: refused here
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                problems.append(f"`{name}` must be a finite number, got {value!r}")
        for name in ("cpus_per_trial", "gpus_per_trial", "max_failures"):
            if (getattr(self, name) or 0) < 0:
                problems.append(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            problems.append(f"`max_concurrent` must be at least 1, got {self.max_concurrent}")
        if self.cpus_per_trial == 0 and not self.gpus_per_trial:
            problems.append("`cpus_per_trial` 0 needs `gpus_per_trial` above 0: a trial must ask for some resource")
        if problems:
            raise SettingsError("; ".join(problems))

    @property
    def retries(self) -> int:
        """How often Tune retries a trial whose worker died (`max_failures`, default 2)."""
        return DEFAULT_MAX_FAILURES if self.max_failures is None else self.max_failures


# ---- pure pieces (testable without Ray) -------------------------------------------------------
def tune_space(define: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """The define-by-run space for `OptunaSearch`: `define(trial)` plus the token naming the Optuna trial."""

    def space(trial) -> dict[str, Any]:
        return {**define(trial), TOKEN: trial_id(trial), NUMBER: trial.number}

    return space


def resources_per_trial(options: RayOptions, cluster: dict[str, float], device: str = "auto") -> dict[str, float]:
    """CPUs and GPUs one trial asks Ray for; `device` is where the trials compute (the factory's)."""
    gpus = options.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if cluster.get("GPU", 0) >= 1 and device != "cpu" else 0.0
    # `or`: 0 CPUs reads as the default too, as the command line always has (`cpus_per_trial` 0 asks for 1 CPU)
    return {"cpu": float(options.cpus_per_trial or DEFAULT_CPUS_PER_TRIAL), "gpu": float(gpus)}


def default_concurrency(resources: dict[str, float], cluster: dict[str, float]) -> int:
    """How many trials the cluster's resources hold at once (at least 1)."""
    slots = []
    if resources["cpu"] > 0:
        slots.append(int(cluster.get("CPU", 1) // resources["cpu"] + 1e-9))
    if resources["gpu"] > 0:
        slots.append(int(cluster.get("GPU", 0) / resources["gpu"] + 1e-9))
    return max(1, min(slots) if slots else 1)


def failure_reason(error_file: str | None, attempts: int, max_failures: int, log: str | None = None) -> str:
    """One line for a trial Tune gave up on: how often it failed and the last failure's error, from Tune's
    error file; `log` says where Tune keeps the whole error (default: `error_file`)."""
    text = ""
    if error_file and os.path.isfile(error_file):
        blocks = Path(error_file).read_text(errors="replace").split("Failure # ")
        lines = [ln.strip() for ln in blocks[-1].splitlines()[1:] if ln.strip()]
        text = next((ln for ln in lines if "Error" in ln or "died" in ln), lines[0] if lines else "")
    log = log or error_file
    where = f"; Tune's log: {log}" if log else ""
    return f"the Ray trial failed {attempts} time(s) (--max-failures {max_failures}): {text[:400] or 'worker error'}{where}"


# ---- the worker side --------------------------------------------------------------------------
def _maybe_crash(spec: str | None, config: dict) -> None:
    """Test knob: kill this worker process (as a lost node would) on one trial's first attempt."""
    if not spec:
        return
    number, _, marker = spec.partition(":")
    if int(number) == int(config[NUMBER]) and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)


def _trainable(config: dict, *, worker: WorkerTrial, metrics: Sequence[str], crash: str | None = None) -> None:
    """One Tune trial: the worker's trial function (built on first use), its values and attrs reported once."""
    import ray
    from ray import tune

    attrs: dict[str, Any] = {}
    error = ""
    values = {m: math.nan for m in metrics}
    built = None
    try:
        built = worker.get()
        if built.trials == 0:
            attrs["ray_worker_setup_seconds"] = built.setup_seconds
        built.trials += 1
        _maybe_crash(crash, config)
        values, extra = built.function(config)
        attrs.update(extra)
    except Exception as exc:  # recorded FAIL with its reason by the driver, never dropped
        error = f"{type(exc).__name__}: {exc}"
    attrs.update(
        ray_node=ray.get_runtime_context().get_node_id(),
        ray_host=socket.gethostname(),
        ray_pid=os.getpid(),
        ray_worker_trials=built.trials if built else 0,
    )
    tune.report({**values, ATTRS: json.dumps(attrs, default=float), ERROR: error})


def _trial_name(trial) -> str:
    return f"trial-{int(trial.config[NUMBER]):05d}"


# ---- the driver side ----------------------------------------------------------------------------
@cache
def _tune_classes():
    """The Tune callback and searcher (defined on first use, so that importing this module needs no Ray)."""
    import optuna
    from ray.tune import Callback
    from ray.tune.search.optuna import OptunaSearch

    FAIL = optuna.trial.TrialState.FAIL

    class StudyCallback(Callback):
        """Writes each reported trial's attrs into its Optuna trial (found by the config's token) while it
        still runs, then calls the runner's hooks `(study, FrozenTrial)` once Optuna has its outcome."""

        def __init__(self, study, storage, hooks: Sequence[Callable], max_failures: int) -> None:
            self.study = study
            self.storage = storage
            self.hooks = list(hooks)
            self.max_failures = max_failures
            self.trials: dict[str, Any] = {}  # Tune trial id -> Tune trial, for the failure reason

        def __getstate__(self) -> dict:  # Tune pickles its run config into tuner.pkl: keep live objects out
            return {"max_failures": self.max_failures}

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self.trials[trial.trial_id] = trial

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            set_user_attrs(self.storage, trial.config[TOKEN], json.loads(result.get(ATTRS) or "{}"))

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._finished(trial)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._finished(trial)

        def _finished(self, trial) -> None:
            frozen = self.storage.get_trial(trial.config[TOKEN])
            for hook in self.hooks:
                hook(self.study, frozen)

        def reason(self, tune_trial_id: str) -> str:
            trial = self.trials.get(tune_trial_id)
            if trial is None:
                return "the Ray trial failed"
            log = f"{trial.path}/{os.path.basename(trial.error_file)}" if trial.path and trial.error_file else None
            return failure_reason(trial.error_file, trial.run_metadata.num_failures, self.max_failures, log)

    class StudySearch(OptunaSearch):
        """`OptunaSearch` that records why a trial failed (Optuna stores no reason) and is never pickled whole."""

        def __init__(self, *args, callback: StudyCallback, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.callback = callback  # with the driver's study and its storage: the searcher's own study shares it

        def __getstate__(self) -> dict:  # the study is the state: resume goes through the Optuna storage
            return searcher_state(self)

        def save(self, checkpoint_path: str) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ot_trial = optuna_search_trials(self).get(trial_id)
            if ot_trial is None or trial_id in optuna_search_told(self):
                return super().on_trial_complete(trial_id, result, error)
            if error:
                reason = self.callback.reason(trial_id)
            elif result and result.get(ERROR):
                reason = result[ERROR]
            elif not result or any(m not in result for m in self.metric):
                reason = STOPPED
            else:
                return super().on_trial_complete(trial_id, result, error)
            self.fail(trial_id, reason)

        def fail(self, tune_trial_id: str, reason: str) -> None:
            ot_trial = optuna_search_trials(self)[tune_trial_id]
            storage, study = self.callback.storage, self.callback.study
            if not storage.get_trial(trial_id(ot_trial)).state.is_finished():
                storage.set_trial_system_attr(trial_id(ot_trial), "fail_reason", reason)
                study.tell(ot_trial.number, state=FAIL)
            optuna_search_told(self).add(tune_trial_id)

        def fail_unfinished(self, reason: str) -> int:
            """Trials asked but never told (the run stopped under them): FAIL with `reason`."""
            told = optuna_search_told(self)
            left = [t for t in optuna_search_trials(self) if t not in told]
            for t in left:
                self.fail(t, reason)
            return len(left)

    return StudyCallback, StudySearch


@contextlib.contextmanager
def _ray_session(options: RayOptions, num_cpus: int | None):
    """Join the cluster at `options.ray_address` (or `$RAY_ADDRESS`), use one already joined, or start a local one
    with `num_cpus` (all cores when None)."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = ray_address(options.ray_address)
    check_ray_address(address)  # `ray.init` would retry an address nothing answers at for minutes
    kwargs = dict(address=address) if address else dict(num_cpus=num_cpus, include_dashboard=False)
    ray.init(**kwargs, log_to_driver=True, configure_logging=True, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _driver_env():
    """While Tune runs: Ctrl-C raises KeyboardInterrupt in the driver, as in the local runner (Tune's own
    handler would stop gracefully and return as if the search had finished), and Tune prints nothing on
    stdout (its new output engine prints a header even at verbose=0)."""
    wanted = {"TUNE_DISABLE_SIGINT_HANDLER": "1", "RAY_AIR_NEW_OUTPUT": "0"}
    previous = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@register_runner("ray", RayOptions)
class RayRunner:
    """Trials on Ray Tune: asked on the driver (`factory.define`), run by workers that build the factory's trial
    function once per process (`WorkerTrial`), reported back and recorded in the study by the driver."""

    def check(self, options: RayOptions | None) -> None:
        """Valid options, and a cluster that answers at `ray_address` (or `$RAY_ADDRESS`) when one is given:
        `RayAddressError` in seconds otherwise (no Ray started, nothing joined)."""
        options = validated(options, RayOptions)
        check_ray_address(options.ray_address)

    def run(
        self,
        study: Any,
        factory: TrialFactory,
        *,
        n_trials: int,
        options: RayOptions | None,
        timeout: float | None = None,
        callbacks: Sequence[Callable] = (),
        directory: Path | None = None,
        reuse_actors: bool = True,
        num_cpus: int | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Run `n_trials` more trials of the Optuna `study` on Ray Tune; returns a summary (resources, concurrency,
        where Tune's results are: `<directory>/ray/<name>`).

        `reuse_actors`: a worker process runs many trials (its trial function built once); `num_cpus`: the CPUs of
        a local Ray instance started here (all cores when None); `name`: Tune's name for the run (default
        `toast-<time>-<pid>`)."""
        options = validated(options, RayOptions)
        if n_trials <= 0:
            return {"trials": 0}
        import ray
        from ray import tune

        metrics = list(factory.metrics)
        if len(metrics) != len(study.directions):
            raise ValueError(
                f"the ray runner: {len(metrics)} metric names for a study with {len(study.directions)} objectives"
            )
        modes = ["max" if d.name == "MAXIMIZE" else "min" for d in study.directions]
        storage = study_storage(study)
        worker = WorkerTrial.of(factory)  # pickled: the factory's driver side stays here
        StudyCallback, StudySearch = _tune_classes()
        with _ray_session(options, num_cpus), _driver_env():
            cluster = ray.cluster_resources()
            resources = resources_per_trial(options, cluster, factory.device)
            concurrency = options.max_concurrent or default_concurrency(resources, cluster)
            callback = StudyCallback(study, storage, callbacks, options.retries)
            searcher = StudySearch(
                tune_space(factory.define),
                metric=metrics,
                mode=modes,
                sampler=study.sampler,
                storage=storage,
                study_name=study.study_name,
                callback=callback,
            )
            trainable = tune.with_resources(
                tune.with_parameters(_trainable, worker=worker, metrics=metrics, crash=os.environ.get(CRASH_ENV)),
                resources,
            )
            storage_path = ((directory if directory is not None else Path.cwd()) / "ray").resolve()
            name = name or f"toast-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    num_samples=n_trials,
                    max_concurrent_trials=concurrency,
                    reuse_actors=reuse_actors,
                    time_budget_s=timeout,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=str(storage_path),
                    callbacks=[callback],
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=options.retries),
                ),
            )
            try:
                tuner.fit()
            except KeyboardInterrupt:
                searcher.fail_unfinished("interrupted: Ctrl-C (KeyboardInterrupt) while this trial ran on Ray")
                raise
            finally:
                searcher.fail_unfinished(STOPPED)
        return {
            "trials": n_trials,
            "resources_per_trial": resources,
            "max_concurrent": concurrency,
            "cluster": {k: cluster.get(k, 0) for k in ("CPU", "GPU")},
            "results": str(storage_path / name),
        }
