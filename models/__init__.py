"""Models: the supported families, loading by alias / hub id / folder, the compressed model, and its costs."""

from ._compressed import CompressedModel
from ._costing import example_inputs, measure_cost_table, model_flops
from ._families import (
    Family,
    Parts,
    TokenLayout,
    families,
    family_for,
    get_family,
    list_families,
    register_family,
)
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
    "families",
    "family_for",
    "get_family",
    "list_families",
    "register_family",
    "load_model",
    "load_processor",
    "measure_cost_table",
    "model_flops",
    "resolve_model",
    "resolve_model_name",
    "weights_fingerprint",
]
