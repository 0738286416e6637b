"""Named fault points, for the fault-injection tests (`tests/search/test_faults.py`): a run can be killed (SIGKILL, as
`kill -9` would) or given a full disk at each stage that writes something, and the test checks that the same command
run again finishes with the same front as an undisturbed run.

`TOAST_FAULT=<point>[@<n>][:<action>]` acts at the n-th time (default 1) this process reaches `fault_point(point)`:
`kill` (the default) or `enospc` (an `OSError(ENOSPC)` raised there, as a write to a full disk raises it). Unset, a
fault point costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

__all__ = ["FAULT_ENV", "POINTS", "fault_point"]

FAULT_ENV = "TOAST_FAULT"
#: every point the product passes, in the order a run reaches them
POINTS = ("capture", "latency", "prefix", "trial", "finalize", "chosen", "export")
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Kill this process, or raise a full disk, when `TOAST_FAULT` names this point (and this is its n-th pass)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, action = spec.partition(":")
    point, _, nth = target.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] != int(nth or 1):
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device", f"<{name}>")
    os.kill(os.getpid(), signal.SIGKILL)
