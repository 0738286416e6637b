"""Measuring a model's `CostTable` with fvcore, one component at a time, at its input size."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from toast.objectives._cost import Cost, CostTable
from toast.objectives._flops import count_flops, count_params
from toast.spaces import kind_parameter, list_translators, translator_class

from ._loading import LoadedModel

TEXT_TOKENS = 128  # the sequence length text encoders are costed at
EXAMPLE_IMAGE = (640, 480)  # width, height of the photo run through an image processor to learn its output size


def example_inputs(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    """One input at the model's input size (the papers' convention: batch 1, what its processor outputs)."""
    device = loaded.device
    if loaded.family.modality == "text":
        tokens = min(TEXT_TOKENS, int(getattr(loaded.config, "max_position_embeddings", TEXT_TOKENS)))
        ids = torch.full((1, tokens), 5, dtype=torch.long, device=device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    dtype = next(loaded.model.parameters()).dtype
    if loaded.processor is not None:  # its resize and crop decide the size, not config.image_size (DINOv2: 518)
        from PIL import Image

        pixels = loaded.processor(images=Image.new("RGB", EXAMPLE_IMAGE), return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels.to(device=device, dtype=dtype)}
    side = int(getattr(loaded.config, "image_size", 224))
    channels = int(getattr(loaded.config, "num_channels", 3))
    return {"pixel_values": torch.zeros(1, channels, side, side, device=device, dtype=dtype)}


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

    # The block attention mask is built once per forward, from h_0: it is part of the embeddings' cost.
    def embed(m, *t):
        x, mk = family.embed(m, dict(zip(keys, t)))
        bm = family.block_mask(config, x, mk)
        return (x, bm) if isinstance(bm, torch.Tensor) else x

    embed_cost = Cost(
        count_flops(_Call(model.embeddings, embed), tuple(inputs.values())), count_params(model.embeddings)
    )
    block_mask = family.block_mask(config, h, mask)
    mask_args = (block_mask,) if isinstance(block_mask, torch.Tensor) else ()

    def run_block(block, x, *bm):
        return family.run_block(block, x, bm[0] if bm else block_mask)

    blocks = []
    measured: dict[tuple, int] = {}
    for block in loaded.parts.blocks:
        shape = tuple((n, tuple(p.shape)) for n, p in block.named_parameters())
        if shape not in measured:  # identical blocks cost the same: trace one of each shape
            measured[shape] = count_flops(_Call(block, run_block), (h, *mask_args))
        blocks.append(Cost(measured[shape], count_params(block)))

    tail_modules = nn.ModuleList([m for m in (model.final_norm, model.head) if m is not None])
    token_mask = () if mask is None else (mask,)
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
