"""Model adapters: one per architecture family, exposing blocks, token layout, norm, embeddings and head.

A family is stateless: it finds the parts of a Hugging Face model, and knows how to run the
embeddings, one block, the final norm, the pooling and the head on parts it is handed. The
compressed model (`_compressed.py`) owns the parts; the family owns the calling conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class TokenLayout:
    """Where the special tokens sit: [CLS] index, then distillation / register tokens."""

    cls_index: int = 0
    num_prefix_tokens: int = 1  # [CLS] + distillation + registers
    num_registers: int = 0


@dataclass
class Parts:
    """The pieces of a model a compressed model is built from."""

    embeddings: nn.Module
    blocks: nn.ModuleList
    final_norm: nn.Module
    head: nn.Module | None
    head_kind: str | None  # "pooler", "cls", "cls+mean"


def _first(obj: Any, *paths: str) -> Any:
    for path in paths:
        cur = obj
        try:
            for name in path.split("."):
                cur = getattr(cur, name)
        except AttributeError:
            continue
        return cur
    raise AttributeError(f"{type(obj).__name__} has none of {paths}")


class Family:
    """Calling conventions shared by the vision families (pixel_values in, [CLS] after final norm out)."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    modality: ClassVar[str] = "image"
    backbone_attrs: ClassVar[tuple[str, ...]] = ()
    blocks_paths: ClassVar[tuple[str, ...]] = ("layers", "encoder.layer", "encoder.layers")
    norm_attr: ClassVar[str] = "layernorm"
    #: Why no Transformers class classifies this family's probe features (an exported probe is then a `classifier` on
    #: the pooled features, which `CompressedModel.from_pretrained` applies and Transformers' loaders leave out).
    classifier_missing: ClassVar[str] = "no Transformers class classifies these features"

    # ---- finding the parts -------------------------------------------------------------
    def backbone(self, model: nn.Module) -> nn.Module:
        for attr in self.backbone_attrs:
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                return inner
        return model

    def parts(self, model: nn.Module) -> Parts:
        bb = self.backbone(model)
        head, kind = self.find_head(model, bb)
        return Parts(self.find_embeddings(bb), _first(bb, *self.blocks_paths), getattr(bb, self.norm_attr), head, kind)

    def find_embeddings(self, backbone: nn.Module) -> nn.Module:
        return backbone.embeddings

    def find_head(self, model: nn.Module, backbone: nn.Module) -> tuple[nn.Module | None, str | None]:
        if model is not backbone and isinstance(getattr(model, "classifier", None), nn.Module):
            return model.classifier, "cls"
        pooler = getattr(backbone, "pooler", None)
        return (pooler, "pooler") if isinstance(pooler, nn.Module) else (None, None)

    def layout(self, config: Any) -> TokenLayout:
        return TokenLayout()

    def image_classifier(self, config: Any) -> tuple[str, str] | None:
        """The Transformers class that classifies this family's inputs, and what its classifier reads of the last
        hidden state after the final norm: "cls" (the [CLS] token: the probe's features) or "cls+mean" ([CLS] and
        the mean of the patch tokens). None where no class reads the probe's features (`classifier_missing`): a
        fitted probe can be exported as that class's classifier only where it reads what the probe was fitted on."""
        return None

    # ---- running -----------------------------------------------------------------------
    def embed(self, embeddings: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings' output `h_0` and the token mask (None when every token is real)."""
        pixel_values = inputs["pixel_values"]
        weight = next(embeddings.parameters())
        return embeddings(pixel_values.to(device=weight.device, dtype=weight.dtype)), None

    def block_mask(self, config: Any, hidden: torch.Tensor, mask: torch.Tensor | None) -> Any:
        """The attention-mask argument blocks take (None for images)."""
        return None

    def token_mask(self, inputs: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor | None:
        """The token mask `embed` returns with its output, without running the embeddings (None for images)."""
        return None

    def run_block(self, block: nn.Module, hidden: torch.Tensor, block_mask: Any) -> torch.Tensor:
        out = block(hidden, block_mask)
        return out[0] if isinstance(out, tuple) else out

    # ---- the MLP branch (pre-norm families: a block computes h_out = r + m, m its MLP branch's output) -----
    def mlp_branch(self, block: nn.Module) -> nn.Module | None:
        """The module whose output is the block's MLP branch `m` (after any layer scale), added to the residual
        stream `r` after attention: `h_out = r + m`. None where a block has no such branch (post-norm encoders)."""
        return block.mlp  # ViT, DeiT, CLIP: `h + mlp(norm(h))` (ViT's dropout after it is the identity in eval)

    def mlp_output_projection(self, block: nn.Module) -> nn.Linear:
        """The MLP branch's last `nn.Linear` (before any layer scale)."""
        return block.mlp.fc2

    def layer_scale(self, block: nn.Module) -> nn.Parameter | None:
        """The per-channel scale γ the MLP branch's output is multiplied by (DINOv2), or None."""
        return None

    def fold_mlp_output(self, block: nn.Module, weight, bias) -> nn.Module:
        """A copy of `block` whose MLP branch computes `m @ weight + bias` in place of `m` (`weight` (d, d),
        `bias` (d,), float64 arrays): γ and the map multiplied into the output projection (γ then set to 1).
        The original block is left untouched."""
        import copy

        import numpy as np

        if self.mlp_branch(block) is None:
            raise UnsupportedModelError(f"{self.name} blocks have no MLP branch to fold a map into")
        new = copy.deepcopy(block)
        proj = self.mlp_output_projection(new)
        a = torch.as_tensor(np.asarray(weight), dtype=torch.float64)
        b = torch.as_tensor(np.asarray(bias), dtype=torch.float64)
        w = proj.weight.detach().to(torch.float64).T  # (in, out): m = x @ w + b_out
        b_out = (
            proj.bias.detach().to(torch.float64)
            if proj.bias is not None
            else torch.zeros(w.shape[1], dtype=torch.float64)
        )
        gamma = self.layer_scale(new)
        if gamma is not None:
            g = gamma.detach().to(torch.float64)
            w, b_out = w * g, b_out * g
        with torch.no_grad():
            proj.weight.copy_((w @ a).T.to(proj.weight.dtype))
            if proj.bias is None:
                proj.bias = nn.Parameter(torch.zeros(proj.out_features, dtype=proj.weight.dtype))
            proj.bias.copy_((b_out @ a + b).to(proj.bias.dtype))
            if gamma is not None:
                gamma.fill_(1.0)
        return new

    def normalize(self, final_norm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm over the sequence (Hugging Face's `last_hidden_state`)."""
        return final_norm(hidden)

    def pool(self, final_norm: nn.Module, normed: torch.Tensor, mask: torch.Tensor | None, config: Any) -> torch.Tensor:
        """Pooled features: [CLS] after the final norm."""
        return normed[:, self.layout(config).cls_index]

    def run_head(
        self, head: nn.Module, kind: str, normed: torch.Tensor, mask: torch.Tensor | None, config: Any
    ) -> torch.Tensor:
        if kind == "pooler":
            return head(normed)
        layout = self.layout(config)
        cls = normed[:, layout.cls_index]
        if kind == "cls+mean":
            return head(torch.cat([cls, normed[:, layout.num_prefix_tokens :].mean(1)], dim=1))
        return head(cls)


_REGISTRY: dict[str, Family] = {}


def register_family(cls: type[Family]) -> type[Family]:
    """Register a model family (a `Family` subclass, stateless): `family_for` then finds it by the configs'
    `model_type`, `get_family` by its `name`, and the conformance suite (`toast.models.testing.check_family`)
    runs over it. A family claims its model types once: two families for one type would make loading ambiguous."""
    family = cls()
    taken = {t: f.name for f in _REGISTRY.values() for t in f.model_types if f.name != family.name}
    clash = [t for t in family.model_types if t in taken]
    if clash:
        raise ValueError(f"family {family.name!r}: model types {clash} are already {taken[clash[0]]!r}'s")
    _REGISTRY[family.name] = family
    return cls


def list_families() -> tuple[str, ...]:
    """The names of the registered families, in registration order."""
    return tuple(_REGISTRY)


def get_family(name: str) -> Family:
    """The registered family called `name`; `UnsupportedModelError` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedModelError(f"unknown model family {name!r} (known: {', '.join(_REGISTRY)})") from None


def families() -> tuple[Family, ...]:
    """Every registered family."""
    return tuple(_REGISTRY.values())


@register_family
class ViTFamily(Family):
    name = "vit"
    model_types = ("vit",)
    backbone_attrs = ("vit",)

    def image_classifier(self, config):
        return "ViTForImageClassification", "cls"  # classifier(layernorm(h)[:, 0])


@register_family
class DeiTFamily(Family):
    name = "deit"
    model_types = ("deit",)
    backbone_attrs = ("deit",)

    def layout(self, config: Any) -> TokenLayout:
        return TokenLayout(cls_index=0, num_prefix_tokens=2)  # [CLS], [DIST]

    def image_classifier(self, config):
        return "DeiTForImageClassification", "cls"  # classifier(layernorm(h)[:, 0]); not the distilled two-head class

    def find_head(self, model, backbone):
        if model is not backbone and not isinstance(getattr(model, "classifier", None), nn.Module):
            raise UnsupportedModelError(
                f"{type(model).__name__}: only DeiT heads with one classifier are supported; load the backbone (DeiTModel) instead"
            )
        return super().find_head(model, backbone)


@register_family
class Dinov2Family(Family):
    name = "dinov2"
    model_types = ("dinov2", "dinov2_with_registers")
    backbone_attrs = ("dinov2", "dinov2_with_registers")

    def layout(self, config: Any) -> TokenLayout:
        r = int(getattr(config, "num_register_tokens", 0) or 0)
        return TokenLayout(cls_index=0, num_prefix_tokens=1 + r, num_registers=r)

    def image_classifier(self, config):
        # classifier(concat([CLS], mean of the patch tokens)), registers left out of the mean
        if getattr(config, "model_type", None) == "dinov2_with_registers":
            return "Dinov2WithRegistersForImageClassification", "cls+mean"
        return "Dinov2ForImageClassification", "cls+mean"

    def find_head(self, model, backbone):
        if model is not backbone and isinstance(getattr(model, "classifier", None), nn.Module):
            return model.classifier, "cls+mean"
        return None, None

    def mlp_branch(self, block):
        return block.layer_scale2

    def mlp_output_projection(self, block):
        mlp = block.mlp
        return mlp.fc2 if hasattr(mlp, "fc2") else mlp.down_proj  # plain or SwiGLU feed-forward

    def layer_scale(self, block):
        return block.layer_scale2.lambda1


@register_family
class ClipVisionFamily(Family):
    name = "clip-vision"
    model_types = ("clip", "clip_vision_model")
    backbone_attrs = ("vision_model",)
    norm_attr = "post_layernorm"
    classifier_missing = (
        "CLIPForImageClassification classifies the mean of the patch tokens before the final norm, not the "
        "post-normed [CLS] the probe reads"
    )

    def find_embeddings(self, backbone: nn.Module) -> nn.Module:
        # CLIP normalizes the embeddings before the first block (h_0 is after `pre_layrnorm`)
        return nn.Sequential(backbone.embeddings, backbone.pre_layrnorm)

    def find_head(self, model, backbone):
        return None, None

    def normalize(self, final_norm, hidden):
        return hidden  # CLIP's post-norm applies to the pooled [CLS] only

    def pool(self, final_norm, normed, mask, config):
        return final_norm(normed[:, 0])


@register_family
class BertFamily(Family):
    name = "bert"
    modality = "text"
    model_types = ("bert", "roberta", "xlm-roberta")
    backbone_attrs = ("bert", "roberta")
    norm_attr = ""
    classifier_missing = (
        "BertForSequenceClassification classifies the pooler's tanh(dense([CLS])), not the mean of the tokens the "
        "probe reads"
    )

    def parts(self, model: nn.Module) -> Parts:
        bb = self.backbone(model)
        head, kind = self.find_head(model, bb)
        return Parts(bb.embeddings, _first(bb, *self.blocks_paths), nn.Identity(), head, kind)

    def find_head(self, model, backbone):
        pooler = getattr(backbone, "pooler", None)
        return (pooler, "pooler") if isinstance(pooler, nn.Module) else (None, None)

    def mlp_branch(self, block):
        return None  # post-norm: the LayerNorm after the residual add leaves no additive MLP branch

    def embed(self, embeddings, inputs):
        ids = inputs["input_ids"]
        device = next(embeddings.parameters()).device
        ids = ids.to(device)
        mask = self.token_mask(inputs, device)
        kwargs = {}
        if inputs.get("token_type_ids") is not None:
            kwargs["token_type_ids"] = inputs["token_type_ids"].to(device)
        return embeddings(input_ids=ids, **kwargs), mask

    def token_mask(self, inputs, device):
        mask = inputs.get("attention_mask")
        if mask is None:  # every token real
            return torch.ones(inputs["input_ids"].shape, dtype=torch.bool, device=device)
        return mask.to(device).bool()

    def block_mask(self, config, hidden, mask):
        from transformers.masking_utils import create_bidirectional_mask

        # Always materialized (no all-ones shortcut), so a traced forward and an eager one agree.
        return create_bidirectional_mask(
            config=config, inputs_embeds=hidden, attention_mask=mask.long(), allow_is_bidirectional_skip=False
        )

    def pool(self, final_norm, normed, mask, config):
        """Mean over real tokens, as sentence-transformers pools."""
        m = mask.to(normed.dtype).unsqueeze(-1)
        return (normed * m).sum(1) / m.sum(1).clamp_min(1e-9)


def family_for(config: Any) -> Family:
    """The family that handles a Hugging Face config, or a clear error naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    for family in _REGISTRY.values():
        if model_type in family.model_types:
            return family
    supported = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in _REGISTRY.values())
    raise UnsupportedModelError(f"unsupported architecture {model_type!r}: supported families are {supported}")
