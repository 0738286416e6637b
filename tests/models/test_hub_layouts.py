"""GFLOPs and params of folders laid out like the hub's checkpoints, counted at what their processors output.

Each folder holds the hub's own `config.json` and `preprocessor_config.json` (their fields as
published; the classifiers' 1000 ImageNet names are numbered instead) and random weights saved with
safetensors. Loaded with the project's loader and measured with its cost table, the original models
give the papers' figures: DINOv2-B's processor crops to 224 although its config says 518.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers as T
from PIL import Image
from test_flops import reference_flops

from toast.data import LabeledSplit, iter_batches
from toast.models import LoadedModel, example_inputs, load_model, measure_cost_table
from toast.spaces import Plan

IMAGENET = {str(i): f"LABEL_{i}" for i in range(1000)}  # the hub files name the 1000 ImageNet classes
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

HUB = {
    "facebook/dinov2-base": (
        {
            "architectures": ["Dinov2Model"],
            "attention_probs_dropout_prob": 0.0,
            "drop_path_rate": 0.0,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "hidden_size": 768,
            "image_size": 518,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-06,
            "layerscale_value": 1.0,
            "mlp_ratio": 4,
            "model_type": "dinov2",
            "num_attention_heads": 12,
            "num_channels": 3,
            "num_hidden_layers": 12,
            "patch_size": 14,
            "qkv_bias": True,
            "torch_dtype": "float32",
            "transformers_version": "4.31.0.dev0",
            "use_swiglu_ffn": False,
        },
        {
            "crop_size": {"height": 224, "width": 224},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": IMAGENET_MEAN,
            "image_processor_type": "BitImageProcessor",
            "image_std": IMAGENET_STD,
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": 256},
        },
    ),
    "google/vit-base-patch16-224": (
        {
            "architectures": ["ViTForImageClassification"],
            "attention_probs_dropout_prob": 0.0,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "hidden_size": 768,
            "id2label": IMAGENET,
            "image_size": 224,
            "initializer_range": 0.02,
            "intermediate_size": 3072,
            "label2id": {v: int(k) for k, v in IMAGENET.items()},
            "layer_norm_eps": 1e-12,
            "model_type": "vit",
            "num_attention_heads": 12,
            "num_channels": 3,
            "num_hidden_layers": 12,
            "patch_size": 16,
            "qkv_bias": True,
            "transformers_version": "4.13.0.dev0",
        },
        {
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "ViTFeatureExtractor",
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "resample": 2,
            "size": 224,
        },
    ),
    "facebook/deit-small-patch16-224": (
        {
            "architectures": ["ViTForImageClassification"],
            "attention_probs_dropout_prob": 0.0,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "hidden_size": 384,
            "id2label": IMAGENET,
            "image_size": 224,
            "initializer_range": 0.02,
            "intermediate_size": 1536,
            "label2id": {v: int(k) for k, v in IMAGENET.items()},
            "layer_norm_eps": 1e-12,
            "model_type": "vit",
            "num_attention_heads": 6,
            "num_channels": 3,
            "num_hidden_layers": 12,
            "patch_size": 16,
            "qkv_bias": True,
            "transformers_version": "4.6.0.dev0",
        },
        {
            "crop_size": 224,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "DeiTFeatureExtractor",
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
            "resample": 3,
            "size": 256,
        },
    ),
    "laion/CLIP-ViT-B-16-laion2B-s34B-b88K": (  # the whole CLIP checkpoint: the loader takes its vision tower
        {
            "architectures": ["CLIPModel"],
            "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592,
            "model_type": "clip",
            "projection_dim": 512,
            "torch_dtype": "float32",
            "text_config": {
                "hidden_act": "gelu",
                "hidden_size": 512,
                "intermediate_size": 2048,
                "layer_norm_eps": 1e-05,
                "max_position_embeddings": 77,
                "model_type": "clip_text_model",
                "num_attention_heads": 8,
                "num_hidden_layers": 12,
                "projection_dim": 512,
                "vocab_size": 49408,
                "bos_token_id": 0,
                "eos_token_id": 2,
                "pad_token_id": 1,
            },
            "vision_config": {
                "hidden_act": "gelu",
                "hidden_size": 768,
                "image_size": 224,
                "intermediate_size": 3072,
                "layer_norm_eps": 1e-05,
                "model_type": "clip_vision_model",
                "num_attention_heads": 12,
                "num_hidden_layers": 12,
                "num_channels": 3,
                "patch_size": 16,
                "projection_dim": 512,
            },
        },
        {
            "crop_size": 224,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": OPENAI_MEAN,
            "image_std": OPENAI_STD,
            "resample": 3,
            "size": 224,
        },
    ),
}

# (GFLOPs, M params) of the original models at their 224 crop, in the papers' convention (fvcore,
# multiply-add = 1 flop, attention products at 2; see test_flops.py). DINOv2-B: TOAST's tables. The
# two classifiers have no pooler but a 1000-way head: DeiT-S 4.97 GFLOPs as in TOAST, 22.05M params
# (DeiT's "22M"; TOAST's 21.81M is the backbone with its pooler, checked below). ViT-B/16 and CLIP's
# vision tower have the same blocks: 18.31 GFLOPs here is the DeiT paper's 17.6 with the attention
# products counted once more; 86.57M is ViT-B's 86.6M, 85.80M is CLIP's tower without its projection.
ORIGINAL = {
    "facebook/dinov2-base": (24.42, 86.58),
    "google/vit-base-patch16-224": (18.31, 86.57),
    "facebook/deit-small-patch16-224": (4.97, 22.05),
    "laion/CLIP-ViT-B-16-laion2B-s34B-b88K": (18.31, 85.80),
}
FLAVOURS = {"slow": False, "fast": True}  # use_fast; without torchvision transformers 5 falls back to the PIL one


def save_hub_layout(hub_id: str, folder: Path) -> Path:
    """`hub_id`'s two JSON files as published, with random weights of that shape in `model.safetensors`."""
    config_json, processor_json = HUB[hub_id]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config_json, indent=2))
    config = T.AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = getattr(T, config.architectures[0])(config)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "config.json").write_text(json.dumps(config_json, indent=2))  # the hub's file, not a re-serialisation
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_json, indent=2))
    return folder


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every hub layout, saved once."""
    root = tmp_path_factory.mktemp("hub")
    return {hub_id: save_hub_layout(hub_id, root / hub_id.replace("/", "--")) for hub_id in HUB}


@pytest.fixture(scope="module")
def loaded_models(hub_dirs) -> dict[str, LoadedModel]:
    """Every hub layout through the project's loader, once."""
    return {hub_id: load_model(str(path)) for hub_id, path in hub_dirs.items()}


def with_flavour(loaded: LoadedModel, folder: Path, flavour: str) -> LoadedModel:
    """`loaded` with its processor loaded again as the slow (PIL) or the fast (torchvision) flavour."""
    processor = T.AutoImageProcessor.from_pretrained(folder, use_fast=FLAVOURS[flavour])
    return dataclasses.replace(loaded, processor=processor)


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("hub_id", HUB)
def test_original_model_at_its_crop(hub_dirs, loaded_models, hub_id, flavour):
    loaded = with_flavour(loaded_models[hub_id], hub_dirs[hub_id], flavour)
    assert tuple(example_inputs(loaded)["pixel_values"].shape) == (1, 3, 224, 224)
    original = measure_cost_table(loaded).original
    assert (round(original.flops / 1e9, 2), round(original.params / 1e6, 2)) == ORIGINAL[hub_id]
    assert original.params == sum(p.numel() for p in loaded.model.parameters())


@pytest.mark.slow
def test_vit_base_and_clip_match_the_hand_formula(loaded_models):
    """ViT-B/16 and CLIP-B/16 (not in TOAST's tables) against test_flops' independent hand count."""
    d, n = 768, 197
    ref = reference_flops(d=d, f=4 * d, layers_=12, n=n, patch=16, pooler=False)["total"]
    vit = measure_cost_table(loaded_models["google/vit-base-patch16-224"]).original.flops
    assert vit == ref + d * 1000  # the classifier on [CLS]
    clip = measure_cost_table(loaded_models["laion/CLIP-ViT-B-16-laion2B-s34B-b88K"]).original.flops
    assert clip == ref + 5 * d  # a pre-norm over every token, the post-norm on [CLS] only


@pytest.mark.slow
def test_deit_small_backbone_is_toasts_21_81m(loaded_models):
    """The hub's DeiT-S classifier less its head, plus the pooler TOAST counts, is TOAST's 21.81M."""
    loaded = loaded_models["facebook/deit-small-patch16-224"]
    d = loaded.hidden_size
    head = sum(p.numel() for p in loaded.parts.head.parameters())
    assert head == d * 1000 + 1000
    assert round((measure_cost_table(loaded).original.params - head + d * d + d) / 1e6, 2) == 21.81


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_dinov2_base_replaced_blocks(hub_dirs, loaded_models, flavour):
    """TOAST's DINOv2-B rows: one block replaced by identity 22.39, by a linear translator 22.54."""
    hub_id = "facebook/dinov2-base"
    costs = measure_cost_table(with_flavour(loaded_models[hub_id], hub_dirs[hub_id], flavour))
    n = costs.num_blocks
    for spans in ("0->1", "5->6", "2->3"):
        assert round(costs.cost(Plan.parse(f"{spans}:identity", n)).flops / 1e9, 2) == 22.39
        assert round(costs.cost(Plan.parse(f"{spans}:linear", n)).flops / 1e9, 2) == 22.54
    assert round(costs.cost(Plan.parse("0->1:identity,2->3:identity", n)).flops / 1e9, 2) == 20.37
    assert round(costs.cost(Plan.parse("0->4:linear", n)).flops / 1e9, 2) == 16.47


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_processor_output_size_wins_over_config(hub_dirs, loaded_models, tmp_path, flavour):
    """The size is what the processor outputs, whatever config.image_size (518) or its own crop say."""
    hub_id = "facebook/dinov2-base"
    loaded = with_flavour(loaded_models[hub_id], hub_dirs[hub_id], flavour)
    assert loaded.config.image_size == 518
    assert tuple(example_inputs(loaded)["pixel_values"].shape) == (1, 3, 224, 224)
    # another crop: the count follows it (16x16 patches of 14 pixels)
    folder = tmp_path / "crop-252"
    loaded.processor.save_pretrained(folder)
    processor = T.AutoImageProcessor.from_pretrained(
        folder, crop_size={"height": 252, "width": 252}, use_fast=FLAVOURS[flavour]
    )
    recropped = dataclasses.replace(loaded, processor=processor)
    assert tuple(example_inputs(recropped)["pixel_values"].shape) == (1, 3, 252, 252)
    assert measure_cost_table(recropped).input_description == "pixel_values (1, 3, 252, 252)"
    # no processor: the config's size is all there is
    bare = dataclasses.replace(loaded, processor=None)
    assert tuple(example_inputs(bare)["pixel_values"].shape) == (1, 3, 518, 518)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_dataset_images_preprocess_to_the_costed_size(hub_dirs, loaded_models, flavour):
    """Images of any size go through the processor to the very shape the costs are counted at."""
    import datasets

    hub_id = "facebook/dinov2-base"
    loaded = with_flavour(loaded_models[hub_id], hub_dirs[hub_id], flavour)
    images = [Image.new("RGB", size) for size in ((20, 20), (300, 200), (200, 700))]
    ds = datasets.Dataset.from_dict(
        {"img": images, "label": [0, 1, 2]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}),
    )
    split = LabeledSplit(ds, "made-up", "train", "img", "label", "image")
    shapes = {
        tuple(inputs["pixel_values"].shape[1:]) for _, inputs in iter_batches(split, [0, 1, 2], loaded.processor, 1)
    }
    assert shapes == {tuple(example_inputs(loaded)["pixel_values"].shape[1:])} == {(3, 224, 224)}
