"""`compile`: the whole model through `torch.compile` (TorchInductor's default mode), as a server that compiles its
model at start-up runs it. Compiling takes seconds to minutes per model; it happens in `prepare`, never in a timed
call.

Dynamo keeps the compiled code of a function per guard set, and every compressed model shares `CompressedModel`'s
`forward`: timed side by side, each call would first test the other models' guards, and past the recompile limit
dynamo silently runs eager. So models are timed one after the other (`interleaved = False`), and dynamo's caches are
cleared before each is compiled (`release`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ._eager import decode_call, forward_call
from ._registry import DECODE, PREFILL, Runtime, register_runtime

if TYPE_CHECKING:
    from toast.models import CompressedModel

__all__ = ["CompileRuntime"]

WARM_CALLS = 2  # the first call compiles, the second runs the compiled code once (lazy initialisations)


class CompileRuntime(Runtime):
    name = "compile"
    help = "torch.compile of the whole model (TorchInductor, default mode; compiled once per model, not timed)"
    devices = ("cpu", "cuda")
    modes = (PREFILL, DECODE)
    interleaved = False

    def release(self) -> None:
        """Drop every compiled graph (dynamo's caches): the next model is compiled alone."""
        torch._dynamo.reset()

    def prepare(self, model: CompressedModel, inputs: dict[str, Any], *, mode: str = PREFILL) -> Callable[[], Any]:
        self.release()
        if mode == DECODE:  # the step itself compiled; the cache's bookkeeping stays Python, as in a server
            call = decode_call(torch.compile(model.decode_step), model, inputs)
        else:
            call = forward_call(torch.compile(model.export_module()), inputs)
        for _ in range(WARM_CALLS):
            call()
        return call


COMPILE = register_runtime(CompileRuntime())
