"""Mistral (`mistralai/Mistral-7B-v0.1`): Llama's decoder with a sliding window on every layer."""

from __future__ import annotations

from .._family import register_family
from ._causal import CausalLMFamily

#: mistralai/Mistral-7B-v0.1's config.json as published (less `architectures`, `torch_dtype`, `transformers_version`).
MISTRAL_7B = {
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "use_cache": True,
    "vocab_size": 32000,
}


@register_family
class MistralFamily(CausalLMFamily):
    name = "mistral"
    model_types = ("mistral",)
    rotary = "mistral.modeling_mistral.MistralRotaryEmbedding"
    tiny_models = {"mistral": ("MistralForCausalLM", MISTRAL_7B)}
