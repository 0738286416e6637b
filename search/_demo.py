"""The demo run: `toast-search` with no model, dataset or budget searches the offline demo model on the digits, with
a GFLOPs budget so that it exports a model that removes at least one block."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_DATASET", "DEFAULT_MODEL", "DEMO_BUDGET_FRACTION", "with_demo_budget"]

DEFAULT_MODEL = "demo-vit"
DEFAULT_DATASET = "digits"
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
