"""DeiT (`facebook/deit-*`): ViT with a distillation token after [CLS]; only one-classifier heads."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...errors import UnsupportedModelError
from .._family import TokenLayout, register_family
from ._vision import VisionFamily


@register_family
class DeiTFamily(VisionFamily):
    name = "deit"
    model_types = ("deit",)
    backbone_attrs = ("deit",)
    tiny_models = {"deit": ("DeiTModel", {})}  # facebook/deit-small-patch16-224's fields are DeiTConfig's defaults

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
