"""Gemma 2 (`google/gemma-2-2b`): sliding-window and global layers alternating (`layer_types`), soft-capped
attention and final logits, embeddings scaled by `sqrt(hidden_size)` (in the embedding module), and norms before
and after each branch: the MLP branch ends in an RMSNorm, so no map is folded into it."""

from __future__ import annotations

from .._family import register_family
from ._causal import CausalLMFamily

#: google/gemma-2-2b's config.json as published (less `architectures`, `torch_dtype`, `transformers_version`).
GEMMA_2_2B = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": 1,
    "final_logit_softcapping": 30.0,
    "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2304,
    "initializer_range": 0.02,
    "intermediate_size": 9216,
    "max_position_embeddings": 8192,
    "model_type": "gemma2",
    "num_attention_heads": 8,
    "num_hidden_layers": 26,
    "num_key_value_heads": 4,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "use_cache": True,
    "vocab_size": 256000,
}


@register_family
class Gemma2Family(CausalLMFamily):
    name = "gemma2"
    model_types = ("gemma2",)
    rotary = "gemma2.modeling_gemma2.Gemma2RotaryEmbedding"
    tiny_models = {"gemma2": ("Gemma2ForCausalLM", GEMMA_2_2B)}

    def mlp_branch(self, block):
        return None  # `h + post_feedforward_layernorm(mlp(…))`: the branch ends in a norm, no linear map folds in
