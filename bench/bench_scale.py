"""Scale bench: the capture's memory, disk and time, and the fit of every span, on the hub's large layouts (issue 22).

Each config carries the real fields of its hub checkpoint's config.json (random weights, nothing is downloaded):

  vit-b     google/vit-base-patch16-224         12 blocks × 768
  vit-l     google/vit-large-patch16-224        24 blocks × 1024
  vit-h     google/vit-huge-patch14-224-in21k   32 blocks × 1280
  dinov2-g  facebook/dinov2-giant               40 blocks × 1536 (SwiGLU MLP, layer scale; 224 crop)
  llama-8b  meta-llama/Llama-3.1-8B             32 blocks × 4096, of which `--llm-layers` are built

The vision configs go through the product path, one subprocess each (so each has its own peak RSS): the model and
its processor are saved to a temporary folder with a `save_to_disk` dataset of random images, `toast.search.prepare`
builds the default search space (`SearchSettings` defaults: translators identity,linear, no `max_removed`) and the
calibration settings from it, `toast.capture.calibrate` captures the statistics into a fresh cache, and every span of
the space is fitted from them with every kind of the space (`toast.spaces.fit_span`), the model still loaded as in
a search. Measured: peak RSS (`ru_maxrss`) after loading, capture and fits; the cache entry's disk; capture seconds
against a plain forward over the same batches; fit seconds per span; the manifest's `pair_passes`.

The Llama config measures the ENGINE, not the product path (the product path needs the checkpoint's tokenizer, which
is not on this offline machine, and issue 23's llama family landed while this bench was written): a stack of
`--llm-layers` full-width `LlamaDecoderLayer`s with rotary embeddings and the causal mask, fed random token
embeddings (`--llm-samples` × `--llm-seq-len`); h_0 … h_L of each batch go to `toast.spaces.StatsAccumulator` for the
pairs of the default space (`space_pairs`), planned by `plan_passes` into `--stats-memory-gb` (a pass per group, as
the capture does). Its per-layer figures are extrapolated to 32 layers and 128 × 2,048 tokens by the rule printed
with the table.

The estimate columns come from `toast.capture.estimate_resources`: for a vision config, the estimate `prepare` itself
made before loading the weights; for the Llama stack, the API called with the stack's shape (`estimate`). The
"anonymous" peak is sampled from /proc (`RssAnon`): `ru_maxrss` also counts the pages of memory-mapped files (weights
loaded from safetensors, the statistics' blocks read by the fits), which the kernel may drop.

The defaults (every span fitted, each config's sample count the smallest with more tokens than the width) took 37 min
on the 2-core machine shared with other jobs; `--replay` prints the tables again from a `--json` file.

    python bench/bench_scale.py --json scale.json                 # every config at its default sample count
    python bench/bench_scale.py --models vit-l --samples 500      # the issue's goal: ViT-L at 500 images
    python bench/bench_scale.py --models vit-l --samples 500 --stats-memory-gb 1.5 --batch-size 8 --no-forward
    python bench/bench_scale.py --models llama-8b --llm-layers 2 --stats-memory-gb 0.5
    python bench/bench_scale.py --replay scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

GB = 1024**3

# ---- the hub configs (fields copied from each checkpoint's config.json) --------------------------------------------
_VIT_COMMON = {
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "model_type": "vit",
    "num_channels": 3,
    "qkv_bias": True,
}
# ViTImageProcessor of the google/vit-* checkpoints: 224×224 bilinear, mean = std = 0.5
_VIT_PROCESSOR = (
    "ViTImageProcessor",
    {
        "do_normalize": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
        "size": {"height": 224, "width": 224},
    },
)


@dataclass(frozen=True)
class VisionConfig:
    """One hub checkpoint's layout: the class it is saved as, its config fields and its image processor."""

    hub: str
    architecture: str
    config: dict[str, Any]
    processor: tuple[str, dict[str, Any]]
    samples: int  # the default calibration samples: what finishes on a 2-core CPU, with more tokens than the width

    @property
    def num_blocks(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def width(self) -> int:
        return int(self.config["hidden_size"])


VISION: dict[str, VisionConfig] = {
    "vit-b": VisionConfig(
        hub="google/vit-base-patch16-224",
        architecture="ViTForImageClassification",
        config={
            **_VIT_COMMON,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "image_size": 224,
            "patch_size": 16,
            "num_labels": 1000,
        },
        processor=_VIT_PROCESSOR,
        samples=32,
    ),
    "vit-l": VisionConfig(
        hub="google/vit-large-patch16-224",
        architecture="ViTForImageClassification",
        config={
            **_VIT_COMMON,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
            "image_size": 224,
            "patch_size": 16,
            "num_labels": 1000,
        },
        processor=_VIT_PROCESSOR,
        samples=8,
    ),
    "vit-h": VisionConfig(
        hub="google/vit-huge-patch14-224-in21k",
        architecture="ViTModel",
        config={
            **_VIT_COMMON,
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_attention_heads": 16,
            "num_hidden_layers": 32,
            "image_size": 224,
            "patch_size": 14,
        },
        processor=_VIT_PROCESSOR,
        samples=8,
    ),
    "dinov2-g": VisionConfig(
        hub="facebook/dinov2-giant",
        architecture="Dinov2Model",
        config={
            "attention_probs_dropout_prob": 0.0,
            "drop_path_rate": 0.0,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "hidden_size": 1536,
            "image_size": 518,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-06,
            "layerscale_value": 1.0,
            "mlp_ratio": 4,
            "model_type": "dinov2",
            "num_attention_heads": 24,
            "num_channels": 3,
            "num_hidden_layers": 40,
            "patch_size": 14,
            "qkv_bias": True,
            "use_swiglu_ffn": True,
        },
        # BitImageProcessor of facebook/dinov2-*: shortest edge 256 (bicubic), center crop 224, ImageNet mean/std
        processor=(
            "BitImageProcessor",
            {
                "crop_size": {"height": 224, "width": 224},
                "do_center_crop": True,
                "do_convert_rgb": True,
                "do_normalize": True,
                "do_resize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
                "resample": 3,
                "size": {"shortest_edge": 256},
            },
        ),
        samples=6,
    ),
}

LLAMA = "llama-8b"
LLAMA_HUB = "meta-llama/Llama-3.1-8B"
LLAMA_8B: dict[str, Any] = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "vocab_size": 128256,
}
LLAMA_TARGET = {"layers": 32, "samples": 128, "seq_len": 2048}  # what the extrapolation is to
MODELS = (*VISION, LLAMA)
IMAGE_SIDE = 256  # the random images' side (each processor resizes / crops to 224)
TEST_IMAGES = 4  # the test split `prepare` loads (never scored here)


# ---- measuring ------------------------------------------------------------------------------------------------------
def peak_rss_gb() -> float:
    """This process's peak resident set so far (`ru_maxrss`, KiB on Linux), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def rss_parts_gb() -> dict[str, float]:
    """The current resident set split into anonymous memory and mapped files (memory-mapped statistics count in
    `ru_maxrss` once touched, though the kernel can drop those pages), in GiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024**2
    return out


class AnonPeak:
    """The peak of this process's anonymous resident memory (`RssAnon`), sampled every 20 ms by a thread: what the
    process holds itself, without the pages of memory-mapped files that `ru_maxrss` also counts."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_parts_gb().get("RssAnon", 0.0))

    def read(self) -> float:
        self.peak = max(self.peak, rss_parts_gb().get("RssAnon", 0.0))
        return self.peak


def disk_gb(path: Path) -> float:
    """Disk used by everything under `path` (allocated blocks, as `du`), in GiB."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.lstat(os.path.join(root, f)).st_blocks * 512 for f in files)
    return total / GB


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _fit_spans(stats, num_blocks: int, limit: int, kinds: tuple[str, ...]) -> dict[str, float]:
    """Fit every span of a space (`s → e`, at most `limit` blocks removed) with each of `kinds`, from the statistics;
    seconds per span (all its kinds) as total, median and max."""
    from toast.spaces import Span, fit_span

    times = []
    for s in range(-1, num_blocks - 1):
        for e in range(s + 1, num_blocks):
            if e - s > limit:
                continue
            t = time.perf_counter()
            for kind in kinds:
                fit_span(stats, Span(s, e, kind))
            times.append(time.perf_counter() - t)
    return {
        "spans": len(times),
        "fit_total_s": sum(times),
        "fit_median_s": statistics.median(times),
        "fit_max_s": max(times),
    }


# ---- the vision configs: the product path ----------------------------------------------------------------------------
def make_vision(name: str, work: Path, samples: int) -> None:
    """Save `name`'s model (random weights) and processor to `work/model`, and `samples` random images (train) plus a
    few (test) as a `save_to_disk` dataset to `work/data`. Run in its own process: the weights it builds are not
    the measured process's."""
    import datasets
    import numpy as np
    import torch
    import transformers as T
    from PIL import Image

    _quiet_transformers()
    datasets.disable_progress_bars()
    cfg = VISION[name]
    torch.manual_seed(0)
    config = T.AutoConfig.for_model(**cfg.config)
    getattr(T, cfg.architecture)(config).save_pretrained(work / "model")
    processor_class, processor_fields = cfg.processor
    getattr(T, processor_class)(**processor_fields).save_pretrained(work / "model")
    rng = np.random.default_rng(0)

    def split(n: int) -> datasets.Dataset:
        images = [Image.fromarray(rng.integers(0, 255, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)) for _ in range(n)]
        return datasets.Dataset.from_dict({"img": images, "label": [i % 10 for i in range(n)]})

    datasets.DatasetDict({"train": split(samples), "test": split(TEST_IMAGES)}).save_to_disk(str(work / "data"))


def measure_vision(name: str, work: Path, samples: int, options: dict[str, Any]) -> dict[str, Any]:
    """Prepare, plain forward, capture and fit every span of the default space, through the product path."""
    import torch

    torch.set_num_threads(options["threads"])
    _quiet_transformers()
    from toast.capture import calibrate
    from toast.data import iter_batches
    from toast.search import DataSettings, SearchSettings, StudySettings, prepare

    extra = {} if options["batch_size"] is None else {"batch_size": options["batch_size"]}
    settings = SearchSettings(
        data=DataSettings(
            model=str(work / "model"),
            dataset=str(work / "data"),
            calib_samples=samples,
            stats_memory_gb=options["stats_memory_gb"],
        ),
        study=StudySettings(out=work / "run"),
        cache_dir=work / "cache",
        device="cpu",
        progress=False,
        **extra,
    )
    anon = AnonPeak()
    out: dict[str, Any] = {"rss_start_gb": peak_rss_gb()}
    t = time.perf_counter()
    prepared = prepare(settings)
    out["prepare_s"] = time.perf_counter() - t
    out["rss_model_gb"] = peak_rss_gb()
    product = getattr(prepared, "estimate", None)  # what `prepare` estimated (and printed) before loading the weights
    if product is not None:
        out["product_estimate"] = {
            "rss_gb": product.host_bytes / GB,
            "disk_gb": product.disk_bytes / GB,
            "capture_s": product.capture_seconds,
            "passes": product.passes,
            "parts_gb": {k: v / GB for k, v in product.parts.items()},
        }
    loaded, split, calibration = prepared.loaded, prepared.calibration_split, prepared.calibration
    ids = prepared.spec.sample_ids

    t = time.perf_counter()
    if options["forward"]:
        with torch.inference_mode():
            for _, inputs in iter_batches(split, ids, loaded.processor, calibration.batch_size):
                loaded.model(**inputs)
    out["forward_s"] = time.perf_counter() - t if options["forward"] else None
    out["rss_forward_gb"] = peak_rss_gb()

    t = time.perf_counter()
    captured = calibrate(loaded, split, calibration, prepared.cache, progress=False)
    out["capture_s"] = time.perf_counter() - t
    out["rss_capture_gb"] = peak_rss_gb()
    out["anon_capture_gb"] = anon.read()
    out["rss_capture_parts"] = rss_parts_gb()
    manifest = captured.manifest
    stats = captured.stats
    out.update(
        samples=int(manifest["num_samples"]),
        tokens=int(manifest["num_tokens"]),
        states=int(manifest["num_states"]),
        width=int(manifest["dim"]),
        passes=int(manifest["pair_passes"]),
        pairs_held=len(stats.held_pairs),
        stats_form="all-pairs Gram" if stats.gram is not None else "per pair",
        disk_gb=disk_gb(captured.directory),
        batch_size=calibration.batch_size,
        stats_memory_gb=options["stats_memory_gb"],
        kinds=list(prepared.space.kinds),
        removal_limit=prepared.space.removal_limit,
        branches=calibration.branches,
        shard_states=len(captured.states or ()),
    )
    out.update(_fit_spans(stats, loaded.num_blocks, prepared.space.removal_limit, prepared.space.kinds))
    out["rss_fits_gb"] = peak_rss_gb()
    out["anon_fits_gb"] = anon.read()
    out["rss_fits_parts"] = rss_parts_gb()
    return out


# ---- the Llama-8B-shaped stack: the engine, not the product path ------------------------------------------------------
class _LlamaStack:
    """`layers` full-width `LlamaDecoderLayer`s of Llama-3.1-8B's config, with its rotary embeddings and causal
    mask; `hidden_states(batch)` gives h_0 … h_L of a batch of random token embeddings (seeded by batch index)."""

    def __init__(self, layers: int, samples: int, seq_len: int, batch_size: int) -> None:
        import torch
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

        self.config = LlamaConfig(**{**LLAMA_8B, "num_hidden_layers": layers})
        self.config._attn_implementation = "sdpa"
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList(LlamaDecoderLayer(self.config, i) for i in range(layers)).eval()
        for module in self.layers.modules():  # the hub's initializer (normal, std initializer_range)
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=self.config.initializer_range)
        self.rotary = LlamaRotaryEmbedding(self.config)
        self.samples, self.seq_len, self.batch_size = samples, seq_len, batch_size

    def batches(self):
        for k, first in enumerate(range(0, self.samples, self.batch_size)):
            yield k, min(self.batch_size, self.samples - first)

    def hidden_states(self, k: int, size: int) -> list:
        import torch
        from transformers.masking_utils import create_causal_mask

        g = torch.Generator().manual_seed(k)
        h = torch.randn(size, self.seq_len, self.config.hidden_size, generator=g) * self.config.initializer_range
        positions = torch.arange(self.seq_len)
        mask = create_causal_mask(
            config=self.config, inputs_embeds=h, attention_mask=None, cache=None, position_ids=positions[None]
        )
        rope = self.rotary(h, positions[None])
        states = [h]
        for layer in self.layers:
            out = layer(h, attention_mask=mask, position_ids=positions[None], position_embeddings=rope)
            h = out[0] if isinstance(out, tuple) else out
            states.append(h)
        return states


def measure_llama(work: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The engine on the Llama-8B-shaped stack: plain forward, the capture's statistics planned into passes (saved as
    the capture saves them), and every span's fit from the memory-mapped result."""
    import torch

    torch.set_num_threads(options["threads"])
    _quiet_transformers()
    from toast.capture import memory_plan_bytes
    from toast.spaces import (
        ActivationStats,
        StatsAccumulator,
        load_pairs,
        pair_bytes,
        plan_passes,
        save_pairs,
        space_pairs,
    )

    L = options["llm_layers"]
    anon = AnonPeak()
    out: dict[str, Any] = {"rss_start_gb": peak_rss_gb()}
    stack = _LlamaStack(L, options["llm_samples"], options["llm_seq_len"], options["llm_batch_size"])
    out["rss_model_gb"] = peak_rss_gb()
    S, d = L + 1, stack.config.hidden_size

    with torch.inference_mode():
        t = time.perf_counter()
        for k, size in stack.batches():
            stack.hidden_states(k, size)
        out["forward_s"] = time.perf_counter() - t
        out["rss_forward_gb"] = peak_rss_gb()

        budget = memory_plan_bytes(options["stats_memory_gb"])
        pairs = space_pairs(L, L)  # the default space: no max_removed, every span of the stack
        passes = plan_passes(pairs, d, budget)
        entry = work / "entry"
        entry.mkdir()
        t = time.perf_counter()
        base = None
        for p, group in enumerate(passes):
            acc = StatsAccumulator(S, d, pairs=group, shift=None if base is None else base.shift)
            for k, size in stack.batches():
                acc.update(stack.hidden_states(k, size), None, 0)
            if base is None:
                base = acc.result()
                base.save(entry)
            else:
                ext = entry / f"ext-{p}"
                ext.mkdir()
                save_pairs(ext, acc.pair_blocks())
            del acc
        out["capture_s"] = time.perf_counter() - t
    out["rss_capture_gb"] = peak_rss_gb()
    out["anon_capture_gb"] = anon.read()
    out["rss_capture_parts"] = rss_parts_gb()
    del base
    blocks = {}
    for ext in sorted(entry.glob("ext-*")):
        blocks.update(load_pairs(ext))
    stats = ActivationStats.load(entry, pairs=blocks)
    tokens = options["llm_samples"] * options["llm_seq_len"]
    out.update(
        samples=options["llm_samples"],
        tokens=tokens,
        seq_len=options["llm_seq_len"],
        states=S,
        width=d,
        passes=len(passes),
        pairs_held=len(stats.held_pairs),
        stats_form="per pair",
        disk_gb=disk_gb(entry),
        batch_size=options["llm_batch_size"],
        stats_memory_gb=options["stats_memory_gb"],
        budget_bytes=budget,
        pair_bytes=pair_bytes(d),
        kinds=["identity", "linear"],
        removal_limit=L,
        layers=L,
        weight_gb_per_layer=sum(p.numel() for p in stack.layers[0].parameters()) * 4 / GB,
        params=sum(p.numel() for p in stack.layers.parameters()),
        intermediate=stack.config.intermediate_size,
        heads=stack.config.num_attention_heads,
    )
    out.update(_fit_spans(stats, L, L, ("identity", "linear")))
    out["rss_fits_gb"] = peak_rss_gb()
    out["anon_fits_gb"] = anon.read()
    out["rss_fits_parts"] = rss_parts_gb()
    return out


def extrapolate_llama(m: dict[str, Any]) -> dict[str, Any]:
    """Llama-3.1-8B at 32 layers and 128 × 2,048 tokens from the measured stack, by the rule `LLAMA_RULE` says."""
    L, tokens = m["layers"], m["tokens"]
    L2, S2 = LLAMA_TARGET["layers"], LLAMA_TARGET["layers"] + 1
    tokens2 = LLAMA_TARGET["samples"] * LLAMA_TARGET["seq_len"]
    pairs2 = S2 * (S2 + 1) // 2
    per_pass = max(1, m["budget_bytes"] // m["pair_bytes"])
    passes2 = math.ceil(pairs2 / per_pass)
    # forward ∝ layers × tokens; the statistics' products ∝ pairs (≈ layers²/2) × tokens; the capture runs one
    # forward per pass
    product_s = max(0.0, m["capture_s"] - m["passes"] * m["forward_s"]) / (m["pairs_held"] * tokens)
    forward2 = m["forward_s"] * (L2 / L) * (tokens2 / tokens)
    capture2 = passes2 * forward2 + product_s * pairs2 * tokens2
    # memory: weights ∝ layers; the accumulators are one pass's pairs (the plan's budget); a batch's states ∝ layers
    weights2 = m["weight_gb_per_layer"] * L2
    accumulators2 = min(pairs2, per_pass) * m["pair_bytes"] / GB
    batch_states = max(0.0, m["rss_capture_gb"] - m["rss_model_gb"] - m["pairs_held"] * m["pair_bytes"] / GB)
    rss2 = m["rss_start_gb"] + weights2 + accumulators2 + batch_states * S2 / (L + 1)
    disk2 = m["disk_gb"] / m["pairs_held"] * pairs2
    spans2 = L2 * (L2 + 1) // 2
    return {
        "states": S2,
        "pairs": pairs2,
        "passes": passes2,
        "forward_s": forward2,
        "capture_s": capture2,
        "rss_gb": rss2,
        "weights_gb": weights2,
        "accumulators_gb": accumulators2,
        "disk_gb": disk2,
        "spans": spans2,
        "fit_total_s": m["fit_median_s"] * spans2,
        "tokens": tokens2,
    }


LLAMA_RULE = (
    "Extrapolation rule (measured stack → 32 layers, 128 × 2,048 tokens): pairs of the default space = S(S+1)/2 with "
    "S = layers + 1 (grows with layers²); passes = ceil(pairs / pairs per pass), pairs per pass = --stats-memory-gb "
    "÷ (d²·8 bytes); plain forward ∝ layers × tokens (same sequence length, so attention's share per token is kept "
    "when --llm-seq-len is 2,048); capture = passes × forward + (measured product seconds per pair per token) × "
    "pairs × tokens (layers² × tokens); disk = measured bytes per pair × pairs (layers², not tokens); fits = median "
    "span fit × L(L+1)/2 spans (layers², not tokens: each is a d × d solve); peak RSS = the process's base + fp32 "
    "weights per layer × layers + one pass's accumulators (bounded by the plan, not by layers) + one batch's states "
    "(∝ layers, not total tokens)."
)


# ---- estimates: the lead's `toast.capture.estimate_resources` ---------------------------------------------------------
def estimate(name: str, measured: dict[str, Any]) -> dict[str, Any] | None:
    """The estimated peak RSS, disk, capture seconds and passes of `name`'s capture, from
    `toast.capture.estimate_resources`; None where the API does not exist.

    A vision config: the estimate `toast.search.prepare` itself made and printed, from the config on the meta device
    and one batch of inputs, before loading the weights (recorded in the measuring process). The Llama stack: the API
    called here with the measured stack's shape (no family exists to call it for us), the default space's pairs and
    the memory plan the stack was captured with."""
    if "product_estimate" in measured:
        return measured["product_estimate"]
    try:
        from toast.capture import CaptureShape, estimate_resources, memory_plan_bytes
    except ImportError:
        return None
    if name != LLAMA:
        return None
    from toast.spaces import space_pairs

    L = measured["layers"]
    shape = CaptureShape(
        num_blocks=L,
        dim=measured["width"],
        intermediate=measured["intermediate"],
        heads=measured["heads"],
        params=measured["params"],
        tokens_per_sample=measured["seq_len"],
        padded_tokens=measured["seq_len"],
        branches=False,
    )
    e = estimate_resources(
        shape,
        samples=measured["samples"],
        batch_size=measured["batch_size"],
        pairs=space_pairs(L, L),
        branch_pairs=None,
        states=frozenset(),
        memory_bytes=memory_plan_bytes(measured["stats_memory_gb"]),
    )
    return {
        "rss_gb": e.host_bytes / GB,
        "disk_gb": e.disk_bytes / GB,
        "capture_s": e.capture_seconds,
        "passes": e.passes,
    }


def estimate_llama_full(measured: dict[str, Any], *, device: str, dtype: str, memory_gb: float) -> dict[str, Any]:
    """`estimate_resources` for the whole Llama-3.1-8B decoder stack (32 layers, its weights without the embedding
    table and head), 128 × 2,048 tokens, batches of `measured`'s size, the default space, on `device` in `dtype`,
    the statistics planned into `memory_gb`."""
    from toast.capture import CaptureShape, estimate_resources
    from toast.spaces import space_pairs

    L = LLAMA_TARGET["layers"]
    shape = CaptureShape(
        num_blocks=L,
        dim=measured["width"],
        intermediate=measured["intermediate"],
        heads=measured["heads"],
        params=measured["params"] // measured["layers"] * L,
        tokens_per_sample=LLAMA_TARGET["seq_len"],
        padded_tokens=LLAMA_TARGET["seq_len"],
        branches=False,
        param_bytes={"float32": 4, "bfloat16": 2}[dtype],
    )
    e = estimate_resources(
        shape,
        samples=LLAMA_TARGET["samples"],
        batch_size=measured["batch_size"],
        pairs=space_pairs(L, L),
        branch_pairs=None,
        states=frozenset(),
        memory_bytes=int(memory_gb * GB),
        device=device,
        flops_per_second=1e12,  # no device to time here: the time is not read, only the memory and disk
    )
    return {
        "host_gb": e.host_bytes / GB,
        "device_gb": e.device_bytes / GB,
        "disk_gb": e.disk_bytes / GB,
        "passes": e.passes,
        "parts_gb": {k: v / GB for k, v in e.parts.items()},
    }


def _estimate_or_none(name: str, measured: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if measured is None else estimate(name, measured)


# ---- running each config in its own process ---------------------------------------------------------------------------
def _child(conn, fn_name: str, args: tuple) -> None:
    try:
        conn.send(("ok", globals()[fn_name](*args)))
    except BaseException as exc:  # the parent reports it as this config's failure
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
    finally:
        conn.close()


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("inf")


def run_isolated(fn_name: str, *args, min_free_gb: float) -> Any:
    """Run `fn_name(*args)` in a fresh spawned process (its own peak RSS); stopped if the host's available memory
    falls below `min_free_gb` (the machine is shared: better a missing row than another job killed)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn_name, args))
    proc.start()
    child.close()
    low = None
    while proc.is_alive() and not parent.poll(0.5):
        free = available_gb()
        if free < min_free_gb:
            low = free
            proc.kill()
            break
    result = parent.recv() if parent.poll(0.5) else None
    proc.join()
    if low is not None:
        raise RuntimeError(f"stopped: the host's available memory fell to {low:.1f} GB (< --min-free-gb {min_free_gb})")
    if result is None:
        raise RuntimeError(f"the process died (exit code {proc.exitcode}; killed for memory?)")
    status, value = result
    if status != "ok":
        raise RuntimeError(value)
    return value


# ---- presenting ------------------------------------------------------------------------------------------------------
def _est(e: dict[str, Any] | None, key: str) -> str:
    return "n/a" if e is None or e.get(key) is None else f"{e[key]:.2f}"


def _ratio(e: dict[str, Any] | None, key: str, measured: float) -> str:
    if e is None or e.get(key) is None or measured <= 0:
        return ""
    return f" ({e[key] / measured:.2f}×)"


def _capture_ratio(m: dict[str, Any]) -> str:
    if not m.get("forward_s"):
        return f"n/a ({m['capture_s']:.0f} s / no forward timed)"
    return f"{m['capture_s'] / m['forward_s']:.2f}× ({m['capture_s']:.0f} s / {m['forward_s']:.0f} s)"


def table(rows: list[tuple[str, dict[str, Any] | None, dict[str, float] | None, str | None]]) -> str:
    head = (
        "| model | states × width | samples × tokens | peak RSS est / measured (GB) | disk est / measured (GB) "
        "| capture / forward | fits total s | median / max span fit s | passes |"
    )
    lines = [head, "| --- | --- | --- | --- | --- | --- | ---: | --- | ---: |"]
    for name, m, e, error in rows:
        label = VISION[name].hub if name in VISION else f"{LLAMA_HUB} ({m['layers']} of 32 layers)" if m else LLAMA_HUB
        if m is None:
            lines.append(f"| {label} | failed: {error.splitlines()[0]} | | | | | | | |")
            continue
        per_sample = m["tokens"] // m["samples"]
        lines.append(
            f"| {label} | {m['states']} × {m['width']} | {m['samples']} × {per_sample} "
            f"| {_est(e, 'rss_gb')} / {m['rss_fits_gb']:.2f}{_ratio(e, 'rss_gb', m['rss_fits_gb'])} "
            f"| {_est(e, 'disk_gb')} / {m['disk_gb']:.2f}{_ratio(e, 'disk_gb', m['disk_gb'])} "
            f"| {_capture_ratio(m)} "
            f"| {m['fit_total_s']:.1f} | {m['fit_median_s']:.2f} / {m['fit_max_s']:.2f} | {m['passes']} |"
        )
    return "\n".join(lines)


def details(rows) -> str:
    lines = [
        "| model | batch | statistics held | peak RSS after load / forward / capture / fits (GB) "
        "| peak anonymous RSS (GB) | RSS at end: anon / mapped files (GB) | spans × kinds | capture s est / measured "
        "| passes est |",
        "| --- | ---: | --- | --- | ---: | --- | --- | --- | ---: |",
    ]
    for name, m, e, _ in rows:
        if m is None:
            continue
        parts = m["rss_fits_parts"]
        lines.append(
            f"| {name} | {m['batch_size']} | {m['stats_form']}, {m['pairs_held']} pairs in {m['passes']} pass(es) "
            f"| {m['rss_model_gb']:.2f} / {m['rss_forward_gb']:.2f} / {m['rss_capture_gb']:.2f} / {m['rss_fits_gb']:.2f} "
            f"| {m.get('anon_fits_gb', float('nan')):.2f} | {parts.get('RssAnon', 0):.2f} / {parts.get('RssFile', 0):.2f} "
            f"| {m['spans']} × {','.join(m['kinds'])} "
            f"| {_est(e, 'capture_s')} / {m['capture_s']:.1f} | {'n/a' if e is None else e['passes']} |"
        )
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def llama_table(m: dict[str, Any], e: dict[str, Any] | None, plan_gb: float) -> str:
    x = extrapolate_llama(m)
    lines = [
        f"| Llama-3.1-8B shape (engine only) | measured: {m['layers']} layers, {m['samples']} × {m['seq_len']} tokens "
        f"| extrapolated: {LLAMA_TARGET['layers']} layers, {LLAMA_TARGET['samples']} × {LLAMA_TARGET['seq_len']} tokens |",
        "| --- | ---: | ---: |",
        f"| states, pairs of the default space | {m['states']}, {m['pairs_held']} | {x['states']}, {x['pairs']} |",
        f"| passes (--stats-memory-gb {m['budget_bytes'] / GB:.2f}) | {m['passes']} | {x['passes']} |",
        f"| plain forward on this CPU | {m['forward_s']:.1f} s | {_hours(x['forward_s'])} |",
        f"| capture on this CPU | {m['capture_s']:.1f} s | {_hours(x['capture_s'])} |",
        f"| peak RSS GB (fp32 weights + accumulators + a batch) | {m['rss_fits_gb']:.2f} "
        f"| {x['rss_gb']:.1f} ({x['weights_gb']:.1f} weights + {x['accumulators_gb']:.1f} accumulators) |",
        f"| statistics on disk GB | {m['disk_gb']:.2f} | {x['disk_gb']:.1f} |",
        f"| span fits (total) | {m['spans']} ({m['fit_total_s']:.1f} s) | {x['spans']} ({_hours(x['fit_total_s'])}) |",
    ]
    if e is not None:
        cpu = estimate_llama_full(m, device="cpu", dtype="float32", memory_gb=m["budget_bytes"] / GB)
        gpu = estimate_llama_full(m, device="cuda", dtype="bfloat16", memory_gb=plan_gb)
        lines += [
            f"| estimate_resources: peak RSS GB (CPU, float32) | {e['rss_gb']:.2f} ({e['rss_gb'] / m['rss_fits_gb']:.2f}× "
            f"measured) | {cpu['host_gb']:.1f} ({cpu['host_gb'] / x['rss_gb']:.2f}× extrapolated) |",
            f"| estimate_resources: disk GB | {e['disk_gb']:.2f} ({e['disk_gb'] / m['disk_gb']:.2f}× measured) "
            f"| {cpu['disk_gb']:.1f} ({cpu['disk_gb'] / x['disk_gb']:.2f}× extrapolated) |",
            f"| estimate_resources: passes | {e['passes']} | {cpu['passes']} |",
            f"| estimate_resources on a GPU, bfloat16 weights, --stats-memory-gb {plan_gb:g}: device / host GB, passes "
            f"| | {gpu['device_gb']:.1f} / {gpu['host_gb']:.1f}, {gpu['passes']} |",
        ]
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)} (default: all)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="calibration images of every vision config (default: per config, "
        + ", ".join(f"{k} {v.samples}" for k, v in VISION.items())
        + ")",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="capture batch size (default: the product's)")
    parser.add_argument(
        "--stats-memory-gb",
        type=float,
        default=None,
        help="the statistics' memory plan (default: the product's, a quarter of the host's RAM)",
    )
    parser.add_argument("--llm-layers", type=int, default=2, help="decoder layers built at full width (default: 2)")
    parser.add_argument("--llm-samples", type=int, default=3, help="sequences of random embeddings (default: 3)")
    parser.add_argument("--llm-seq-len", type=int, default=2048, help="tokens per sequence (default: 2048)")
    parser.add_argument("--llm-batch-size", type=int, default=1, help="sequences per batch (default: 1)")
    parser.add_argument(
        "--llm-plan-gb",
        type=float,
        default=40.0,
        help="the statistics' memory the full-size Llama estimate on a GPU is planned into (default: 40, of 80)",
    )
    parser.add_argument(
        "--no-forward",
        action="store_true",
        help="vision configs: time no plain forward (no capture / forward ratio; a long run's peak memory only)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument(
        "--min-free-gb", type=float, default=1.5, help="stop a config when the host's available memory falls below"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the measured figures here")
    parser.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="measure nothing: print the tables (estimates computed now) from the figures an earlier --json wrote",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)}: use {', '.join(MODELS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = args.models.split(",")
    options = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "stats_memory_gb": args.stats_memory_gb,
        "llm_layers": args.llm_layers,
        "llm_samples": args.llm_samples,
        "llm_seq_len": args.llm_seq_len,
        "llm_batch_size": args.llm_batch_size,
        "forward": not args.no_forward,
    }
    command = " ".join(["python bench/bench_scale.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"{command}\n{date.today()}, {os.cpu_count()} cores, torch threads {args.threads}", flush=True)
    if args.replay is not None:
        saved = json.loads(args.replay.read_text())
        rows = [(n, r["measured"], _estimate_or_none(n, r["measured"]), r["error"]) for n, r in saved.items()]
        print(f"(tables from {args.replay}: the figures measured then, the estimates computed now)")
        started = time.perf_counter()
    else:
        rows, started = [], time.perf_counter()
    for name in models if args.replay is None else ():
        t = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=f"toast-scale-{name}-"))
        measured = error = None
        try:
            if name == LLAMA:
                measured = run_isolated("measure_llama", work, options, min_free_gb=args.min_free_gb)
            else:
                samples = args.samples or VISION[name].samples
                run_isolated("make_vision", name, work, samples, min_free_gb=args.min_free_gb)
                measured = run_isolated("measure_vision", name, work, samples, options, min_free_gb=args.min_free_gb)
        except RuntimeError as exc:
            error = str(exc)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append((name, measured, _estimate_or_none(name, measured), error))
        state = "failed: " + error.splitlines()[0] if error else "done"
        print(f"{name}: {state} in {time.perf_counter() - t:.0f} s", flush=True)
        if measured is not None:
            print(json.dumps(measured, default=str), flush=True)
        if args.json is not None:  # after each config, so a later failure keeps the earlier figures
            args.json.write_text(json.dumps({n: {"measured": m, "estimate": e, "error": err} for n, m, e, err in rows}))
    print(f"\nall configs in {time.perf_counter() - started:.0f} s\n")
    print(table(rows))
    print()
    print(details(rows))
    llama = next((m for name, m, _, _ in rows if name == LLAMA and m is not None), None)
    if llama is not None:
        print("\nThe Llama row measures the engine (StatsAccumulator, plan_passes, fit_span), not the product path: ")
        print("the stack is built here from LlamaDecoderLayer, fed random token embeddings.\n")
        print(llama_table(llama, _estimate_or_none(LLAMA, llama), args.llm_plan_gb))
        print()
        print(LLAMA_RULE)
    return 1 if any(error for *_, error in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
