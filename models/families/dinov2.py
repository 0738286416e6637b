"""DINOv2 (`facebook/dinov2-*`), with or without register tokens: a layer scale γ on the MLP branch, the
classifier reading [CLS] and the mean of the patch tokens."""

from __future__ import annotations

from typing import Any

from torch import nn

from .._family import TokenLayout, register_family
from ._vision import VisionFamily


@register_family
class Dinov2Family(VisionFamily):
    name = "dinov2"
    model_types = ("dinov2", "dinov2_with_registers")
    backbone_attrs = ("dinov2", "dinov2_with_registers")
    # facebook/dinov2-base's fields are Dinov2Config's defaults (the MLP is mlp_ratio × the width)
    tiny_models = {
        "dinov2": ("Dinov2Model", {}),
        "dinov2-reg": ("Dinov2WithRegistersModel", {"num_register_tokens": 2}),
    }

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
