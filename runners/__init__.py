"""Where trials run: in this process (`run_local`) or on Ray (`run_ray`). Runners call a trial function they are given.

Ray is imported only when `run_ray` runs.
"""

from ._local import run_local
from ._ray import RayOptions, run_ray
from ._storage import set_user_attrs

__all__ = ["RayOptions", "run_local", "run_ray", "set_user_attrs"]
