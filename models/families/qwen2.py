"""Qwen2 and Qwen2.5 (`Qwen/Qwen2.5-0.5B`): Llama's decoder with biased q/k/v projections and a sliding window on
the layers from `max_window_layers` on where `use_sliding_window` is set (`layer_types`)."""

from __future__ import annotations

from .._family import register_family
from ._causal import CausalLMFamily

#: Qwen/Qwen2.5-0.5B's config.json as published (less `architectures`, `torch_dtype`, `transformers_version`).
QWEN2_5_0_5B = {
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 896,
    "initializer_range": 0.02,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_mrope": False,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


@register_family
class Qwen2Family(CausalLMFamily):
    name = "qwen2"
    model_types = ("qwen2",)
    rotary = "qwen2.modeling_qwen2.Qwen2RotaryEmbedding"
    tiny_models = {"qwen2": ("Qwen2ForCausalLM", QWEN2_5_0_5B)}
