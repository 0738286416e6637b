"""Where trials run: a registry of runners (`get_runner(name)`), each running a study's trials through the same
backend-neutral `TrialFactory`, its options validated by its own frozen dataclass (`runner_options_class(name)`).

The built-in runners register themselves, one module each: `local` (this process, `LocalOptions`) and `ray`
(Ray Tune on a local Ray instance or a cluster, `RayOptions`). Ray is imported only when the Ray runner runs (and by
`check_ray_address` to look up `auto`). The few private Optuna and Ray attributes the runners rely on are reached
through `toast._compat` alone (`trial_id`, `study_storage` are public here: the search needs them too).
`toast.runners.testing` holds the conformance check every runner passes.
"""

from .._compat import study_storage, trial_id
from ._address import RayAddressError, check_ray_address
from ._local import LocalOptions, LocalRunner, run_local
from ._ray import RayOptions, RayRunner
from ._runner import (
    Runner,
    get_runner,
    list_runners,
    register_runner,
    runner_options_class,
)
from ._storage import set_user_attrs
from ._trial import TRIAL_ID, TRIAL_NUMBER, TrialFactory, TrialFunction
from ._worker import BuiltTrial, WorkerTrial

__all__ = [
    "TRIAL_ID",
    "TRIAL_NUMBER",
    "BuiltTrial",
    "LocalOptions",
    "LocalRunner",
    "RayAddressError",
    "RayOptions",
    "RayRunner",
    "Runner",
    "TrialFactory",
    "TrialFunction",
    "WorkerTrial",
    "check_ray_address",
    "get_runner",
    "list_runners",
    "register_runner",
    "run_local",
    "runner_options_class",
    "set_user_attrs",
    "study_storage",
    "trial_id",
]
