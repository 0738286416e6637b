"""Llama 2 and 3.x (`meta-llama/Llama-3.2-1B`, its llama3 rotary scaling and tied embeddings) and the checkpoints
with a Llama config (`HuggingFaceTB/SmolLM2-135M`): a pre-norm decoder, rotary positions, one causal mask."""

from __future__ import annotations

from .._family import register_family
from ._causal import CausalLMFamily

#: meta-llama/Llama-3.2-1B's config.json as published (less `architectures`, `torch_dtype`, `transformers_version`).
LLAMA_3_2_1B = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "use_cache": True,
    "vocab_size": 128256,
}

#: HuggingFaceTB/SmolLM2-135M's config.json as published (less `architectures`, `torch_dtype`,
#: `transformers_version`): a Llama config.
SMOLLM2_135M = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "silu",
    "hidden_size": 576,
    "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536,
    "is_llama_config": True,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_interleaved": False,
    "rope_scaling": None,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "use_cache": True,
    "vocab_size": 49152,
}


@register_family
class LlamaFamily(CausalLMFamily):
    name = "llama"
    model_types = ("llama",)
    rotary = "llama.modeling_llama.LlamaRotaryEmbedding"
    tiny_models = {
        "llama": ("LlamaForCausalLM", LLAMA_3_2_1B),
        "smollm2": ("LlamaForCausalLM", SMOLLM2_135M),
    }
