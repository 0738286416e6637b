"""Phi-3 (`microsoft/Phi-3-mini-4k-instruct`): a pre-norm decoder with fused q/k/v and gate/up projections and a
sliding window on every layer; its MLP branch ends in `down_proj`."""

from __future__ import annotations

from .._family import register_family
from ._causal import CausalLMFamily

#: microsoft/Phi-3-mini-4k-instruct's config.json as published (less `_name_or_path`, `architectures`, `auto_map`,
#: `torch_dtype`, `transformers_version`: Transformers' own Phi3 class reads it).
PHI3_MINI_4K = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "embd_pdrop": 0.0,
    "eos_token_id": 32000,
    "hidden_act": "silu",
    "hidden_size": 3072,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 4096,
    "model_type": "phi3",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "original_max_position_embeddings": 4096,
    "pad_token_id": 32000,
    "resid_pdrop": 0.0,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "sliding_window": 2047,
    "tie_word_embeddings": False,
    "use_cache": True,
    "vocab_size": 32064,
}


@register_family
class Phi3Family(CausalLMFamily):
    name = "phi3"
    model_types = ("phi3",)
    rotary = "phi3.modeling_phi3.Phi3RotaryEmbedding"
    tiny_models = {"phi3": ("Phi3ForCausalLM", PHI3_MINI_4K)}
