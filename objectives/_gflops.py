"""The `gflops` objective: the compressed model's forward cost of one input, summed from the cost table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._objectives import CostObjective, Display
from ._registry import register_objective

if TYPE_CHECKING:
    from toast.spaces import Plan

    from ._cost import Cost

__all__ = ["GFLOPS", "GFlops"]


class GFlops(CostObjective):
    """GFLOPs per input at the model's input size (fvcore's count: a multiply-add is one FLOP)."""

    def of_plan(self, plan: Plan, cost: Cost) -> float:
        """`cost.gflops`."""
        return cost.gflops


GFLOPS = register_objective(
    GFlops(
        name="gflops",
        direction="minimize",
        unit="GFLOPs",
        description="forward cost of one input at the model's input size (fvcore: a multiply-add is one FLOP)",
        display=Display(
            title="GFLOPs",
            axis="GFLOPs per sample (multiply-add = 1 FLOP)",
            name="GFLOPs",
            unit="GFLOPs",
            headline=True,
        ),
    )
)
