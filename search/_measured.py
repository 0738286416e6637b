"""End-to-end latency at the end of a run: the one place where latency is treated apart from the other objectives.

During the search a plan's latency is an estimate (`latency`: the latency table's sum of its parts). With a latency
table (latency an objective or budgeted), the end of the run measures end to end (`latency_ms`, `MEASURED_FIELD`) the
original, every front plan and the chosen one, each once; the chosen plan meets a latency budget as measured (the best
by estimate, else the next best that meets it); trials.csv gets the measured values of the plans measured, and the
front table and the Pareto plot show them beside the estimates. Without a latency table (`EndToEnd.off`) nothing is
measured and every method gives its records back as they were; nor with a `latency_table` file, measured on another
machine or runtime, where `toast-search measure RUN` measures the front on the deployment machine
(`toast.search._measure_run`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toast.objectives import MEASURED_FIELD, held_budgets
from toast.spaces import Plan

from ._latency import latency_inputs, measure_end_to_end
from ._pareto import choose

if TYPE_CHECKING:
    from toast.objectives import LatencyTable

    from ._context import SearchContext
    from ._settings import SearchSettings

__all__ = ["MEASURED_FIELD", "EndToEnd", "LatencyMeter", "meets_measured_latency"]


class LatencyMeter:
    """End-to-end milliseconds of a record's plan (its fastest round, `Timings`) on the run's device, dtype and
    latency batch (the inputs the latency table was timed on); each plan measured once."""

    def __init__(self, settings: SearchSettings, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.inputs = latency_inputs(
            ctx.loaded, batch_size=settings.scoring.latency_batch_size, seq_len=settings.scoring.latency_seq_len
        )
        self.mode = settings.scoring.latency_mode
        self.runtime = settings.scoring.latency_runtime
        self.done: dict[str, float] = {}

    @staticmethod
    def _key(record: Mapping[str, Any]) -> str:
        return json.dumps(record.get("spans") or [])

    def known(self, record: Mapping[str, Any]) -> float | None:
        """The plan's measured milliseconds when it was measured, else None (nothing is measured here)."""
        return self.done.get(self._key(record))

    def __call__(self, record: Mapping[str, Any]) -> float:
        key = self._key(record)
        if key not in self.done:
            plan = Plan.of(record.get("spans") or [], self.ctx.loaded.num_blocks)
            self.done[key] = measure_end_to_end(
                self.ctx.model_for(plan), self.inputs, mode=self.mode, runtime=self.runtime
            )
        return self.done[key]


def meets_measured_latency(
    pool: list[dict[str, Any]],
    budgets: dict[str, float],
    meter: Callable[[Mapping[str, Any]], float],
    *,
    accuracy_key: str | None = None,
) -> dict[str, Any] | None:
    """The budget choice among `pool` (on the task score `accuracy_key`, as `choose`) whose measured latency meets the
    latency budget: the best by estimate, else the next best that meets it as measured (said in one line)."""
    limit, missed = budgets["latency"], []
    candidates = list(pool)
    while True:
        chosen = choose(candidates, accuracy_key=accuracy_key, budgets=budgets)
        if chosen is None or meter(chosen) <= limit:
            break
        missed.append(chosen)
        candidates = [r for r in candidates if r is not chosen]
    if missed:
        first = missed[0]
        then = (
            f"took {chosen['plan']} (measured {meter(chosen):.4g} ms), the next best that meets it"
            if chosen is not None
            else "no scored plan meets it as measured"
        )
        print(
            f"latency: {first['plan']} is estimated {first.get('latency', math.nan):.4g} ms but measured "
            f"{meter(first):.4g} ms, over the {limit:.4g} ms budget"
            + (f" ({len(missed) - 1} more like it)" if len(missed) > 1 else "")
            + f": {then}"
        )
    return chosen


class EndToEnd:
    """What the end of a run measures end to end, and where the measurements go (see the module): `on` with a
    latency table, else every method gives its input back unchanged."""

    #: the record field the Pareto plot draws beside an axis's estimate: latency's measured milliseconds
    PLOTTED: Mapping[str, str] = {"latency": MEASURED_FIELD}

    def __init__(self, meter: LatencyMeter | None, table: LatencyTable | None = None) -> None:
        self._meter = meter
        self._table = table  # the run's latency table: its margin holds estimates when nothing is measured

    @classmethod
    def for_run(cls, settings: SearchSettings, ctx: SearchContext) -> EndToEnd:
        """Measuring on the run's latency inputs in its `latency_runtime` when it measured a latency table here, else
        `off` (no table, or a `latency_table` file measured on the deployment machine: `toast-search measure` times
        the front there)."""
        here = ctx.costs.latency is not None and settings.scoring.latency_table is None
        return cls(LatencyMeter(settings, ctx) if here else None, ctx.costs.latency)

    @classmethod
    def off(cls) -> EndToEnd:
        return cls(None)

    @property
    def on(self) -> bool:
        return self._meter is not None

    def measured(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` with its plan's measured latency (measured now unless it was before)."""
        return {**record, MEASURED_FIELD: self._meter(record)} if self._meter is not None else record

    def known(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """`records` with the measured latency of the plans measured so far (the others as they were)."""
        meter = self._meter
        if meter is None:
            return list(records)
        return [{**r, MEASURED_FIELD: meter.known(r)} if meter.known(r) is not None else r for r in records]

    def choose(
        self, pool: list[dict[str, Any]], budgets: dict[str, float], *, accuracy_key: str | None = None
    ) -> dict[str, Any] | None:
        """The budget choice among `pool` on the task score `accuracy_key` (`choose`); with a latency budget, the best
        that meets it as measured, or where nothing is measured here (a table file), the best whose estimate meets it
        with the table's margin (`held_budgets`)."""
        if self._meter is not None and "latency" in budgets:
            return meets_measured_latency(pool, budgets, self._meter, accuracy_key=accuracy_key)
        return choose(pool, accuracy_key=accuracy_key, budgets=held_budgets(budgets, self._table))

    def columns(self, names: Sequence[str]) -> list[str]:
        """The front table's columns: the objectives, then the measured latency beside its estimate."""
        return [*names, *(("latency", MEASURED_FIELD) if self.on else ())]

    def panels(self, x: str, budgets: Mapping[str, float]) -> list[tuple[str, float | None]]:
        """The Pareto plot's panels: `x` with its budget, then latency with its budget, measured ones beside."""
        return [(x, budgets.get(x))] + ([("latency", budgets.get("latency"))] if self.on else [])
