"""The `latency` objective: milliseconds per batch estimated from the run's `LatencyTable`.

Timing a callable (`measure_latency`, `LatencyResult`) is `_timing`'s."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._objectives import CostObjective, Display
from ._registry import register_objective

if TYPE_CHECKING:
    from toast.spaces import Plan

    from ._cost import Cost
    from ._trial import TrialOutputs

__all__ = ["ESTIMATED_FIELD", "LATENCY", "MEASURED_FIELD", "Latency"]

MEASURED_FIELD = "latency_ms"  # measured end to end at the end of a run (front plans and the chosen one)
ESTIMATED_FIELD = "latency_ms_estimated"  # the latency table's estimate (every plan)


class Latency(CostObjective):
    """Milliseconds per batch on the run's device, estimated from its latency table (`Cost.latency_ms`): known for
    every plan without running it, so a budget can be stated in it. The run measures its front end to end at the
    end (`latency_ms`); `latency_ms_estimated` repeats the estimate beside it."""

    def of_plan(self, plan: Plan, cost: Cost) -> float:
        """`cost.latency_ms`; NaN when the cost table carries no latency table."""
        return math.nan if cost.latency_ms is None else float(cost.latency_ms)

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"latency": ms, "latency_ms_estimated": ms}` from the trial's cost; nothing without a latency table."""
        if trial.cost.latency_ms is None:
            return {}
        estimate = float(trial.cost.latency_ms)
        return {self.name: estimate, ESTIMATED_FIELD: estimate}


LATENCY = register_objective(
    Latency(
        name="latency",
        direction="minimize",
        unit="ms",
        description="milliseconds per batch on the run's device and runtime (or the --latency-table file's), estimated "
        "from its latency table (--latency-batch-size inputs at the model's input size)",
        display=Display(
            title="latency ms", axis="latency (ms per batch, estimated)", name="latency", unit="ms", fmt="{:.2f}"
        ),
        fields=(MEASURED_FIELD, ESTIMATED_FIELD),
        field_descriptions={
            MEASURED_FIELD: "milliseconds per batch measured end to end at the end of the run (median of repeats; "
            "the original, the front plans and the chosen one) on the run's device, dtype and --latency-runtime",
            ESTIMATED_FIELD: "the latency table's estimate of latency, beside the measured value (ms)",
        },
    )
)
