"""Data: datasets by alias / hub id / local path, the offline docstrings corpus, and preprocessed inputs."""

from ._checks import check_inputs_fit, check_split
from ._corpus import PYTHON_DOCS, TOKENS, check_tokenizer, corpus_split, pack_split, packed_tokens
from ._datasets import (
    DATASET_ALIASES,
    DIGITS,
    DIGITS_FINGERPRINT,
    DOCSTRINGS,
    DatasetAlias,
    LabeledSplit,
    default_splits,
    digits_split_indices,
    features_in_order,
    iter_batches,
    length_sorted_batches,
    load_split,
    looks_like_path,
    preprocessing_fingerprint,
    sample_ids,
)
from ._inputs import InputsSpec, PreprocessedInputs
from ._textdata import DEFAULT_PACKAGES, build_docstring_dataset, collect_docstrings, package_version, read_info

__all__ = [
    "DATASET_ALIASES",
    "DEFAULT_PACKAGES",
    "DIGITS",
    "DIGITS_FINGERPRINT",
    "DOCSTRINGS",
    "DatasetAlias",
    "InputsSpec",
    "LabeledSplit",
    "PYTHON_DOCS",
    "PreprocessedInputs",
    "TOKENS",
    "build_docstring_dataset",
    "check_inputs_fit",
    "check_split",
    "check_tokenizer",
    "corpus_split",
    "collect_docstrings",
    "default_splits",
    "digits_split_indices",
    "features_in_order",
    "iter_batches",
    "length_sorted_batches",
    "load_split",
    "looks_like_path",
    "pack_split",
    "packed_tokens",
    "package_version",
    "preprocessing_fingerprint",
    "read_info",
    "sample_ids",
]
