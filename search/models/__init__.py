"""Models: the supported families, loading by alias / hub id / folder, the compressed model, and its costs."""

from ._compressed import CompressedModel
from ._costing import example_inputs, measure_cost_table, model_flops
from ._families import FAMILIES, Family, Parts, TokenLayout, family_for
from ._loading import (
    LOCAL_ALIASES,
    MINILM_ALIAS,
    MODEL_ALIASES,
    LoadedModel,
    ModelSource,
    load_model,
    load_processor,
    resolve_model,
    resolve_model_name,
    weights_fingerprint,
)

__all__ = [
    "FAMILIES",
    "LOCAL_ALIASES",
    "MINILM_ALIAS",
    "MODEL_ALIASES",
    "CompressedModel",
    "Family",
    "LoadedModel",
    "ModelSource",
    "Parts",
    "TokenLayout",
    "example_inputs",
    "family_for",
    "load_model",
    "load_processor",
    "measure_cost_table",
    "model_flops",
    "resolve_model",
    "resolve_model_name",
    "weights_fingerprint",
]
