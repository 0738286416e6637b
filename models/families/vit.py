"""ViT (`google/vit-*`, `WinKawaks/vit-*`, the shipped demo-vit): [CLS] after the final norm, a pre-norm MLP."""

from __future__ import annotations

from .._family import register_family
from ._vision import VisionFamily


@register_family
class ViTFamily(VisionFamily):
    name = "vit"
    model_types = ("vit",)
    backbone_attrs = ("vit",)
    # google/vit-base-patch16-224's fields are ViTConfig's defaults; the classifier case reads [CLS]
    tiny_models = {"vit": ("ViTModel", {}), "vit-cls": ("ViTForImageClassification", {"num_labels": 5})}

    def image_classifier(self, config):
        return "ViTForImageClassification", "cls"  # classifier(layernorm(h)[:, 0])
