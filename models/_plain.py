"""The two layouts of a saved compressed model, and how each is written and read back.

- **plain**: every span passes its input on (identity, or `folded` into its source block), so the compressed
  model is the original architecture with fewer layers. `config.json` and the weights are a standard
  Transformers checkpoint of the source's class (`num_hidden_layers` = the kept count, the kept layers
  renumbered 0…k-1): `AutoModel.from_pretrained` loads it without toast.
- **toast**: a plan with fitted translators. `config.json` is a stub Transformers refuses, with the hint to
  load the folder with `toast.models.CompressedModel.from_pretrained`; the source's config is in `toast.json`.

Folders of the first format (`format_version` 1: `config.json` the source's config) still load.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

PLAIN, TOAST = "plain", "toast"
LOAD_HINT = "load it with toast.models.CompressedModel.from_pretrained (pip install toast-search)"
#: `AutoConfig` raises "The checkpoint you are trying to load has model type `…` but Transformers does not
#: recognize this architecture": the unknown type itself carries the hint.
TOAST_MODEL_TYPE = f"toast-compressed: not a Transformers checkpoint, {LOAD_HINT}"


def plain_refusal(model: Any) -> str | None:
    """Why `model` (a `CompressedModel`) cannot be written as a plain Transformers checkpoint, or None if it can."""
    import transformers

    with_module = [key for key, module in model.translators.items() if not isinstance(module, nn.Identity)]
    if with_module:
        return f"spans with a translator module ({', '.join(with_module)})"
    if not isinstance(getattr(transformers, model.model_class, None), type):
        return f"{model.model_class} is not a Transformers class"
    return None


def kept_layers_config(config: Any, kept: Sequence[int]) -> Any:
    """A copy of the source's `config` for the `kept` layers only (renumbered 0 … k-1): `num_hidden_layers` and the
    per-layer fields Transformers' configs have (`layer_types`, so that a decoder's layer i is built with the
    attention kind, sliding window and KV-cache layer of the block it holds; a backbone's stages). A model built from
    it numbers its layers 0 … k-1 (each attention's `layer_idx`, the cache entry it reads and writes).
    `Family.kept_config` calls it; a family whose configs hold other per-layer fields adds them there."""
    small = copy.deepcopy(config)
    kept = list(kept)
    small.num_hidden_layers = len(kept)
    if isinstance(getattr(small, "layer_types", None), (list, tuple)):  # one entry per layer
        small.layer_types = [small.layer_types[b] for b in kept]
    if getattr(small, "stage_names", None) is not None:  # backbone configs (DINOv2): "stem", "stage1" … per layer
        # stage i is h_i; with identity spans, h_i equals the output of the last kept block before block i
        old = getattr(small, "out_indices", None) or []
        new = sorted({sum(b < i for b in kept) for i in old})
        small.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(kept) + 1)]
        small.set_output_features_output_indices(out_features=None, out_indices=new or None)
    return small


def plain_model(model: Any) -> nn.Module:
    """The Transformers model of the source's class holding exactly `model`'s weights, its layers renumbered."""
    import transformers

    reason = plain_refusal(model)
    if reason:
        raise ValueError(f"not a plain checkpoint: {reason}")
    ref = next(model.parameters())
    skeleton = getattr(transformers, model.model_class)(_plain_config(model))
    skeleton = skeleton.to(dtype=ref.dtype).eval()
    parts = model.family.parts(skeleton)
    if len(parts.blocks) != len(model.plan.kept):
        raise ValueError(f"the {model.model_class} built has {len(parts.blocks)} layers, not {len(model.plan.kept)}")
    pairs = [(parts.embeddings, model.embeddings), (parts.final_norm, model.final_norm)]
    pairs += [(parts.blocks[i], model.blocks[str(b)]) for i, b in enumerate(model.plan.kept)]
    if parts.head is not None or model.head is not None:
        if parts.head is None or model.head is None:
            raise ValueError(f"the {model.model_class} built and the compressed model disagree on the head")
        pairs.append((parts.head, model.head))
    covered = set()
    for target, source in pairs:
        _load_exactly(target, source.state_dict(), model.model_class)
        covered |= {id(t) for t in target.state_dict(keep_vars=True).values()}
    left = [k for k, t in skeleton.state_dict(keep_vars=True).items() if id(t) not in covered]
    if left:  # a weight of the class the compressed model has no part for would be saved at random
        raise ValueError(f"{model.model_class} weights outside the compressed model's parts: {', '.join(left[:5])}")
    return skeleton


def _plain_config(model: Any) -> Any:
    """The kept layers' config (`Family.kept_config`), with `mlp_bias` on where the source's config has it off but a
    kept block's MLP output projection holds a bias (a `folded` span's `b`): Llama's MLP then has a bias on each of
    its projections, the ones the compressed model has none for saved as zeros (`_load_exactly`), the same output."""
    config = model.family.kept_config(model.config, model.plan.kept)
    if getattr(config, "mlp_bias", None) is False:
        projections = [model.family.mlp_output_projection(model.blocks[str(b)]) for b in model.plan.kept]
        if any(getattr(p, "bias", None) is not None for p in projections):
            config.mlp_bias = True
    return config


def _load_exactly(target: nn.Module, state: dict[str, torch.Tensor], model_class: str) -> None:
    """`target.load_state_dict(state)`, a bias `state` lacks set to zero (the same map); a weight of `state` that
    `target` has no place for (a folded bias in a class whose MLP has none) is a `ValueError`: not a plain checkpoint."""
    missing, unexpected = target.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{model_class} has no place for the compressed model's {', '.join(unexpected[:5])}")
    weights = target.state_dict(keep_vars=True)
    unset = [k for k in missing if not k.endswith("bias")]
    if unset:
        raise ValueError(f"the compressed model has no {', '.join(unset[:5])} for {model_class}")
    with torch.no_grad():
        for key in missing:
            weights[key].zero_()


def save_toast_config(config: Any, directory: Path) -> dict:
    """Write the stub config.json that Transformers refuses; return the source's config to keep in toast.json."""
    stub = {
        "model_type": TOAST_MODEL_TYPE,
        # a Transformers class's own `from_pretrained` skips the type check: its strict config refuses this value
        "num_hidden_layers": f"see toast.json: {LOAD_HINT}",
        "toast_layout": TOAST,
    }
    (directory / "config.json").write_text(json.dumps(stub, indent=2))
    return json.loads(config.to_json_string(use_diff=True))


def source_config(directory: Path, meta: dict) -> Any:
    """The source model's config of a toast-format folder (in toast.json; config.json in the first format)."""
    import transformers

    saved = meta.get("source_config")
    if saved is None:  # format_version 1
        return transformers.AutoConfig.from_pretrained(directory)
    return transformers.CONFIG_MAPPING[saved["model_type"]].from_dict(dict(saved))


def load_plain(directory: Path, model_class: str) -> nn.Module:
    """The plain checkpoint in `directory`, loaded with Transformers (float32, as the toast format loads)."""
    import transformers

    cls = getattr(transformers, model_class, None) or transformers.AutoModel
    return cls.from_pretrained(directory, dtype=torch.float32)


def checkpoint_layout(directory: str | Path) -> str:
    """`"plain"` or `"toast"` for a folder written by `CompressedModel.save_pretrained`."""
    meta = json.loads((Path(directory) / "toast.json").read_text())
    return meta.get("layout", TOAST)


def describe_checkpoint(directory: str | Path) -> str:
    """One line for users: how the folder loads."""
    sentence = json.loads((Path(directory) / "toast.json").read_text()).get("sentence_transformers")
    if checkpoint_layout(directory) == PLAIN:
        also = "; and sentence_transformers.SentenceTransformer" if sentence and sentence.get("written") else ""
        config = json.loads((Path(directory) / "config.json").read_text())
        archs = config.get("architectures") or []
        if any(a.endswith("ForImageClassification") for a in archs):
            loader = 'transformers.pipeline("image-classification") and AutoModelForImageClassification load it'
        elif any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            loader = 'transformers.pipeline("text-generation") and AutoModelForCausalLM load it'
        else:
            loader = "transformers.AutoModel.from_pretrained loads it"
        return f"a plain Transformers checkpoint ({loader}{also})"
    also = "; SentenceTransformer needs the plain format" if sentence else ""
    return f"toast format (fitted translators: load it with toast.models.CompressedModel.from_pretrained{also})"
