"""GFLOPs and parameter counts in the convention of the TOAST papers (fvcore + op handles).

The papers report "GFLOPs calculated with fvcore" for Hugging Face ViT / DeiT / DINOv2 models.
Plain ``fvcore.nn.FlopCountAnalysis`` cannot give their figures: it counts nothing for
``aten::scaled_dot_product_attention`` (the default attention of recent ``transformers``), so its
total changes with ``attn_implementation`` ("eager" counts the two attention products once,
"sdpa" counts none), and neither matches the tables (DeiT-S: eager 4.61, sdpa 4.25, paper 4.97).

``PAPER_HANDLES`` is the set of op handles that reproduces every published figure we checked
(DeiT-S, DINOv2-B, ViT-L at 224x224, batch 1, original and compressed models, identity and linear
translators; see ``tests/test_flops.py``), and gives the same total for eager and sdpa attention.
fvcore's defaults stay as they are (one multiply-add = one flop for linear, conv and plain
matmuls; layer_norm 5 flops per element); the handles add or override:

* attention products (``aten::scaled_dot_product_attention``; in eager attention the ``aten::matmul``
  / ``aten::bmm`` between two activations): 2 flops per multiply-add, PyTorch's
  ``torch.utils.flop_counter.sdpa_flop_count`` formula, i.e. ``4*B*H*N*M*D`` for ``QK^T`` and
  ``AV``. The softmax and the 1/sqrt(d) scaling are not counted (that formula excludes them).
  This is the one place where the convention departs from fvcore's "multiply-add = 1": the
  papers' figures require it (per-block cost, e.g. 0.409 G for DeiT-S, only fits with the
  attention products counted twice), while the linear translators they add cost exactly one flop
  per multiply-add (``N*d*d``: +0.03 G for DeiT-S, +0.15 G for DINOv2-B, +0.21 G for ViT-L).
* additions (``aten::add``, ``aten::add_``, ``aten::sub``, ``aten::rsub``): 1 flop per output
  element (the residual connections and the position-embedding sum).
* pointwise activations (``aten::gelu``, ``aten::tanh``, ``aten::silu``, ``aten::sigmoid``,
  ``aten::relu`` and in-place variants): 1 flop per output element.
* not counted (explicitly ignored): ``aten::mul`` / ``aten::div`` (in these models always a
  scaling by a constant or a learned per-channel vector: attention scaling, LayerScale; both fold
  into the adjacent linear layer at inference, the reason fvcore gives for ignoring batch-norm),
  ``aten::softmax`` (see above), and ``aten::upsample_bicubic2d`` (DINOv2's position-embedding
  interpolation: a function of the parameters and the input size only, computable once per
  resolution, not per image).

Rounding: figures are compared as ``round(flops / 1e9, 2)``; no checked figure lies within
1e-4 G of a rounding tie, so half-even and half-up agree. One printed figure is not reproduced:
ViT-L ``17->23`` identity is 47.70 in one table and 47.69 in the other (same model); we give
47.6948 G, i.e. 47.69.
"""

from __future__ import annotations

import contextlib
from math import prod
from numbers import Number
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

__all__ = ["PAPER_HANDLES", "count_flops", "count_params", "flop_counter"]

Handle = Callable[[List[Any], List[Any]], Number]


def _numel(value: Any) -> int:
    """Number of elements of a traced value (0 when its shape is unknown)."""
    shape = get_shape(value)
    return 0 if shape is None else int(prod(shape))


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> Number:
    """``aten::scaled_dot_product_attention``: ``2*B*H*Lq*Lk*(E + Ev)`` (PyTorch's sdpa formula).

    Query ``[..., Lq, E]``, key ``[..., Lk, E]``, value ``[..., Lk, Ev]``; the leading dims of the
    query (batch and query heads, so grouped-query attention counts every query head) multiply.
    Two flops per multiply-add for the two products ``QK^T`` and ``AV``, as
    ``torch.utils.flop_counter.sdpa_flop_count``; softmax, scaling and mask are not counted.
    """
    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        return 0
    batch = prod(q[:-2])
    return 2 * batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _product_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of a (batched, broadcasting) matrix product: output elements x inner dim."""
    a = get_shape(inputs[0])
    out = get_shape(outputs[0])
    if a is None or out is None:
        return 0
    return int(prod(out)) * a[-1]


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> Number:
    """``aten::matmul``: 1 flop per multiply-add, 2 when both operands are batched (rank >= 3).

    A product of two batched operands is a product of two activations, as eager attention's
    ``Q @ K^T`` and ``attn @ V`` (``[B, H, N, D] @ [B, H, D, M]``): counted as the SDPA kernel that
    replaces them (``sdpa_flop_jit``), so eager and sdpa attention give the same total. A product
    with a 2-D (weight) operand, e.g. a translator ``x @ W``, keeps fvcore's count.
    """
    a, b = get_shape(inputs[0]), get_shape(inputs[1])
    macs = _product_macs(inputs, outputs)
    if a is not None and b is not None and len(a) >= 3 and len(b) >= 3:
        return 2 * macs
    return macs


def bmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> Number:
    """``aten::bmm``: a product of two batched activations (attention), 2 flops per multiply-add."""
    return 2 * _product_macs(inputs, outputs)


def elementwise_flop_jit(inputs: List[Any], outputs: List[Any]) -> Number:
    """Additions and pointwise activations: 1 flop per output element."""
    return _numel(outputs[0]) if outputs else 0


#: op name -> handle (``None``: explicitly not counted), on top of fvcore's defaults.
PAPER_HANDLES: Dict[str, Optional[Handle]] = {
    # attention products, 2 flops per multiply-add
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::matmul": matmul_flop_jit,
    "aten::bmm": bmm_flop_jit,
    # additions: residual stream, position embeddings
    "aten::add": elementwise_flop_jit,
    "aten::add_": elementwise_flop_jit,
    "aten::sub": elementwise_flop_jit,
    "aten::rsub": elementwise_flop_jit,
    # pointwise activations
    "aten::gelu": elementwise_flop_jit,
    "aten::gelu_": elementwise_flop_jit,
    "aten::tanh": elementwise_flop_jit,
    "aten::tanh_": elementwise_flop_jit,
    "aten::silu": elementwise_flop_jit,
    "aten::silu_": elementwise_flop_jit,
    "aten::sigmoid": elementwise_flop_jit,
    "aten::sigmoid_": elementwise_flop_jit,
    "aten::relu": elementwise_flop_jit,
    "aten::relu_": elementwise_flop_jit,
    # not counted
    "aten::mul": None,
    "aten::mul_": None,
    "aten::div": None,
    "aten::div_": None,
    "aten::softmax": None,
    "aten::upsample_bicubic2d": None,
}


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors in a nested output (tensor, tuple/list, dict or ``ModelOutput``), in order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):  # includes transformers' ModelOutput
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


@contextlib.contextmanager
def _traceable(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode, no grad, and a forward that returns a tensor or a flat tuple of tensors."""
    training = {m: m.training for m in module.modules()}
    had_own_forward = "forward" in module.__dict__
    original = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else tuple(_tensors(out))

    module.forward = forward  # type: ignore[method-assign]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if had_own_forward:
            module.forward = original  # type: ignore[method-assign]
        else:
            del module.forward
        for m, mode in training.items():
            m.training = mode


class _PaperFlopCountAnalysis(FlopCountAnalysis):
    """``FlopCountAnalysis`` that traces models returning ``ModelOutput``/dicts, in eval mode."""

    def _analyze(self):  # noqa: ANN202 - fvcore's Statistics
        """Trace (once) with the module's output flattened to tensors."""
        if self._stats is not None:
            return self._stats
        with _traceable(self._model):
            return super()._analyze()


def flop_counter(module: torch.nn.Module, inputs: tuple) -> FlopCountAnalysis:
    """fvcore ``FlopCountAnalysis`` of ``module(*inputs)`` with ``PAPER_HANDLES``, warnings off."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    counter = _PaperFlopCountAnalysis(module, tuple(inputs))
    counter.set_op_handle(**PAPER_HANDLES)
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    counter.tracer_warnings("none")
    return counter


def count_flops(module: torch.nn.Module, inputs: tuple) -> int:
    """Total flops (fvcore convention, papers' handles) of one forward of ``module(*inputs)``."""
    return int(flop_counter(module, inputs).total())


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters of ``module`` (shared parameters counted once), frozen ones included."""
    return sum(p.numel() for p in module.parameters())
