"""`compile`: the whole model through `torch.compile` (TorchInductor's default mode), as a server that compiles its
model at start-up runs it. Compiling takes seconds to minutes per model; it happens in `prepare`, never in a timed
call.

Dynamo keeps the compiled code of a function per guard set, and every compressed model shares one `forward`: past
its recompile limit (8 graphs) dynamo silently runs eager. Models timed side by side (`side_by_side`) are compiled
together with the limit raised to hold them all, dynamo's caches cleared before and after; the first call after
another model's tests the other models' guards (microseconds), and for a fast model it is the untimed call before its
burst (`interleaved_times`). A model prepared alone is compiled alone (`release` first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from ._eager import decode_call, forward_call
from ._registry import DECODE, PREFILL, Runtime, register_runtime

if TYPE_CHECKING:
    from toast.models import CompressedModel

__all__ = ["CompileRuntime"]

WARM_CALLS = 2  # the first call compiles, the second runs the compiled code once (lazy initialisations)
#: dynamo's limit on graphs per function (`cache_size_limit` before torch 2.6)
RECOMPILE_LIMIT = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


class CompileRuntime(Runtime):
    name = "compile"
    help = "torch.compile of the whole model (TorchInductor, default mode; compiled once per model, not timed)"
    devices = ("cpu", "cuda")
    modes = (PREFILL, DECODE)
    _together = False  # inside `side_by_side`: the models prepared keep one another's graphs

    def release(self) -> None:
        """Drop every compiled graph (dynamo's caches): the next model is compiled alone."""
        torch._dynamo.reset()

    @contextlib.contextmanager
    def side_by_side(self, n: int) -> Iterator[None]:
        """`n` models compiled together: dynamo's caches cleared, its recompile limit raised to hold `n` graphs."""
        self.release()
        limit = max(int(getattr(torch._dynamo.config, RECOMPILE_LIMIT)), n + 1)
        self._together = True
        try:
            with torch._dynamo.config.patch(**{RECOMPILE_LIMIT: limit}):
                yield
        finally:
            self._together = False
            self.release()

    def prepare(self, model: CompressedModel, inputs: dict[str, Any], *, mode: str = PREFILL) -> Callable[[], Any]:
        if not self._together:
            self.release()
        if mode == DECODE:  # the step itself compiled; the cache's bookkeeping stays Python, as in a server
            call = decode_call(torch.compile(model.decode_step), model, inputs)
        else:
            call = forward_call(torch.compile(model.export_module()), inputs)
        for _ in range(WARM_CALLS):
            call()
        return call


COMPILE = register_runtime(CompileRuntime())
