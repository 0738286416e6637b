"""What the vision transformers share: `pixel_values` in, patch tokens with [CLS] first, a pre-norm MLP branch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .._family import TINY_SIZES, Family

EXAMPLE_IMAGE = (640, 480)  # width, height of the photo run through an image processor to learn its output size
SYNTHETIC_SIDE = 64  # the side of the made-up images run through a processor


class VisionFamily(Family):
    """Calling conventions shared by the vision families: pixel_values in, [CLS] after the final norm out."""

    modality = "image"
    input_names = ("pixel_values",)
    inputs_noun = "images"
    processor_class = "AutoImageProcessor"
    tiny_sizes: ClassVar[dict[str, Any]] = {**TINY_SIZES, "image_size": 32, "patch_size": 8, "num_channels": 3}

    # ---- inputs ------------------------------------------------------------------------
    def example_inputs(self, config, *, batch=1, seq_len=None, processor=None):
        """The processor's resize and crop decide the size, not `config.image_size` (DINOv2: 518, cropped to 224)."""
        if processor is not None:
            from PIL import Image

            pixels = processor(images=Image.new("RGB", EXAMPLE_IMAGE), return_tensors="pt")["pixel_values"].float()
        else:
            side, channels = _image_size(config)
            pixels = torch.zeros(1, channels, side, side)
        return {"pixel_values": pixels.expand(batch, *pixels.shape[1:]).contiguous()}

    def synthetic_inputs(self, config, *, batch, rng, offset=0, processor=None, max_length):
        if processor is not None:
            from PIL import Image

            shape = (SYNTHETIC_SIDE, SYNTHETIC_SIDE, 3)
            images = [Image.fromarray(rng.integers(0, 256, shape, dtype="uint8")) for _ in range(batch)]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        else:
            side, channels = _image_size(config)
            pixels = torch.from_numpy(rng.standard_normal((batch, channels, side, side)))
        return {"pixel_values": pixels.float()}

    # ---- running -----------------------------------------------------------------------
    def embed(self, embeddings, inputs):
        pixel_values = inputs["pixel_values"]
        weight = next(embeddings.parameters())
        return embeddings(pixel_values.to(device=weight.device, dtype=weight.dtype)), None

    def block_kwargs(self, config, hidden, mask, *, rotary=None):
        return {"attention_mask": None}  # every patch attends to every other

    def mlp_branch(self, block: nn.Module) -> nn.Module | None:
        return block.mlp  # ViT, DeiT, CLIP: `h + mlp(norm(h))` (ViT's dropout after it is the identity in eval)

    # ---- tiny test models ----------------------------------------------------------------
    def tiny_inputs(self, config, *, batch=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        side, channels = _image_size(config)
        return {"pixel_values": torch.randn(batch, channels, side, side, generator=g)}

    def save_tiny_processor(self, config, directory: Path) -> None:
        import transformers

        side, _ = _image_size(config)
        transformers.ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(directory)


def _image_size(config: Any) -> tuple[int, int]:
    """The side and channel count `config` describes (224 and 3 where it says nothing)."""
    return int(getattr(config, "image_size", 224)), int(getattr(config, "num_channels", 3))
