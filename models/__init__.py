"""Models: the supported families (one module each in `families/`), loading by alias / hub id / folder, the
compressed model, and its costs."""

from . import families  # registers the built-in families
from ._compressed import CompressedModel, DecodeModule, graph_cache, refused_spans
from ._costing import example_inputs, measure_cost_table, model_flops
from ._family import (
    Family,
    Parts,
    TokenLayout,
    family_for,
    get_family,
    list_families,
    register_family,
    registered_families,
)
from ._head import LinearHead, head_placement, with_head
from ._loading import (
    LOCAL_ALIASES,
    MINILM_ALIAS,
    MINILM_HUB_ID,
    MODEL_ALIASES,
    LoadedModel,
    ModelSource,
    load_model,
    load_processor,
    resolve_model,
    resolve_model_name,
    weights_fingerprint,
)
from ._plain import checkpoint_layout, describe_checkpoint

__all__ = [
    "LOCAL_ALIASES",
    "MINILM_ALIAS",
    "MINILM_HUB_ID",
    "MODEL_ALIASES",
    "CompressedModel",
    "DecodeModule",
    "Family",
    "LinearHead",
    "LoadedModel",
    "ModelSource",
    "Parts",
    "TokenLayout",
    "checkpoint_layout",
    "describe_checkpoint",
    "example_inputs",
    "families",
    "family_for",
    "get_family",
    "graph_cache",
    "head_placement",
    "list_families",
    "load_model",
    "load_processor",
    "measure_cost_table",
    "model_flops",
    "refused_spans",
    "register_family",
    "registered_families",
    "resolve_model",
    "resolve_model_name",
    "weights_fingerprint",
    "with_head",
]
