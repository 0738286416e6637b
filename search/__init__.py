"""The agent: models and datasets, activation capture and cache, compressed models, the CLI."""

from ._cache import ActivationCache, CaptureSpec, CapturedActivations, default_cache_dir
from ._compressed import CompressedModel
from ._data import DATASET_ALIASES, DatasetAlias, LabeledSplit, default_splits, iter_batches, load_split, sample_ids
from ._front import Front, choose, format_front_table, hypervolume, non_dominated, non_dominated_sort, plot_pareto
from ._inputs import InputsSpec, PreprocessedInputs
from ._errors import CacheError, DatasetError, UnsupportedModelError
from ._families import FAMILIES, Family, TokenLayout, family_for
from ._models import MODEL_ALIASES, LoadedModel, load_model

__all__ = [
    "DATASET_ALIASES",
    "DatasetAlias",
    "default_splits",
    "Front",
    "choose",
    "format_front_table",
    "hypervolume",
    "non_dominated",
    "non_dominated_sort",
    "plot_pareto",
    "InputsSpec",
    "PreprocessedInputs",
    "FAMILIES",
    "MODEL_ALIASES",
    "ActivationCache",
    "CacheError",
    "CaptureSpec",
    "CapturedActivations",
    "CompressedModel",
    "DatasetError",
    "Family",
    "LabeledSplit",
    "LoadedModel",
    "TokenLayout",
    "UnsupportedModelError",
    "default_cache_dir",
    "family_for",
    "iter_batches",
    "load_model",
    "load_split",
    "sample_ids",
]
