"""`eager`: the model as PyTorch runs it, module by module (the default; what the search itself runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ._registry import DECODE, PREFILL, Runtime, register_runtime

if TYPE_CHECKING:
    from toast.models import CompressedModel

__all__ = ["EagerRuntime", "decode_call", "forward_call"]


def forward_call(fn: Callable[..., Any], inputs: dict[str, Any]) -> Callable[[], Any]:
    """A call of `fn(**inputs)` under `torch.inference_mode` (no autograd graph, as a server runs it)."""

    def call():
        with torch.inference_mode():
            return fn(**inputs)

    return call


def decode_call(step: Callable[[torch.Tensor, Any], Any], model: CompressedModel, inputs: dict[str, Any]):
    """A call of one decoding step `step(last_token, cache)` after the inputs' tokens, whose keys and values `model`
    caches first (a `DynamicCache`); the cache is put back after each step, so every call sees the same length."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    prompt = inputs["input_ids"].to(device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model.decode_step(prompt, cache)
    saved = [dict(vars(layer)) for layer in cache.layers]
    token = prompt[:, -1:]

    def call():
        try:
            with torch.inference_mode():
                return step(token, cache)
        finally:
            for layer, state in zip(cache.layers, saved):
                vars(layer).update(state)

    return call


class EagerRuntime(Runtime):
    name = "eager"
    help = "PyTorch eager, module by module (the default: what the search runs)"
    devices = ("cpu", "cuda", "mps")
    modes = (PREFILL, DECODE)

    def prepare(self, model: CompressedModel, inputs: dict[str, Any], *, mode: str = PREFILL) -> Callable[[], Any]:
        if mode == DECODE:
            return decode_call(model.decode_step, model, inputs)
        return forward_call(model.export_module(), inputs)


EAGER = register_runtime(EagerRuntime())
