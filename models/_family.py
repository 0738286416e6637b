"""A model family: the calling conventions of one architecture, and the registry the families are found in.

A family is stateless: it finds the parts of a Hugging Face model, and knows how to make its inputs and run the
embeddings, one block, the final norm, the pooling and the head on parts it is handed. The compressed model
(`_compressed.py`) owns the parts; the family owns the calling conventions. Each family is one module of
`toast.models.families` registered with `@register_family`, and passes `toast.models.testing.check_family` on its
tiny test models (`tiny_models`); the code outside the families calls these methods and never asks which family
or which kind of input it holds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UnsupportedModelError

#: The sizes every tiny test model shares (`Family.tiny_config`); a family adds its input sizes (`tiny_sizes`).
TINY_SIZES = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64}


@dataclass(frozen=True)
class TokenLayout:
    """Where the special tokens sit: [CLS] index, then distillation / register tokens."""

    cls_index: int = 0
    num_prefix_tokens: int = 1  # [CLS] + distillation + registers
    num_registers: int = 0


@dataclass
class Parts:
    """The pieces of a model a compressed model is built from."""

    embeddings: nn.Module
    blocks: nn.ModuleList
    final_norm: nn.Module
    head: nn.Module | None
    head_kind: str | None  # "pooler", "cls", "cls+mean"


def first_attr(obj: Any, *paths: str) -> Any:
    """The first of the dotted attribute `paths` that `obj` has."""
    for path in paths:
        cur = obj
        try:
            for name in path.split("."):
                cur = getattr(cur, name)
        except AttributeError:
            continue
        return cur
    raise AttributeError(f"{type(obj).__name__} has none of {paths}")


class Family:
    """The calling conventions of one architecture family. Subclasses set the class attributes and override what
    their models do differently; `families/_vision.py` and `families/_text.py` hold what image and text encoders
    share."""

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    #: What the family's datasets hold: "image", "text" (labelled texts for an encoder), or "causal-lm" (text a
    #: decoder predicts token after token: `families/_causal.py`). Data loading reads it (the processor's inputs, the
    #: check that a dataset suits the model). How the model is called is the methods' business, never a test of this.
    modality: ClassVar[str]
    #: The model's input names, in the order `CompressedModel.forward` takes them positionally.
    input_names: ClassVar[tuple[str, ...]]
    #: Whether the inputs' length is the caller's to choose (tokens: `seq_len`), not fixed by the model (images).
    sequence_inputs: ClassVar[bool] = False
    #: What a batch of synthetic inputs is called in messages ("images", "texts").
    inputs_noun: ClassVar[str] = "inputs"
    #: The Transformers auto class that loads the model's processor (`AutoImageProcessor`, `AutoTokenizer`).
    processor_class: ClassVar[str | None] = None
    #: Whether a sentence-transformers folder beside the checkpoint says how its features are pooled.
    sentence_transformers: ClassVar[bool] = False
    #: Whether the family's models generate text (a language-model head over every token: `generate` on its plain
    #: checkpoints; `toast.models.testing.check_generate` checks them).
    generates: ClassVar[bool] = False
    backbone_attrs: ClassVar[tuple[str, ...]] = ()
    blocks_paths: ClassVar[tuple[str, ...]] = ("layers", "encoder.layer", "encoder.layers")
    norm_attr: ClassVar[str] = "layernorm"
    #: Why no Transformers class classifies this family's probe features (an exported probe is then a `classifier` on
    #: the pooled features, which `CompressedModel.from_pretrained` applies and Transformers' loaders leave out).
    classifier_missing: ClassVar[str] = "no Transformers class classifies these features"
    #: The tiny test models of the family: case name → (Transformers class, config fields beyond `tiny_sizes`). The
    #: first is the family's own (`tiny_config()`); the conformance suite runs over every one.
    tiny_models: ClassVar[dict[str, tuple[str, dict[str, Any]]]] = {}
    #: The sizes of a tiny test model (every other config field is the reference checkpoint's, see `tiny_config`).
    tiny_sizes: ClassVar[dict[str, Any]] = TINY_SIZES

    # ---- finding the parts -------------------------------------------------------------
    def model_class(self, config: Any) -> type[nn.Module]:
        """The Transformers class a checkpoint of this family loads as: its image classifier where it names one,
        else `AutoModel`."""
        import transformers

        for arch in getattr(config, "architectures", None) or []:
            cls = getattr(transformers, arch, None)
            if cls is not None and arch.endswith("ForImageClassification"):
                return cls
        return transformers.AutoModel

    def backbone(self, model: nn.Module) -> nn.Module:
        for attr in self.backbone_attrs:
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                return inner
        return model

    def parts(self, model: nn.Module) -> Parts:
        bb = self.backbone(model)
        head, kind = self.find_head(model, bb)
        return Parts(self.find_embeddings(bb), first_attr(bb, *self.blocks_paths), self.find_norm(bb), head, kind)

    def find_embeddings(self, backbone: nn.Module) -> nn.Module:
        return backbone.embeddings

    def find_norm(self, backbone: nn.Module) -> nn.Module:
        return getattr(backbone, self.norm_attr)

    def find_head(self, model: nn.Module, backbone: nn.Module) -> tuple[nn.Module | None, str | None]:
        if model is not backbone and isinstance(getattr(model, "classifier", None), nn.Module):
            return model.classifier, "cls"
        pooler = getattr(backbone, "pooler", None)
        return (pooler, "pooler") if isinstance(pooler, nn.Module) else (None, None)

    def layout(self, config: Any) -> TokenLayout:
        return TokenLayout()

    def image_classifier(self, config: Any) -> tuple[str, str] | None:
        """The Transformers class that classifies this family's inputs, and what its classifier reads of the last
        hidden state after the final norm: "cls" (the [CLS] token: the probe's features) or "cls+mean" ([CLS] and
        the mean of the patch tokens). None where no class reads the probe's features (`classifier_missing`): a
        fitted probe can be exported as that class's classifier only where it reads what the probe was fitted on."""
        return None

    # ---- inputs ------------------------------------------------------------------------
    def example_inputs(
        self, config: Any, *, batch: int = 1, seq_len: int | None = None, processor: Any | None = None
    ) -> dict[str, torch.Tensor]:
        """`batch` copies of one input at the model's input size, on the CPU in float32 where floating (what the
        cost table, the latency table and the ONNX export feed the model): what `processor` makes of a blank input
        where it is given, `seq_len` tokens (at most the model's positions) where the family takes tokens."""
        raise NotImplementedError(f"the {self.name} family does not say what its inputs are (example_inputs)")

    def synthetic_inputs(
        self, config: Any, *, batch: int, rng: Any, offset: int = 0, processor: Any | None = None, max_length: int
    ) -> dict[str, torch.Tensor]:
        """A batch of `batch` made-up samples drawn from the numpy generator `rng` (the `offset`-th sample first),
        through `processor` where it is given (texts truncated to `max_length` tokens): the ONNX check's inputs
        for a model folder outside a run."""
        raise NotImplementedError(f"the {self.name} family does not make synthetic inputs (synthetic_inputs)")

    # ---- running -----------------------------------------------------------------------
    def embed(self, embeddings: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings' output `h_0` and the token mask (None when every token is real)."""
        raise NotImplementedError(f"the {self.name} family does not say how its inputs are embedded (embed)")

    def token_mask(self, inputs: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor | None:
        """The token mask `embed` returns with its output, without running the embeddings (None: all real)."""
        return None

    def rotary_embedding(self, config: Any) -> nn.Module | None:
        """The rotary position embedding `block_kwargs` makes the blocks' position embeddings with, built once per
        model from `config` (as the stock model holds its `rotary_emb`); None for a family without one."""
        return None

    def block_kwargs(
        self, config: Any, hidden: torch.Tensor, mask: torch.Tensor | None, *, rotary: nn.Module | None = None
    ) -> dict[str, Any]:
        """The keyword arguments every block is called with (`block(hidden, **kwargs)`), made once per forward from
        the state entering the first block run and the token mask: an attention mask, position ids, rotary
        position embeddings (with `rotary`, the model's `rotary_embedding`; built from `config` when None). Tensors
        among them (in tuples too) are costed with the embeddings."""
        return {}

    def run_block(self, block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        out = block(hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def normalize(self, final_norm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm over the sequence (Hugging Face's `last_hidden_state`)."""
        return final_norm(hidden)

    def pool(self, final_norm: nn.Module, normed: torch.Tensor, mask: torch.Tensor | None, config: Any) -> torch.Tensor:
        """Pooled features: [CLS] after the final norm."""
        return normed[:, self.layout(config).cls_index]

    def run_head(
        self, head: nn.Module, kind: str, normed: torch.Tensor, mask: torch.Tensor | None, config: Any
    ) -> torch.Tensor:
        if kind == "pooler":
            return head(normed)
        layout = self.layout(config)
        cls = normed[:, layout.cls_index]
        if kind == "cls+mean":
            return head(torch.cat([cls, normed[:, layout.num_prefix_tokens :].mean(1)], dim=1))
        return head(cls)

    # ---- the MLP branch (pre-norm families: a block computes h_out = r + m, m its MLP branch's output) -----
    def mlp_branch(self, block: nn.Module) -> nn.Module | None:
        """The module whose output is the block's MLP branch `m` (after any layer scale), added to the residual
        stream `r` after attention: `h_out = r + m`. None where a block has no such branch (post-norm encoders)."""
        return None

    def mlp_output_projection(self, block: nn.Module) -> nn.Module:
        """The MLP branch's last projection (before any layer scale): an `nn.Linear`, or a Transformers `Conv1D`
        (GPT-2: the same map with its weight stored input-major)."""
        return block.mlp.fc2

    def layer_scale(self, block: nn.Module) -> nn.Parameter | None:
        """The per-channel scale γ the MLP branch's output is multiplied by (DINOv2), or None."""
        return None

    def mlp_output_bias(self, block: nn.Module) -> bool:
        """Whether `block`'s MLP output projection holds a bias, or its checkpoint class can give it one (a folded
        map's bias then fits in a plain checkpoint). Encoders' projections have one."""
        return True

    def fold_mlp_output(self, block: nn.Module, weight, bias) -> nn.Module:
        """A copy of `block` whose MLP branch computes `m @ weight + bias` in place of `m` (`weight` (d, d),
        `bias` (d,) or None, float64 arrays): γ and the map multiplied into the output projection (γ then set to
        1); with no bias and a projection without one, none is added. The original block is left untouched."""
        import numpy as np

        if self.mlp_branch(block) is None:
            raise UnsupportedModelError(f"{self.name} blocks have no MLP branch to fold a map into")
        new = copy.deepcopy(block)
        proj = self.mlp_output_projection(new)
        a = torch.as_tensor(np.asarray(weight), dtype=torch.float64)
        b = torch.as_tensor(np.asarray(bias), dtype=torch.float64) if bias is not None else None
        if not isinstance(proj, nn.Linear) and type(proj).__name__ != "Conv1D":
            raise UnsupportedModelError(f"{self.name}: no map folds into a {type(proj).__name__} (a Linear or Conv1D)")
        input_major = not isinstance(proj, nn.Linear)  # Conv1D: weight (in, out)
        w = proj.weight.detach().to(torch.float64)
        w = w if input_major else w.T  # (in, out): m = x @ w + b_out
        b_out = (
            proj.bias.detach().to(torch.float64)
            if proj.bias is not None
            else torch.zeros(w.shape[1], dtype=torch.float64)
        )
        gamma = self.layer_scale(new)
        if gamma is not None:
            g = gamma.detach().to(torch.float64)
            w, b_out = w * g, b_out * g
        with torch.no_grad():
            folded = w @ a
            proj.weight.copy_((folded if input_major else folded.T).to(proj.weight.dtype))
            if proj.bias is not None or b is not None:
                if proj.bias is None:
                    proj.bias = nn.Parameter(torch.zeros(folded.shape[1], dtype=proj.weight.dtype))
                proj.bias.copy_((b_out @ a + (b if b is not None else 0.0)).to(proj.bias.dtype))
            if gamma is not None:
                gamma.fill_(1.0)
        return new

    # ---- export ------------------------------------------------------------------------
    def kept_config(self, config: Any, kept: Sequence[int]) -> Any:
        """A copy of `config` for a checkpoint holding only the blocks `kept` (in order, renumbered 0 … k-1): the
        layer count and every per-layer field. The plain export and the toast format's skeleton are built from it."""
        from ._plain import kept_layers_config

        return kept_layers_config(config, kept)

    def export_outputs(self, model: Any) -> tuple[str, ...]:
        """The names of what `export_forward` returns for `model` (a `CompressedModel`): an exported graph's
        outputs. An image model's forward output: an exported probe's or a classifier's logits, the pooler's
        output, else the pooled features."""
        if getattr(model, "classifier", None) is not None:  # an exported probe's logits (`_head.with_head`)
            return ("logits",)
        if model.head is None:
            return ("features",)
        return ("pooler_output",) if model.head_kind == "pooler" else ("logits",)

    def export_forward(self, model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """What an exported graph of `model` computes from `inputs`, in `export_outputs` order."""
        return model.tail(*model.run(inputs)[:2])

    # ---- tiny test models (no hub, no weights: `toast.models.testing`, tests/conftest.py) ----------------------
    def tiny_config(self, case: str | None = None, **overrides: Any) -> Any:
        """The config of the tiny test model `case` (`tiny_models`; the family's first by default): the reference
        checkpoint's fields (Transformers' defaults for the class are its config.json) with `tiny_sizes`, its class
        in `architectures`."""
        import transformers

        if not self.tiny_models:
            raise NotImplementedError(f"the {self.name} family has no tiny test model (tiny_models)")
        case = case or next(iter(self.tiny_models))
        if case not in self.tiny_models:
            raise ValueError(f"{self.name} has no tiny model {case!r} (it has {', '.join(self.tiny_models)})")
        cls_name, fields = self.tiny_models[case]
        config_class = getattr(transformers, cls_name).config_class
        return config_class(**{**self.tiny_sizes, **fields, **overrides, "architectures": [cls_name]})

    def tiny_inputs(self, config: Any, *, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Random inputs for a tiny test model of `config`, drawn with a `torch.Generator` seeded `seed` (text: one
        sequence padded, so a block that ignores the mask is seen)."""
        raise NotImplementedError(f"the {self.name} family has no tiny test inputs (tiny_inputs)")

    def save_tiny_processor(self, config: Any, directory: Path) -> None:
        """Save a processor for a tiny test model of `config` into `directory` (nothing where it takes none)."""


_REGISTRY: dict[str, Family] = {}
_REQUIRED = ("name", "model_types", "modality", "input_names")


def register_family(cls: type[Family]) -> type[Family]:
    """Register a model family (a `Family` subclass, stateless): `family_for` then finds it by the configs'
    `model_type`, `get_family` by its `name`, and the conformance suite (`toast.models.testing.check_family`)
    runs over it. A family claims its model types once: two families for one type would make loading ambiguous."""
    missing = [attr for attr in _REQUIRED if not hasattr(cls, attr)]
    if missing:
        raise TypeError(f"family class {cls.__name__} does not set {', '.join(missing)}")
    family = cls()
    taken = {t: f.name for f in _REGISTRY.values() for t in f.model_types if f.name != family.name}
    clash = [t for t in family.model_types if t in taken]
    if clash:
        raise ValueError(f"family {family.name!r}: model types {clash} are already {taken[clash[0]]!r}'s")
    _REGISTRY[family.name] = family
    return cls


def list_families() -> tuple[str, ...]:
    """The names of the registered families, in registration order."""
    return tuple(_REGISTRY)


def get_family(name: str) -> Family:
    """The registered family called `name`; `UnsupportedModelError` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedModelError(f"unknown model family {name!r} (known: {', '.join(_REGISTRY)})") from None


def registered_families() -> tuple[Family, ...]:
    """Every registered family, in registration order."""
    return tuple(_REGISTRY.values())


def family_for(config: Any) -> Family:
    """The family that handles a Hugging Face config, or a clear error naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    for family in _REGISTRY.values():
        if model_type in family.model_types:
            return family
    supported = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in _REGISTRY.values())
    raise UnsupportedModelError(f"unsupported architecture {model_type!r}: supported families are {supported}")
