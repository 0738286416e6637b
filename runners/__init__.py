"""Where trials run: in this process (`run_local`) or on Ray. Runners call a trial function they are given."""

from ._local import run_local

__all__ = ["run_local"]
