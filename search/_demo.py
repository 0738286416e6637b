"""The demo run: `toast-search` with no model, dataset or budget searches the offline demo model on the digits, with
a GFLOPs budget so that it exports a model that removes at least one block."""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_DATASET",
    "DEFAULT_LM_DATASET",
    "DEFAULT_LM_OBJECTIVES",
    "DEFAULT_MODEL",
    "DEMO_BUDGET_FRACTION",
    "with_demo_budget",
    "with_model_defaults",
]

DEFAULT_MODEL = "demo-vit"
DEFAULT_DATASET = "digits"
DEFAULT_LM_DATASET = "python-docs"  # a causal LM's: the offline corpus (`toast.data.PYTHON_DOCS`)
DEFAULT_LM_OBJECTIVES = ("perplexity", "gflops")
DEMO_BUDGET_FRACTION = 0.85  # the demo exports a model: one that removes at least one block


def with_demo_budget(values: dict[str, Any]) -> dict[str, Any]:
    """Settings' flat keys with the demo's budget (`budget_fraction` 0.85) when they are the demo's model and dataset
    with no budget and no plans given, said in a note; other settings as they are."""
    from ._quiet import note

    demo = (values.get("model"), values.get("dataset")) == (DEFAULT_MODEL, DEFAULT_DATASET)
    budgets = [v for k, v in values.items() if k.startswith("budget_")]
    if not demo or values.get("plans") or any(v is not None for v in budgets):
        return values
    note(
        f"demo: {DEFAULT_MODEL} on {DEFAULT_DATASET}, budget {DEMO_BUDGET_FRACTION:g} × the original's GFLOPs "
        "(--budget-fraction)"
    )
    return {**values, "budget_fraction": DEMO_BUDGET_FRACTION}


def with_model_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Settings' flat keys with the model's own defaults where `dataset` or `objectives` is None (not given): for a
    causal LM the offline corpus and perplexity against GFLOPs, else the digits and accuracy against GFLOPs. A model
    that cannot be resolved gets the general defaults (its error is said where the run loads it)."""
    from toast.objectives import DEFAULT_OBJECTIVES

    if values.get("dataset") is not None and values.get("objectives") is not None:
        return values
    lm = False
    try:
        from ..errors import ToastError
        from ..models import resolve_model

        lm = resolve_model(values["model"]).family.modality == "causal-lm"
    except (ToastError, OSError, ValueError):
        pass
    defaults = {
        "dataset": DEFAULT_LM_DATASET if lm else DEFAULT_DATASET,
        "objectives": DEFAULT_LM_OBJECTIVES if lm else DEFAULT_OBJECTIVES,
    }
    return {**values, **{k: v for k, v in defaults.items() if values.get(k) is None}}
