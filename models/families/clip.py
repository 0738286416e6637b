"""CLIP's vision tower (`laion/CLIP-ViT-*`, `openai/clip-vit-*`): a norm before the first block, the post-norm on
the pooled [CLS] only; a whole CLIP checkpoint loads as its vision tower."""

from __future__ import annotations

from torch import nn

from .._family import register_family
from ._vision import VisionFamily


@register_family
class ClipVisionFamily(VisionFamily):
    name = "clip-vision"
    model_types = ("clip", "clip_vision_model")
    backbone_attrs = ("vision_model",)
    norm_attr = "post_layernorm"
    classifier_missing = (
        "CLIPForImageClassification classifies the mean of the patch tokens before the final norm, not the "
        "post-normed [CLS] the probe reads"
    )
    # openai/clip-vit-base-patch32's vision fields are CLIPVisionConfig's defaults (quick_gelu; laion's use gelu)
    tiny_models = {"clip": ("CLIPVisionModel", {})}

    def model_class(self, config):
        import transformers

        if config.model_type == "clip":  # the whole checkpoint: its vision tower
            return transformers.CLIPVisionModel
        return super().model_class(config)

    def find_embeddings(self, backbone: nn.Module) -> nn.Module:
        # CLIP normalizes the embeddings before the first block (h_0 is after `pre_layrnorm`)
        return nn.Sequential(backbone.embeddings, backbone.pre_layrnorm)

    def find_head(self, model, backbone):
        return None, None

    def normalize(self, final_norm, hidden):
        return hidden  # CLIP's post-norm applies to the pooled [CLS] only

    def pool(self, final_norm, normed, mask, config):
        return final_norm(normed[:, 0])
