"""The classification head an exported model carries: a fitted linear probe, as the Transformers class's classifier.

A linear probe on the pooled features `f` is an affine map. The ridge probe's scores
`((f - mean) / scale) @ coefᵀ + intercept` (`RidgeProbe`; `AdamProbe` likewise, with mean 0 and scale 1 unless it
standardizes) are `f @ Wᵀ + b` with `W = coef / scale` and `b = intercept - (mean / scale) @ coefᵀ`: one
`nn.Linear`. Where the family's image-classification class reads the probe's features (`Family.image_classifier`:
ViT and DeiT read the [CLS] token after the final norm), `W` becomes that class's classifier, so Transformers' own
loaders (`pipeline`, `AutoModelForImageClassification`) score what the probe scored; DINOv2's classifier reads
`[CLS, mean of the patch tokens]`: `W` fills the [CLS] half and zeros the other. Where no class reads them (CLIP,
text encoders), the probe is the compressed model's `classifier` on its pooled features: `CompressedModel`
applies it (`from_pretrained`, `forward`), while the checkpoint stays what it was (a plain one still loads with
`AutoModel` or `SentenceTransformer`, as the encoder, without the probe).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._compressed import CompressedModel, _span_key
from ._family import Family

__all__ = ["FEATURES", "HeadPlacement", "LinearHead", "head_placement", "with_head"]

#: The placement of a probe that no Transformers class reads: the compressed model's `classifier` on its features.
FEATURES = "features"


@dataclass(frozen=True)
class LinearHead:
    """One logit per class from the pooled features, `f @ weight.T + bias` (float64): output `i` is the dataset's
    label `labels[i]`, named `names[i]` (the exported config's `id2label`)."""

    weight: np.ndarray  # (k, d)
    bias: np.ndarray  # (k,)
    labels: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_probe(cls, probe: Any, class_names: Sequence[str] | None = None) -> LinearHead:
        """The fitted probe (`RidgeProbe`, `AdamProbe`) folded into one affine map of the raw features; its classes
        named by `class_names[label]` (a `ClassLabel`'s names), else by the label itself ("3")."""
        coef = probe.coef_.detach().to("cpu", torch.float64)
        mean = probe.mean_.detach().to("cpu", torch.float64)
        scale = probe.scale_.detach().to("cpu", torch.float64)
        intercept = probe.intercept_.detach().to("cpu", torch.float64)
        weight = coef / scale
        bias = intercept - (mean / scale) @ coef.T
        labels = tuple(int(c) for c in probe.classes_)
        return cls(weight.numpy(), bias.numpy(), labels, label_names(labels, class_names))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The head's float64 logits of `(n, d)` features (what the probe's `decision_function` gives)."""
        return np.asarray(features, dtype=np.float64) @ self.weight.T + self.bias


def label_names(labels: Sequence[int], class_names: Sequence[str] | None) -> tuple[str, ...]:
    """Each label's name: `class_names[label]` where there are names for it, else the label as a string; names made
    unique (`id2label` and `label2id` must invert each other)."""
    out: list[str] = []
    for label in labels:
        name = str(class_names[label]) if class_names is not None and 0 <= label < len(class_names) else str(label)
        out.append(name if name not in out else f"{name} ({label})")
    return tuple(out)


@dataclass(frozen=True)
class HeadPlacement:
    """Where an exported probe goes: the class of the exported model, what its classifier reads (`head_kind`:
    "cls", "cls+mean", or FEATURES where no Transformers class reads the probe's features), and why not a
    Transformers classifier (`note`, None when it is one)."""

    model_class: str
    head_kind: str
    note: str | None = None


def head_placement(family: Family, config: Any, model_class: str) -> HeadPlacement:
    """The placement of a probe for a model of `family` (its `config`, loaded as `model_class`)."""
    found = family.image_classifier(config)
    if found is None:
        return HeadPlacement(model_class, FEATURES, family.classifier_missing)
    return HeadPlacement(*found)


def with_head(model: CompressedModel, head: LinearHead) -> CompressedModel:
    """`model` (its modules shared, not copied) with `head` as its classifier: the task's Transformers class where
    one reads the probe's features (`head_placement`), else the compressed model's `classifier` on its pooled
    features (its own head, e.g. a pooler, kept); its config names the classes."""
    placement = head_placement(model.family, model.config, model.model_class)
    ref = next(model.parameters())
    weight = torch.as_tensor(head.weight, dtype=torch.float64)
    if placement.head_kind == "cls+mean":  # [CLS] half: the probe; the mean of the patch tokens: not read
        weight = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    elif placement.head_kind not in ("cls", FEATURES):
        raise ValueError(f"a probe cannot be exported as a {placement.head_kind!r} head")
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(torch.as_tensor(head.bias, dtype=torch.float64))
    config = copy.deepcopy(model.config)
    config.id2label = dict(enumerate(head.names))
    config.label2id = {name: i for i, name in enumerate(head.names)}
    config.architectures = [placement.model_class]
    linear = linear.to(device=ref.device, dtype=ref.dtype)
    features = placement.head_kind == FEATURES
    return CompressedModel(
        config=config,
        family=model.family,
        plan=model.plan,
        embeddings=model.embeddings,
        blocks={int(b): block for b, block in model.blocks.items()},
        translators={s: model.translators[_span_key(s)] for s in model.plan.spans},
        final_norm=model.final_norm,
        head=model.head if features else linear,
        head_kind=model.head_kind if features else placement.head_kind,
        model_class=placement.model_class,
        sentence=model.sentence,
        classifier=linear if features else None,
    )
