"""The `params` objective: millions of parameters of the compressed model, translators included."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._objectives import CostObjective, Display
from ._registry import register_objective

if TYPE_CHECKING:
    from toast.spaces import Plan

    from ._cost import Cost

__all__ = ["PARAMS", "Params"]


class Params(CostObjective):
    """Millions of parameters: the kept blocks, embeddings, tail and every translator of the plan."""

    def of_plan(self, plan: Plan, cost: Cost) -> float:
        """`cost.mparams`."""
        return cost.mparams


PARAMS = register_objective(
    Params(
        name="params",
        direction="minimize",
        unit="M",
        description="millions of parameters of the compressed model, translators included",
        display=Display(
            title="params (M)",
            axis="parameters (millions)",
            name="parameters",
            unit="M params",
            fmt="{:.2f}",
            headline=True,
        ),
    )
)
