"""Gemma 3's text decoder (`google/gemma-3-1b-it`): Gemma 2's blocks with five sliding-window layers to one
global (`layer_types`), each kind with its own rotary base (`rope_parameters` per kind), q/k norms and no
soft-capping. A whole multimodal Gemma 3 checkpoint (`gemma3`) is not handled; its text checkpoints are."""

from __future__ import annotations

from typing import Any, ClassVar

from ...errors import UnsupportedModelError
from .._family import register_family
from .gemma2 import Gemma2Family

#: google/gemma-3-1b-it's config.json as published (less `architectures`, `torch_dtype`, `transformers_version`).
GEMMA_3_1B_IT = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": None,
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "eos_token_id": [1, 106],
    "final_logit_softcapping": None,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 1152,
    "initializer_range": 0.02,
    "intermediate_size": 6912,
    "max_position_embeddings": 32768,
    "model_type": "gemma3_text",
    "num_attention_heads": 4,
    "num_hidden_layers": 26,
    "num_key_value_heads": 1,
    "pad_token_id": 0,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "use_cache": True,
    "vocab_size": 262144,
}


@register_family
class Gemma3Family(Gemma2Family):
    name = "gemma3"
    model_types = ("gemma3_text",)
    rotary = "gemma3.modeling_gemma3.Gemma3RotaryEmbedding"
    # six layers: the checkpoint's pattern (five sliding, one global) holds both kinds
    tiny_sizes: ClassVar[dict[str, Any]] = {**Gemma2Family.tiny_sizes, "num_hidden_layers": 6}
    tiny_models = {"gemma3": ("Gemma3ForCausalLM", GEMMA_3_1B_IT)}

    def parts(self, model):
        if getattr(model.config, "use_bidirectional_attention", False):
            raise UnsupportedModelError(
                "this Gemma 3 checkpoint attends both ways (use_bidirectional_attention: an embedding model), not a "
                "causal language model: use a Gemma 3 text decoder such as google/gemma-3-1b-it"
            )
        return super().parts(model)

    def position_embeddings(self, config, hidden, positions, kinds, rotary=None):
        """One rotary embedding per attention kind (`rope_parameters[kind]`: the local and the global base)."""
        rotary = rotary if rotary is not None else self.rotary_module(config)
        return {kind: rotary(hidden, positions, kind) for kind in kinds}
