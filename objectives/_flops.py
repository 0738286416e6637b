"""GFLOPs and parameter counts in the convention of the TOAST papers (fvcore + op handles).

The papers report GFLOPs "calculated using the fvcore analysis library" for Hugging Face ViT /
DeiT / DINOv2 models at 224x224, batch 1. Plain ``fvcore.nn.FlopCountAnalysis`` cannot give their
figures: it counts nothing for ``aten::scaled_dot_product_attention`` (the default attention of
recent ``transformers``), so its total depends on ``attn_implementation`` (DeiT-S: "eager" 4.61 G,
"sdpa" 4.25 G; the papers print 4.97 G).

``PAPER_HANDLES`` reproduces every GFLOPs figure of TOAST tables 1-3 (DeiT-S, DINOv2-B, ViT-L:
originals and compressed models, identity and linear translators; ``tests/objectives/test_flops.py``), with
the same total for eager and sdpa attention. fvcore's defaults stay (one multiply-add = one flop
for ``linear``, ``conv``, ``mm``, ``addmm``; ``layer_norm`` 5 flops per element); the handles add:

* attention products: ``aten::scaled_dot_product_attention`` and, in eager attention, an
  ``aten::matmul`` / ``aten::bmm`` whose two operands are batched activations: **2 flops per
  multiply-add**, PyTorch's ``torch.utils.flop_counter.sdpa_flop_count`` (``4*B*H*N*M*D`` for
  ``QK^T`` and ``AV``); softmax and the 1/sqrt(d) scaling are not counted (that formula leaves
  them out). This is the one departure from "multiply-add = 1", and the tables require it: the
  per-block costs they imply (identity column: DeiT-S 0.41 G, DINOv2-B 2.0233-2.0261 G, ViT-L
  2.6407-2.6411 G per block) fit only with the attention products counted twice, while a linear
  translator costs exactly one flop per multiply-add (``N*d*d``: DeiT-S +0.03 G, DINOv2-B +0.15 G,
  ViT-L +0.21 G per translator).
* additions (``aten::add``, ``add_``, ``sub``, ``rsub``): 1 flop per output element: the two
  residual additions per block, the position-embedding sum, an attention mask. A 0-d result
  (shape arithmetic recorded by the tracer) counts 0.
* pointwise activations (``aten::gelu``, ``tanh``, ``silu``, ``sigmoid``, ``relu`` and their
  in-place forms): 1 flop per output element.
* explicitly not counted: ``aten::mul`` / ``div`` (in these models always a scaling by a constant
  or a learned per-channel vector, the attention scaling or DINOv2's LayerScale, which folds into
  the adjacent linear layer at inference, fvcore's own reason for ignoring batch-norm),
  ``aten::softmax`` (see above), ``aten::upsample_bicubic2d`` / ``_upsample_bicubic2d_aa``
  (DINOv2's position-embedding interpolation: a function of the parameters and the input size
  only, computed once per resolution, not per image).

The additions and the GELU are what the tables need besides the doubled attention: with them the
per-block and constant costs of all three models fall inside the intervals the tables allow
(per block / constant: DeiT-S 409,406,976 / 58,404,480; DINOv2-B 2,025,077,760 / 116,789,760;
ViT-L 2,641,022,976 / 156,400,640). Leaving out the additions or the GELU, or also counting the
softmax (1 flop per score), DINOv2's LayerScale multiplications or the bicubic interpolation
(4 or more flops per output element), puts figures off by 0.01 or more.

Rounding: ``round(flops / 1e9, 2)``; no reproduced figure is within 1e-4 G of a rounding tie, so
half-up and half-even agree. The tables disagree once with themselves: ViT-L ``17->23`` identity
is 47.70 in one table and 47.69 in the other; these handles give 47.6948 (47.69).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from math import prod
from numbers import Number
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from .._compat import traced_flop_count_analysis

__all__ = ["PAPER_HANDLES", "count_flops", "count_params", "flop_counter"]

Handle = Callable[[list[Any], list[Any]], Number]


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> Number:
    """``aten::scaled_dot_product_attention``: ``2*B*H*Lq*Lk*(E + Ev)`` (PyTorch's sdpa formula).

    Query ``[..., Lq, E]``, key ``[..., Lk, E]``, value ``[..., Lk, Ev]``; the leading dims of the
    query (batch and query heads, so grouped-query attention counts every query head) multiply.
    Two flops per multiply-add for the two products ``QK^T`` and ``AV``, as
    ``torch.utils.flop_counter.sdpa_flop_count``; softmax and scaling are not counted; an
    attention mask costs 1 flop per score, as the addition eager attention does.
    """
    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        return 0
    scores = prod(q[:-2]) * q[-2] * k[-2]
    flops = 2 * scores * (q[-1] + v[-1])
    if len(inputs) > 3 and get_shape(inputs[3]) is not None:
        flops += scores  # the mask is added to the scores (as eager attention's aten::add)
    return flops


def _product_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds of a (batched, broadcasting) matrix product: output elements x inner dim."""
    a = get_shape(inputs[0])
    out = get_shape(outputs[0])
    if a is None or out is None:
        return 0
    return int(prod(out)) * a[-1]


def matmul_flop_jit(inputs: list[Any], outputs: list[Any]) -> Number:
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


def bmm_flop_jit(inputs: list[Any], outputs: list[Any]) -> Number:
    """``aten::bmm``: a product of two batched activations (attention), 2 flops per multiply-add."""
    return 2 * _product_macs(inputs, outputs)


def elementwise_flop_jit(inputs: list[Any], outputs: list[Any]) -> Number:
    """Additions and pointwise activations: 1 flop per output element (0-d: shape arithmetic)."""
    shape = get_shape(outputs[0]) if outputs else None
    return int(prod(shape)) if shape else 0


#: op name -> handle (``None``: explicitly not counted), on top of fvcore's defaults.
PAPER_HANDLES: dict[str, Handle | None] = {
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
    "aten::_upsample_bicubic2d_aa": None,
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


def flop_counter(module: torch.nn.Module, inputs: tuple) -> FlopCountAnalysis:
    """fvcore ``FlopCountAnalysis`` of ``module(*inputs)`` with ``PAPER_HANDLES``, warnings off."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    counter = traced_flop_count_analysis(module, tuple(inputs), _traceable)
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
