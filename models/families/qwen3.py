"""Qwen3 (`Qwen/Qwen3-0.6B`): Qwen2's decoder with RMS norms on the queries and keys, no q/k/v bias."""

from __future__ import annotations

from .._family import register_family
from ._causal import CausalLMFamily

#: Qwen/Qwen3-0.6B's config.json as published (less `architectures`, `torch_dtype`, `transformers_version`).
QWEN3_0_6B = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


@register_family
class Qwen3Family(CausalLMFamily):
    name = "qwen3"
    model_types = ("qwen3",)
    rotary = "qwen3.modeling_qwen3.Qwen3RotaryEmbedding"
    tiny_models = {"qwen3": ("Qwen3ForCausalLM", QWEN3_0_6B)}
