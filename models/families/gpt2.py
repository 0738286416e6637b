"""GPT-2 (`gpt2`): learned absolute positions added to the token embeddings, `Conv1D` projections (weights stored
input-major), one causal mask, the LM head tied to the token embeddings."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import UnsupportedModelError
from .._family import register_family
from ._causal import CausalLMFamily

#: gpt2's config.json as published (less `architectures`).
GPT2 = {
    "activation_function": "gelu_new",
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}


class GPT2Embeddings(nn.Module):
    """GPT-2's `h_0`: the token embeddings plus the learned embeddings of positions `0 … N-1` (the stock forward's
    without a cache), then the embeddings' dropout; the stock modules themselves, so the weights keep their names."""

    def __init__(self, wte: nn.Embedding, wpe: nn.Embedding, drop: nn.Module) -> None:
        super().__init__()
        self.wte, self.wpe, self.drop = wte, wpe, drop

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device).unsqueeze(0)
        embeds = self.wte(input_ids)
        return self.drop(embeds + self.wpe(positions).to(embeds.device))


@register_family
class GPT2Family(CausalLMFamily):
    name = "gpt2"
    model_types = ("gpt2",)
    backbone_attrs = ("transformer",)
    blocks_paths = ("h",)
    norm_attr = "ln_f"
    tiny_sizes: ClassVar[dict[str, Any]] = {
        "n_embd": 32,
        "n_layer": 4,
        "n_head": 2,
        "n_positions": 64,
        "n_ctx": 64,
        "vocab_size": 320,
    }
    tiny_models = {"gpt2": ("GPT2LMHeadModel", GPT2)}

    def parts(self, model):
        if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
            raise UnsupportedModelError(
                "this GPT-2 checkpoint scales each attention by its layer index (scale_attn_by_inverse_layer_idx): "
                "its blocks change when layers are removed, so no block can be left out"
            )
        return super().parts(model)

    def find_embeddings(self, backbone):
        return GPT2Embeddings(backbone.wte, backbone.wpe, backbone.drop)

    def attention(self, block):
        return block.attn

    def embed_step(self, embeddings, input_ids, past):
        """The token embeddings plus those of positions `past …` (a decoding step after `past` cached tokens)."""
        ids = input_ids.to(embeddings.wte.weight.device)
        positions = torch.arange(past, past + ids.shape[-1], device=ids.device).unsqueeze(0)
        return embeddings.drop(embeddings.wte(ids) + embeddings.wpe(positions))

    def mlp_output_projection(self, block):
        return block.mlp.c_proj  # a Conv1D: `m = x @ weight + bias`, its weight (in, out)
