"""Measuring a model's `CostTable` with fvcore, one component at a time, at its input size."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from toast.objectives import Cost, CostTable, count_flops, count_params
from toast.spaces import kind_parameter, list_translators, translator_class

from ._loading import LoadedModel, onloaded

TEXT_TOKENS = 128  # the sequence length text encoders are costed at


def example_inputs(loaded: LoadedModel, *, batch: int = 1, seq_len: int = TEXT_TOKENS) -> dict[str, torch.Tensor]:
    """One input at the model's input size (the papers' convention: batch 1, what its processor outputs), made by
    its family (`Family.example_inputs`), `batch` times, on the model's device and in its dtype."""
    inputs = loaded.family.example_inputs(loaded.config, batch=batch, seq_len=seq_len, processor=loaded.processor)
    dtype = next(loaded.model.parameters()).dtype
    return {k: v.to(device=loaded.device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def _tensor_leaves(kwargs: dict[str, Any]) -> tuple[list, Any, list[int]]:
    """`kwargs` flattened (tuples and dicts opened), its structure, and where its tensors are among the leaves."""
    leaves, spec = tree_flatten(kwargs)
    return leaves, spec, [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]


class _Call(nn.Module):
    """Wraps `fn(module, *tensors)` so fvcore can trace one component with positional tensors."""

    def __init__(self, module: nn.Module, fn) -> None:
        super().__init__()
        self.module = module
        self.fn = fn

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.fn(self.module, *tensors)


def model_flops(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """fvcore's count (papers' handles) of a whole `CompressedModel` forward on keyword inputs."""
    keys = list(inputs)
    return count_flops(_Call(model, lambda m, *t: m(**dict(zip(keys, t)))), tuple(inputs.values()))


def measure_cost_table(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor] | None = None, *, kinds: Iterable[str] = ()
) -> CostTable:
    """Per-component FLOPs (papers' fvcore handles) and exact params of `loaded`.

    Translators: every registered kind that takes no parameter, and the kind strings of `kinds` (a space's,
    such as `lowrank:48`); the table costs any other kind string on demand at the model's width and tokens.
    """
    from toast.spaces import Plan

    from ._compressed import CompressedModel

    inputs = inputs or example_inputs(loaded)
    model = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    family, config = loaded.family, loaded.config
    keys = list(inputs)
    with torch.no_grad():
        h, mask, _ = model.run(inputs)

    # The blocks' keyword arguments (an attention mask, rotary embeddings) are made once per forward, from h_0:
    # they are part of the embeddings' cost (the rotary embedding built once per model, as the model holds it).
    rotary = family.rotary_embedding(config)

    def embed(m, *t):
        x, mk = family.embed(m, dict(zip(keys, t)))
        leaves, _, at = _tensor_leaves(family.block_kwargs(config, x, mk, rotary=rotary))
        return (x, *(leaves[i] for i in at)) if at else x

    embed_cost = Cost(
        count_flops(_Call(model.embeddings, embed), tuple(inputs.values())), count_params(model.embeddings)
    )
    leaves, spec, at = _tensor_leaves(family.block_kwargs(config, h, mask, rotary=rotary))
    kwarg_tensors = tuple(leaves[i] for i in at)

    def run_block(block, x, *tensors):  # the kwargs' tensors traced as inputs, the rest (None, flags) as they are
        values = list(leaves)
        for i, t in zip(at, tensors):
            values[i] = t
        return family.run_block(block, x, tree_unflatten(values, spec))

    blocks = []
    measured: dict[tuple, int] = {}
    for block in loaded.parts.blocks:
        shape = tuple((n, tuple(p.shape)) for n, p in block.named_parameters())
        if shape not in measured:  # identical blocks cost the same: trace one of each shape
            with onloaded(block):  # a block offloaded to CPU memory or disk (a device map): traced with its weights
                measured[shape] = count_flops(_Call(block, run_block), (h, *kwarg_tensors))
        blocks.append(Cost(measured[shape], count_params(block)))

    tail_modules = nn.ModuleList([m for m in (model.final_norm, model.head) if m is not None])
    token_mask = () if mask is None else (mask,)
    with onloaded(tail_modules):
        tail_flops = count_flops(_Call(model, lambda m, x, *mm: m.tail(x, mm[0] if mm else None)), (h, *token_mask))
    tail = Cost(tail_flops, count_params(tail_modules))

    # each kind states its own cost (fvcore's count of its module, checked by toast.spaces.testing)
    d, tokens = loaded.hidden_size, int(h.shape[:-1].numel())
    listed = [k for k in list_translators() if kind_parameter(k) is None] + list(kinds)
    translators = {kind: Cost(*translator_class(kind).cost(d, tokens)) for kind in dict.fromkeys(listed)}
    described = ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())
    return CostTable(
        embed=embed_cost,
        blocks=tuple(blocks),
        tail=tail,
        translators=translators,
        input_description=described,
        width=d,
        tokens=tokens,
    )
