"""Where trials run: in this process (`run_local`) or on Ray (`run_ray`). Runners call a trial function they are given.

Ray is imported only when `run_ray` runs (and by `check_ray_address` to look up `auto`).
"""

from ._address import RayAddressError, check_ray_address, check_runner
from ._local import run_local
from ._ray import RayOptions, run_ray
from ._storage import set_user_attrs

__all__ = ["RayAddressError", "RayOptions", "check_ray_address", "check_runner", "run_local", "run_ray", "set_user_attrs"]
