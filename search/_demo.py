"""The demo runs: `toast-search` with no model, dataset or budget searches the offline demo model on the digits, and
`toast-search --model demo-lm` the offline demo LM on the offline corpus, each with a GFLOPs budget so that it exports
a model that removes at least one block."""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_LM_DATASET",
    "DEFAULT_LM_OBJECTIVES",
    "DEFAULT_MODEL",
    "DEMO_BUDGET_FRACTION",
    "DEMO_BUDGETS",
    "with_demo_budget",
    "with_model_defaults",
]

DEFAULT_MODEL = "demo-vit"
DEFAULT_DATASET = "digits"
DEFAULT_LM_DATASET = "python-docs"  # a causal LM's: the offline corpus (`toast.data.PYTHON_DOCS`)
DEFAULT_LM_OBJECTIVES = ("perplexity", "gflops")
DEMO_BUDGET_FRACTION = 0.85  # the demo exports a model: one that removes at least one block
DEMO_LM = "demo-lm"
#: Each demo's (model, dataset) and its budget fraction of the original's GFLOPs (the LM's: the issue's 0.75).
DEMO_BUDGETS = {(DEFAULT_MODEL, DEFAULT_DATASET): DEMO_BUDGET_FRACTION, (DEMO_LM, DEFAULT_LM_DATASET): 0.75}


def with_demo_budget(values: dict[str, Any]) -> dict[str, Any]:
    """Settings' flat keys with a demo's budget (`DEMO_BUDGETS`: demo-vit on the digits 0.85, demo-lm on python-docs
    0.75) when they are a demo's model and dataset with no budget and no plans given, said in a note; other settings
    as they are."""
    from ._quiet import note

    pair = (values.get("model"), values.get("dataset"))
    budgets = [v for k, v in values.items() if k.startswith("budget_")]
    if pair not in DEMO_BUDGETS or values.get("plans") or any(v is not None for v in budgets):
        return values
    fraction = DEMO_BUDGETS[pair]
    note(f"demo: {pair[0]} on {pair[1]}, budget {fraction:g} × the original's GFLOPs (--budget-fraction)")
    return {**values, "budget_fraction": fraction}


def with_model_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Settings' flat keys with the model's own defaults where `dataset` or `objectives` is None (not given): for a
    causal LM the offline corpus and perplexity against GFLOPs, else the digits and accuracy against GFLOPs. A model
    that cannot be resolved gets the general defaults (its error is said where the run loads it)."""
    from toast.objectives import DEFAULT_OBJECTIVES

    if values.get("dataset") is not None and values.get("objectives") is not None:
        return values
    lm = False
    try:
        from ..data import TOKENS
        from ..errors import ToastError
        from ..models import resolve_model

        lm = resolve_model(values["model"]).family.modality == TOKENS
    except (ToastError, OSError, ValueError):
        pass
    defaults = {
        "dataset": DEFAULT_LM_DATASET if lm else DEFAULT_DATASET,
        "objectives": DEFAULT_LM_OBJECTIVES if lm else DEFAULT_OBJECTIVES,
    }
    return {**values, **{k: v for k, v in defaults.items() if values.get(k) is None}}
