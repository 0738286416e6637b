"""Where trials run: in this process (`run_local`) or on Ray (`run_ray`). Runners call a trial function they are given.

Ray is imported only when `run_ray` runs (and by `check_ray_address` to look up `auto`). The few private Optuna
and Ray attributes the runners rely on are reached through `toast._compat` alone (`trial_id`,
`study_storage` are public here: the search needs them too).
"""

from .._compat import study_storage, trial_id
from ._address import RayAddressError, check_ray_address, check_runner
from ._local import run_local
from ._ray import RayOptions, run_ray
from ._storage import set_user_attrs
from ._worker import BuiltTrial, TrialFunction, WorkerTrial

__all__ = [
    "BuiltTrial",
    "RayAddressError",
    "RayOptions",
    "TrialFunction",
    "WorkerTrial",
    "check_ray_address",
    "check_runner",
    "run_local",
    "run_ray",
    "set_user_attrs",
    "study_storage",
    "trial_id",
]
