"""What the decoder language models share: token ids and an attention mask in, next-token logits over every token out.

A decoder's blocks see what the stock model's decoder layers see, made once per forward by `block_kwargs`: position
ids (`0 … N-1`, as the stock forward makes them without a cache, whatever the padding), the rotary position
embeddings (from the model's own rotary class built on its config), and the causal mask of each attention kind the
model has (`full_attention`, `sliding_attention`), made by Transformers' `create_causal_mask` /
`create_sliding_window_causal_mask` and always materialized. A block runs with the mask and the rotary embeddings of
its own kind (`layer_type`, read from the block itself), so it keeps its sliding window when its neighbours are
removed. No KV cache: the compressed model recomputes every token.

The head is the LM head over every token (`head_kind` "lm"), with the final soft-capping of the configs that have
one (Gemma 2); where the head shares the input embeddings' matrix (`tie_word_embeddings`), `TiedHead` computes with
it without owning it, so parameter counts and saved weights hold the matrix once, as the stock model does.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .._family import TINY_SIZES
from ._text import TextFamily

FULL, SLIDING = "full_attention", "sliding_attention"
#: The head kind of a decoder's LM head: logits for every token.
LM_HEAD = "lm"
#: The config fields that hold token ids: a tiny model's ids must lie in its shrunk vocabulary (`tiny_config`).
TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


class TiedHead(nn.Module):
    """The LM head of a model whose head shares the input embeddings' matrix (`tie_word_embeddings`): it runs the
    stock `lm_head` without holding it as a submodule, so the matrix is a parameter of the embeddings only (counted
    once, saved once, moved with them)."""

    def __init__(self, lm_head: nn.Module) -> None:
        super().__init__()
        self._lm_head = (lm_head,)  # a tuple: not registered, its weight is the embeddings' own parameter

    @property
    def lm_head(self) -> nn.Module:
        return self._lm_head[0]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


class CausalLMFamily(TextFamily):
    """Calling conventions shared by the decoder language models (Llama, Mistral, Qwen, Gemma, Phi-3, GPT-2)."""

    #: What their datasets hold: text to predict, token after token (calibration and evaluation from plain text
    #: packed into sequences), not labelled texts to classify; an encoder's datasets do not suit them, nor the
    #: other way round.
    modality = "causal-lm"
    input_names = ("input_ids", "attention_mask")
    generates = True
    backbone_attrs = ("model",)
    blocks_paths = ("layers",)
    norm_attr = "norm"
    classifier_missing = "a decoder's head predicts the next token: no Transformers class classifies its features"
    #: The rotary embedding class, as `<module under transformers.models>.<class>` (None: absolute positions).
    rotary: ClassVar[str | None] = None
    #: The tiny test models' sizes: every reference field named here is shrunk to this value where the reference
    #: has it (a head dimension only where the checkpoint names one, a sliding window only where it has one).
    tiny_sizes: ClassVar[dict[str, Any]] = {
        **TINY_SIZES,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": 320,  # the 256 bytes of the tiny tokenizer and its special tokens
        "sliding_window": 4,
    }

    # ---- finding the parts -------------------------------------------------------------
    def model_class(self, config):
        """The checkpoint's causal-LM class where its `architectures` names one, else `AutoModelForCausalLM`."""
        import transformers

        for arch in getattr(config, "architectures", None) or []:
            cls = getattr(transformers, arch, None)
            if cls is not None and arch.endswith(("ForCausalLM", "LMHeadModel")):
                return cls
        return transformers.AutoModelForCausalLM

    def find_embeddings(self, backbone):
        return backbone.embed_tokens

    def find_head(self, model, backbone):
        lm_head = getattr(model, "lm_head", None)
        if not isinstance(lm_head, nn.Module):  # the bare decoder (`LlamaModel`): features only
            return None, None
        embedding = self.find_embeddings(backbone)
        tied = any(p is lm_head.weight for p in embedding.parameters())
        return (TiedHead(lm_head) if tied else lm_head), LM_HEAD

    def attention(self, block: nn.Module) -> nn.Module:
        return block.self_attn

    # ---- running -----------------------------------------------------------------------
    def embed(self, embeddings, inputs):
        weight = next(embeddings.parameters())
        return embeddings(inputs["input_ids"].to(weight.device)), self.token_mask(inputs, weight.device)

    def layer_types(self, config: Any) -> tuple[str, ...]:
        """The attention kinds of `config`'s layers, in order: its `layer_types`, else one kind for every layer
        (sliding where the config has a window: Mistral, Phi-3)."""
        kinds = getattr(config, "layer_types", None)
        if kinds:
            return tuple(kinds)
        kind = SLIDING if getattr(config, "sliding_window", None) is not None else FULL
        return (kind,) * int(config.num_hidden_layers)

    def layer_type(self, block: nn.Module) -> str:
        """The attention kind of `block`, read from the block (built with its own layer's kind), not from where it
        stands in the compressed model."""
        attn = self.attention(block)
        kind = getattr(attn, "layer_type", None)
        if kind is not None:
            return kind
        return SLIDING if getattr(attn.config, "sliding_window", None) is not None else FULL

    def causal_masks(
        self,
        config: Any,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        positions: torch.Tensor,
        cache: Any = None,
        layers: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """The causal mask of each attention kind of `config`, as the stock decoder makes it, always materialized (no
        shortcut to `is_causal`), so that a traced forward and an eager one agree; with a KV `cache`, the mask of
        `hidden`'s tokens over the cached ones and themselves (a decoding step), each kind's sized by the cache entry
        of its layer in `layers` (by kind: a layer the model still has)."""
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        make = {FULL: create_causal_mask, SLIDING: create_sliding_window_causal_mask}
        given = None if mask is None else mask.long()
        return {
            kind: make[kind](
                config=config,
                inputs_embeds=hidden,
                attention_mask=given,
                cache=cache,
                position_ids=positions,
                allow_is_causal_skip=False,
                layer_idx=(layers or {}).get(kind),
                **self.mask_overlays(config, kind),
            )
            for kind in dict.fromkeys(self.layer_types(config))
        }

    def mask_overlays(self, config: Any, kind: str) -> dict[str, Any]:
        """Extra mask functions (`or_mask_function`, …) the stock decoder passes for attention kind `kind`."""
        return {}

    def position_embeddings(
        self,
        config: Any,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        kinds: Sequence[str],
        rotary: nn.Module | None = None,
    ) -> dict[str, Any]:
        """The rotary `(cos, sin)` of each attention kind in `kinds` (one for all of them where the model has one
        rotary embedding), from `rotary` (the model's `rotary_embedding`), else the model's rotary class built on
        `config`: its inverse frequencies are a function of the config, as the stock model's are."""
        shared = (rotary if rotary is not None else self.rotary_module(config))(hidden, positions)
        return dict.fromkeys(kinds, shared)

    def rotary_embedding(self, config: Any) -> nn.Module | None:
        """`rotary_module(config)`, built once per model: built inside a forward, it cut a compiled decoding step into
        5 graphs (`torch.compile` cannot trace the import and the construction)."""
        return self.rotary_module(config) if self.rotary is not None else None

    def rotary_module(self, config: Any) -> nn.Module:
        """The model's rotary embedding built on `config` (its forward moves its frequencies to the states)."""
        module_name, cls_name = self.rotary.rsplit(".", 1)
        return getattr(importlib.import_module(f"transformers.models.{module_name}"), cls_name)(config)

    def block_kwargs(self, config, hidden, mask, *, rotary=None):
        """Position ids `0 … N-1` (the stock forward's without a cache), the causal mask and the rotary embeddings of
        each attention kind (a dict by kind: `run_block` gives a block those of its own kind)."""
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        masks = self.causal_masks(config, hidden, mask, positions)
        kwargs: dict[str, Any] = {"attention_mask": masks, "position_ids": positions}
        if self.rotary is not None:
            kwargs["position_embeddings"] = self.position_embeddings(config, hidden, positions, tuple(masks), rotary)
        return kwargs

    # ---- decoding with a KV cache (latency of a decoding step) ---------------------------------
    def embed_step(self, embeddings: nn.Module, input_ids: torch.Tensor, past: int) -> torch.Tensor:
        """`h_0` of new tokens after `past` cached ones (the token embeddings; GPT-2 adds those of their positions)."""
        weight = next(embeddings.parameters())
        return embeddings(input_ids.to(weight.device))

    def decode_kwargs(
        self,
        config: Any,
        hidden: torch.Tensor,
        cache: Any,
        past: int,
        layers: Mapping[str, int],
        *,
        rotary: nn.Module | None = None,
    ) -> dict[str, Any]:
        """`block_kwargs` of a decoding step after `past` cached tokens: their positions, each attention kind's mask
        over the cached tokens and the new ones (sized by the cache entry of that kind's layer in `layers`), the rotary
        embeddings of those positions, and the cache itself (each attention appends its keys and values to its own
        layer's entry, `layer_idx`)."""
        positions = torch.arange(past, past + hidden.shape[1], device=hidden.device).unsqueeze(0)
        masks = self.causal_masks(config, hidden, None, positions, cache=cache, layers=layers)
        kwargs: dict[str, Any] = {"attention_mask": masks, "position_ids": positions, "cache": cache, "use_cache": True}
        if self.rotary is not None:
            kwargs["position_embeddings"] = self.position_embeddings(config, hidden, positions, tuple(masks), rotary)
        return kwargs

    def run_block(self, block, hidden, kwargs):
        kind = self.layer_type(block)
        own = {k: (v[kind] if isinstance(v, dict) else v) for k, v in kwargs.items()}
        out = block(hidden, **own)
        return out[0] if isinstance(out, tuple) else out

    def run_head(self, head, kind, normed, mask, config):
        """The LM head's logits for every token (`(B, N, vocab)`), soft-capped as the stock model caps them."""
        logits = head(normed)
        cap = getattr(config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def pool(self, final_norm, normed, mask, config):
        """The final-normed state of each sequence's last real token (right or left padding)."""
        if mask is None:
            return normed[:, -1]
        order = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.long() * order).argmax(1)
        return normed[torch.arange(normed.shape[0], device=normed.device), last]

    # ---- the MLP branch ----------------------------------------------------------------------
    def mlp_branch(self, block):
        return block.mlp  # pre-norm: `h + mlp(post_attention_layernorm(h))` (Phi-3's dropout is the identity in eval)

    def mlp_output_projection(self, block):
        return block.mlp.down_proj

    def mlp_output_bias(self, block):
        """A `down_proj` with a bias, or a class whose config can give it one (Llama's `mlp_bias`): Qwen, Mistral,
        Gemma and Phi-3 have neither, so a folded map there has no bias."""
        proj = self.mlp_output_projection(block)
        return getattr(proj, "bias", None) is not None or hasattr(self.attention(block).config, "mlp_bias")

    # ---- export ------------------------------------------------------------------------
    def kept_config(self, config, kept):
        """The base renumbering (`num_hidden_layers`, `layer_types`), and Qwen's `max_window_layers` (the layers
        from which its sliding window applies) counted among the kept layers."""
        small = super().kept_config(config, kept)
        if getattr(small, "max_window_layers", None) is not None:
            small.max_window_layers = sum(b < config.max_window_layers for b in kept)
        return small

    def export_outputs(self, model):
        return ("logits",)

    def export_forward(self, model, inputs):
        return model.tail(*model.run(inputs)[:2])

    # ---- tiny test models ----------------------------------------------------------------
    def tiny_config(self, case: str | None = None, **overrides: Any) -> Any:
        """The reference checkpoint's config with `tiny_sizes` where it has those fields, and its token ids moved
        into the shrunk vocabulary (an id `i` past it becomes `i mod vocab_size`)."""
        import transformers

        if not self.tiny_models:
            raise NotImplementedError(f"the {self.name} family has no tiny test model (tiny_models)")
        case = case or next(iter(self.tiny_models))
        if case not in self.tiny_models:
            raise ValueError(f"{self.name} has no tiny model {case!r} (it has {', '.join(self.tiny_models)})")
        cls_name, fields = self.tiny_models[case]
        sizes = {k: v for k, v in self.tiny_sizes.items() if fields.get(k) is not None}
        merged = {**fields, **sizes, **overrides}
        vocab = int(merged.get("vocab_size", fields.get("vocab_size")))
        for key in TOKEN_ID_FIELDS:
            merged[key] = _wrap_ids(merged.get(key), vocab)
        config_class = getattr(transformers, cls_name).config_class
        return config_class(**{**merged, "architectures": [cls_name]})

    def tiny_inputs(self, config, *, batch=3, seed=0):
        """Random ids, the first sequence padded on the right and the second on the left (as a batch prepared for
        generation is)."""
        g = torch.Generator().manual_seed(seed)
        low = min(5, int(config.vocab_size) - 1)
        ids = torch.randint(low, int(config.vocab_size), (batch, 10), generator=g)
        mask = torch.ones_like(ids)
        pad = _first_id(config.pad_token_id) or 0
        mask[0, 6:] = 0
        ids[0, 6:] = pad
        if batch > 1:
            mask[1, :3] = 0
            ids[1, :3] = pad
        return {"input_ids": ids, "attention_mask": mask}

    def save_tiny_processor(self, config, directory: Path) -> None:
        """A byte-level tokenizer over the tiny vocabulary whose special tokens sit at the config's ids (padding with
        the end-of-sequence token where the config names no padding token): `tiny_tokenizer`."""
        tiny_tokenizer(config).save_pretrained(directory)


def tiny_tokenizer(config: Any) -> Any:
    """The tiny test tokenizer of a decoder `config` (`CausalLMFamily.save_tiny_processor`): byte-level BPE with no
    merges (each byte one token, as every family's own tokenizer class reads a byte-level vocabulary), its special
    tokens at the config's ids, the bytes on the other ids in order, unused ids past them."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = int(config.vocab_size)
    ids = {role: _first_id(getattr(config, f"{role}_token_id", None)) for role in ("bos", "eos", "pad")}
    if ids["pad"] is None:
        ids["pad"] = ids["eos"]
    names: dict[int, str] = {}
    for role, index in ids.items():
        if index is not None:
            names[index] = f"{names[index][:-1]}|{role}>" if index in names else f"<{role}>"
    alphabet = iter(sorted(pre_tokenizers.ByteLevel.alphabet()))
    if vocab - len(names) < 256:
        raise ValueError(f"a tiny tokenizer needs 256 byte tokens beside its special ones: vocab_size {vocab} is short")
    words = {names[i] if i in names else next(alphabet, f"<unused{i}>"): i for i in range(vocab)}
    tok = Tokenizer(models.BPE(words, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = {f"{role}_token": names[i] for role, i in ids.items() if i is not None}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def _wrap_ids(value: Any, vocab: int) -> Any:
    if isinstance(value, (list, tuple)):
        return [int(v) % vocab for v in value]
    return None if value is None else int(value) % vocab


def _first_id(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)
