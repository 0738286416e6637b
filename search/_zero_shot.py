"""Zero-shot CLIP accuracy (`head` zero-shot): class names in prompt templates, embedded by the text tower.

    resolve_zero_shot(settings, source, test)  ->  ZeroShotSpec(class names, templates)   (before any weight)
    build_zero_shot_head(loaded, spec, cache_root)  ->  ZeroShotHead(visual projection, class embeddings)

Every class name is written into each template, embedded by CLIP's text tower and projection, each prompt's
embedding normalised, the class's mean normalised again (the CLIP paper's prompt ensembling); computed once
per run and cached under the cache dir, keyed by the model's fingerprint, the class names and the templates.
A plan's logits are the cosine similarities of the compressed vision tower's pooled output, through the visual
projection and normalised, with these class embeddings. Only the vision tower is compressed: the text tower's
cost is paid once per run and reported apart (`text_tower_cost`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._artifacts import read_artifact, read_or_discard, write_artifact
from ..errors import CacheError, DatasetError, SettingsError, UnsupportedModelError

if TYPE_CHECKING:
    from ..data import LabeledSplit
    from ..models import LoadedModel, ModelSource
    from ._settings import SearchSettings

__all__ = [
    "FULL_TEMPLATES",
    "PROMPT_SETS",
    "SHORT_TEMPLATES",
    "ZeroShotHead",
    "ZeroShotSpec",
    "build_zero_shot_head",
    "class_embeddings",
    "read_class_names",
    "resolve_zero_shot",
    "text_tower_cost",
]

#: The 80 ImageNet prompt templates of the CLIP paper (OpenAI's prompt-engineering notebook, OpenCLIP's
#: `zero_shot_metadata.py`), in their order.
FULL_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

#: The 7 templates the CLIP notebook selected from the 80 (nearly the same ImageNet accuracy, 11× fewer prompts).
SHORT_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

PROMPT_SETS: dict[str, tuple[str, ...]] = {"full": FULL_TEMPLATES, "short": SHORT_TEMPLATES}


@dataclass(frozen=True, kw_only=True)
class ZeroShotSpec:
    """What the zero-shot head embeds: the class names (label `i` is `class_names[i]`) and the templates."""

    class_names: tuple[str, ...]
    prompts: str  # the name of the template set
    templates: tuple[str, ...]
    names_from: str  # where the class names come from (a file, or the dataset's ClassLabel feature)

    def describe(self) -> str:
        return (
            f"{len(self.class_names)} classes ({self.names_from}) × {len(self.templates)} templates "
            f"(--prompts {self.prompts})"
        )


def read_class_names(path: Path) -> tuple[str, ...]:
    """One class name per line (blank lines skipped), label `i` the `i`-th name."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(
            f"`class_names` {str(path)!r} cannot be read ({exc.strerror or exc}): give a text file, one class name per line"
        ) from None
    names = tuple(line.strip() for line in lines if line.strip())
    if not names:
        raise SettingsError(f"`class_names` {str(path)!r} holds no class name: one class name per line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SettingsError(
            f"`class_names` {str(path)!r} names {', '.join(map(repr, repeated[:3]))} more than once: two labels with "
            "one name could never be told apart"
        )
    return names


def _label_names(split: LabeledSplit) -> tuple[str, ...] | None:
    feature = getattr(split.dataset, "features", {}).get(split.label_column) if split.label_column else None
    names = getattr(feature, "names", None)
    return tuple(str(n).replace("_", " ") for n in names) if names else None


def resolve_zero_shot(settings: SearchSettings, source: ModelSource, test: LabeledSplit | None) -> ZeroShotSpec | None:
    """The zero-shot head's class names and templates, checked from the model's config and the labels before any
    weight is loaded; None unless `head` is zero-shot."""
    if settings.scoring.head != "zero-shot":
        return None
    model_type = getattr(source.config, "model_type", None)
    if model_type != "clip" or getattr(source.config, "text_config", None) is None:
        raise UnsupportedModelError(
            f"`head` zero-shot needs a whole CLIP model (vision and text towers): model {settings.data.model!r} is "
            f"{model_type!r} with no text tower; use a CLIP checkpoint (e.g. `model` clip-vit-b16) or `head` probe"
        )
    if settings.scoring.class_names is not None:
        names, names_from = read_class_names(settings.scoring.class_names), f"from {settings.scoring.class_names}"
    else:
        names = _label_names(test) if test is not None else None
        if names is None:
            raise DatasetError(
                f"dataset {settings.data.dataset!r} has no class names (its label column is not a ClassLabel): pass "
                "`class_names` FILE, one class name per line, label i on line i"
            )
        names_from = f"the ClassLabel names of {test.name}"
    if test is not None and test.label_column is not None:
        labels = test.labels
        top = int(labels.max()) if len(labels) else -1
        if top >= len(names):
            raise DatasetError(
                f"`head` zero-shot: label {top} of dataset {settings.data.dataset!r} has no class name ({len(names)} "
                f"names {names_from}): pass `class_names` FILE with one name per label"
            )
        if settings.scoring.class_names is not None and len(names) > top + 1:
            raise SettingsError(
                f"`class_names` {str(settings.scoring.class_names)!r} has {len(names)} names but the labels of dataset "
                f"{settings.data.dataset!r} go up to {top}: one name per label, label i on line i (extra names would be "
                "classes no sample has, and change every zero-shot score)"
            )
    return ZeroShotSpec(
        class_names=names,
        prompts=settings.scoring.prompts,
        templates=PROMPT_SETS[settings.scoring.prompts],
        names_from=names_from,
    )


def _text_features(clip: nn.Module, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    out = clip.get_text_features(**tokens)
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5: an output with the pooler


@torch.inference_mode()
def _embed(clip: nn.Module, tokenizer: Any, spec: ZeroShotSpec, batch_size: int) -> np.ndarray:
    device = next(clip.parameters()).device
    prompts = [t.format(name) for name in spec.class_names for t in spec.templates]
    max_len = int(getattr(clip.config.text_config, "max_position_embeddings", 77))
    rows = []
    for i in range(0, len(prompts), batch_size):
        tokens = tokenizer(
            prompts[i : i + batch_size], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        feats = _text_features(
            clip, {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        )
        rows.append(nn.functional.normalize(feats.float(), dim=-1).cpu())
    per_prompt = torch.cat(rows).view(len(spec.class_names), len(spec.templates), -1)
    return nn.functional.normalize(per_prompt.mean(1), dim=-1).numpy().astype(np.float32)


def embeddings_key(model_id: str, revision: str, spec: ZeroShotSpec, dtype: str) -> str:
    doc = {
        "model_id": model_id,
        "revision": revision,
        "class_names": list(spec.class_names),
        "templates": list(spec.templates),
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


EMBEDDINGS_FILE = "embeddings.npy"


def _read_embeddings(directory: Path, key: str, shape: tuple[int, int]) -> np.ndarray:
    """The cached class embeddings at `directory`, verified: the manifest's checksum (rows permuted or bits flipped
    in a valid file), a `(n_classes, projection_dim)` float32 array of finite values; else `CacheError`."""
    what = f"zero-shot class embeddings {directory}"
    read_artifact(directory, key, what)
    try:
        emb = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CacheError(f"{what} is unreadable ({str(exc).splitlines()[0]})") from None
    if emb.shape != shape or emb.dtype != np.float32 or not np.isfinite(emb).all():
        raise CacheError(f"{what} holds a {emb.dtype} array of shape {emb.shape}, not finite float32 {shape}")
    return emb


def class_embeddings(
    loaded: LoadedModel, spec: ZeroShotSpec, cache_root: Path | None, *, batch_size: int = 256
) -> tuple[np.ndarray, bool]:
    """`(n_classes, projection_dim)` normalised class embeddings, and whether they came from the cache.

    The cache entry is a verified artifact (`write_artifact`: written beside and renamed, sha256 per file): an entry
    that is not what it should be (truncated, changed, mis-shaped, another key) is said in one line and recomputed."""
    clip, tokenizer = loaded.text
    dtype = str(next(clip.parameters()).dtype).removeprefix("torch.")
    key = embeddings_key(loaded.model_id, loaded.revision, spec, dtype)
    shape = (len(spec.class_names), int(clip.config.projection_dim))
    directory = Path(cache_root) / "zero_shot" / key if cache_root is not None else None
    found = (
        read_or_discard(directory, lambda d: _read_embeddings(d, key, shape), redo="recomputing") if directory else None
    )
    if found is not None:
        return found, True
    emb = _embed(clip, tokenizer, spec, batch_size)
    if directory is not None:
        with write_artifact(directory, key, "zero-shot class embeddings") as writer:
            np.save(writer.directory / EMBEDDINGS_FILE, emb, allow_pickle=False)
            writer.manifest["shape"] = list(emb.shape)
    return emb, False


class ZeroShotHead:
    """Cosine similarities of a vision tower's pooled output (through the visual projection) with the classes."""

    def __init__(self, *, projection: nn.Module, embeddings: np.ndarray, spec: ZeroShotSpec, cached: bool) -> None:
        self.projection = projection
        self.spec = spec
        self.cached = cached
        weight = next(projection.parameters())
        self.embeddings = torch.as_tensor(embeddings, device=weight.device, dtype=torch.float32)

    @torch.inference_mode()
    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """`(batch, n_classes)` cosine similarities; their argmax is the zero-shot prediction."""
        weight = next(self.projection.parameters())
        z = self.projection(pooled.to(device=weight.device, dtype=weight.dtype)).float()
        return nn.functional.normalize(z, dim=-1) @ self.embeddings.T


def build_zero_shot_head(loaded: LoadedModel, spec: ZeroShotSpec, cache_root: Path | None) -> ZeroShotHead:
    """The head of a run: the class embeddings computed once (or read from the cache) and the visual projection."""
    if loaded.text is None:
        raise UnsupportedModelError(f"`head` zero-shot: model {loaded.model_id!r} was loaded without its text tower")
    emb, cached = class_embeddings(loaded, spec, cache_root)
    return ZeroShotHead(projection=loaded.text[0].visual_projection, embeddings=emb, spec=spec, cached=cached)


def text_tower_cost(loaded: LoadedModel, spec: ZeroShotSpec) -> dict[str, float]:
    """The text tower's cost, not counted in the plans' (only the vision tower is compressed): its parameters
    (with the text projection), GFLOPs of one prompt (multiply-add = 1 flop, as the plans' costs) and of all the
    run's prompts, paid once per run."""
    from torch.utils.flop_counter import FlopCounterMode

    clip, tokenizer = loaded.text
    params = sum(p.numel() for p in clip.text_model.parameters()) + sum(
        p.numel() for p in clip.text_projection.parameters()
    )
    device = next(clip.parameters()).device
    tokens = tokenizer([spec.templates[0].format(spec.class_names[0])], return_tensors="pt")
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        _text_features(clip, {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")})
    per_prompt = counter.get_total_flops() / 2 / 1e9
    prompts = len(spec.class_names) * len(spec.templates)
    return {
        "mparams": params / 1e6,
        "gflops_per_prompt": per_prompt,
        "prompts": prompts,
        "gflops_once": per_prompt * prompts,
    }


def zero_shot_record(head: ZeroShotHead | None, cost: dict[str, float] | None) -> dict | None:
    """What front.json says of the zero-shot head (None for the other heads)."""
    if head is None:
        return None
    return {
        "classes": len(head.spec.class_names),
        "class_names_from": head.spec.names_from,
        "prompts": head.spec.prompts,
        "templates": len(head.spec.templates),
        "text_tower": cost,
        "note": "GFLOPs and params of the plans are the vision tower's; the text tower runs once per run",
    }


def zero_shot_note(head: ZeroShotHead, cost: dict[str, float]) -> str:
    """One line for the run's log: the classes, the templates, the text tower's cost apart from the plans'."""
    return (
        f"zero-shot head: {head.spec.describe()}, class embeddings {'from the cache' if head.cached else 'computed'}; "
        f"text tower {cost['mparams']:.4g} M params, {cost['gflops_per_prompt']:.4g} GFLOPs per prompt "
        f"({cost['gflops_once']:.4g} once per run), not in the plans' costs (the vision tower's)"
    )
