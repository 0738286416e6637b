"""The model families, one module each, registered on import (`toast.models` imports this package).

A new family is one module here: a `Family` subclass (`toast.models.Family`; `_vision.VisionFamily`,
`_text.TextFamily` and `_causal.CausalLMFamily` hold what image encoders, text encoders and decoder language models
share) registered with `@register_family`, with its tiny test models (`tiny_models`). Every module of this package whose name does not start with `_` is imported below,
the built-in ones first (in `BUILT_IN` order: the order `list_families` gives); `toast.models.testing.check_family`
then checks the new family against its stock Transformers model.
"""

# the built-in families first, in the order `list_families` (and the messages naming the supported ones) give them
from . import vit  # noqa: I001
from . import deit, dinov2, clip, bert
from . import llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, gpt2
import importlib
import pkgutil

from ._causal import CausalLMFamily
from ._text import TextFamily
from ._vision import VisionFamily
from .bert import BertFamily
from .clip import ClipVisionFamily
from .deit import DeiTFamily
from .dinov2 import Dinov2Family
from .gemma2 import Gemma2Family
from .gemma3 import Gemma3Family
from .gpt2 import GPT2Family
from .llama import LlamaFamily
from .mistral import MistralFamily
from .phi3 import Phi3Family
from .qwen2 import Qwen2Family
from .qwen3 import Qwen3Family
from .vit import ViTFamily

#: The families shipped with toast, in the order they are registered and named: the encoders, then the decoders.
BUILT_IN = (
    *("vit", "deit", "dinov2", "clip", "bert"),
    *("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2"),
)

__all__ = [
    "BUILT_IN",
    "BertFamily",
    "CausalLMFamily",
    "ClipVisionFamily",
    "DeiTFamily",
    "Dinov2Family",
    "GPT2Family",
    "Gemma2Family",
    "Gemma3Family",
    "LlamaFamily",
    "MistralFamily",
    "Phi3Family",
    "Qwen2Family",
    "Qwen3Family",
    "TextFamily",
    "ViTFamily",
    "VisionFamily",
    "bert",
    "clip",
    "deit",
    "dinov2",
    "gemma2",
    "gemma3",
    "gpt2",
    "llama",
    "mistral",
    "phi3",
    "qwen2",
    "qwen3",
    "vit",
]


def _import_every_family() -> None:
    """Import (and so register) every family module of this package besides the built-in ones, by name."""
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in found:
        if name not in BUILT_IN:
            importlib.import_module(f"{__name__}.{name}")


_import_every_family()
