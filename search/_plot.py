"""The Pareto figure: `y` against `x` for every trial, the front, the original, the chosen plan and the budget.

matplotlib is imported inside `pareto_figure` only (`new_figure`: `Figure` + `FigureCanvasAgg` rather than pyplot), so
importing this module never imports matplotlib nor changes the caller's backend. What is drawn comes from
`toast.search._pareto` (the front, the plotted plane) and `toast.search._summary` (how a field is shown).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toast.objectives import OBJECTIVES, new_figure

from ._pareto import Front, as_number, objective_values, on_plane, pareto_axes, plane_directions
from ._summary import display_of, plan_text

__all__ = ["CLIP_SPREAD", "clipped_range", "pareto_figure", "plot_pareto"]


CLIP_SPREAD = 4.0  # the y axis shows down to this many times the front's upper half below its best value


def clipped_range(
    front_y: Sequence[float], others: Sequence[float], *, maximize: bool = True
) -> tuple[float, float] | None:
    """The y range that keeps the useful part of a front readable, or None when nothing needs clipping.

    The upper half of the front (best value to median) sets the scale: the axis goes down to `CLIP_SPREAD` times
    that spread below the best value. Points under it (a chance-level plan with every block removed) are clipped.
    A minimised `y` (perplexity) is the same turned over: the axis goes up to that many spreads above the best value,
    and the points over it (a plan whose perplexity explodes) are clipped."""
    if not maximize:
        flipped = clipped_range([-v for v in front_y], [-v for v in others])
        return None if flipped is None else (-flipped[1], -flipped[0])
    front_y = np.asarray([v for v in front_y if math.isfinite(v)], dtype=float)
    every = np.asarray([v for v in [*front_y, *others] if math.isfinite(v)], dtype=float)
    if front_y.size < 2 or every.size == 0:
        return None
    top = float(every.max())
    spread = max(top - float(np.median(front_y)), 1e-9 * max(1.0, abs(top)))
    low = top - CLIP_SPREAD * spread
    if float(every.min()) >= low:
        return None
    margin = 0.06 * (top - low)
    return low - margin, top + margin


def plot_pareto(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], **options: Any) -> Path:
    """Write `y` against `x` as a PNG to `path` and return the path; by default (`pareto_axes`) the
    registry's task score (accuracy) against the first cost objective (GFLOPs).

    Every completed trial is a grey dot (a cross when its record has `"feasible": False`), the front a
    line with markers, the original model (`baseline`) a star, the `chosen` record a green diamond, and
    `budget` (in `x`'s units) a dashed vertical line. `front` defaults to the front of `records` on `(x, y)`,
    with `directions` defaulting to each registered objective's (accuracy maximised, costs minimised).
    `front` may be on more objectives than the plane's two (accuracy, fidelity, GFLOPs): its plans best on the plane
    are joined by the line, the others (on the front by an objective the plane does not show) are hollow squares, and
    the legend counts both, "Pareto front (10 plans; 7 on this plane)", as `front_caption` does for the table.
    `panels`: one subplot per `(x, budget)` side by side, sharing `y` (e.g. GFLOPs and latency), each showing `front`,
    or without it its own front on its axes. `measured` maps an `x` to a record field measured for the front plans (`latency` to `latency_ms`):
    drawn as hollow markers beside the estimates. When a chance-level plan would stretch the `y` axis, the axis
    is clipped to the front's useful part (`clipped_range`) and the clipped points are drawn on its lower edge (its
    upper edge for a minimised `y`: perplexity).
    (`options`: `pareto_figure`'s keyword arguments.)
    """
    figure = pareto_figure(records, **options)
    path = Path(path)
    figure.savefig(path, format="png", dpi=150)
    return path


def pareto_figure(
    records: Sequence[Mapping[str, Any]],
    *,
    x: str | None = None,
    y: str | None = None,
    front: Front | None = None,
    baseline: Mapping[str, Any] | None = None,
    budget: float | None = None,
    title: str | None = None,
    directions: Sequence[str] | None = None,
    chosen: Mapping[str, Any] | None = None,
    panels: Sequence[tuple[str, float | None]] | None = None,
    measured: Mapping[str, str] | None = None,
) -> Any:
    """The matplotlib `Figure` that `plot_pareto` writes (same arguments, no path): for tests and notebooks."""
    default_x, default_y = pareto_axes()
    y = y or default_y
    panels = list(panels) if panels else [(x or default_x, budget)]
    figure = new_figure(7.0 * len(panels), 4.8)
    records = list(records)
    for i, (px, pbudget) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        _draw_panel(
            ax,
            records,
            x=px,
            y=y,
            front=front,
            baseline=baseline,
            budget=pbudget,
            directions=directions if len(panels) == 1 else None,
            chosen=chosen,
            measured=(measured or {}).get(px),
        )
        if len(panels) == 1:
            ax.set_title(title or f"{display_of(y).name} against {display_of(px).name}")
    if len(panels) > 1:
        figure.suptitle(title or display_of(y).name)
    return figure


def _draw_panel(
    ax: Any,
    records: list[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    front: Front | None,
    baseline: Mapping[str, Any] | None,
    budget: float | None,
    directions: Sequence[str] | None,
    chosen: Mapping[str, Any] | None,
    measured: str | None,
) -> None:
    """One Pareto panel of `plot_pareto` on `ax`."""
    x_shown, y_shown = display_of(x), display_of(y)
    x_scale, y_scale = x_shown.scale, y_shown.scale

    values = objective_values(records, (x, y))
    done = ~np.isnan(values).any(axis=1)
    infeasible = np.array([r.get("feasible", True) is False for r in records], dtype=bool).reshape(-1)
    failed = int((~done).sum())
    feasible_dots = values[done & ~infeasible]
    infeasible_dots = values[done & infeasible]
    ax.scatter(
        feasible_dots[:, 0] * x_scale,
        feasible_dots[:, 1] * y_scale,
        s=14,
        color="0.6",
        alpha=0.7,
        linewidths=0,
        label=f"trials ({len(feasible_dots)}" + (f"; {failed} failed, not shown)" if failed else ")"),
        zorder=2,
    )
    if len(infeasible_dots):
        ax.scatter(
            infeasible_dots[:, 0] * x_scale,
            infeasible_dots[:, 1] * y_scale,
            s=18,
            color="0.6",
            marker="x",
            linewidths=0.8,
            label=f"over budget ({len(infeasible_dots)})",
            zorder=2,
        )

    if front is None:
        if directions is None:
            unknown = [k for k in (x, y) if k not in OBJECTIVES]
            if unknown:
                raise ValueError(f"no default direction for {unknown}: pass directions=[...] or front=")
            directions = (OBJECTIVES[x].direction, OBJECTIVES[y].direction)
        front = Front.from_records(records, (x, y), directions)
    points = np.empty((0, 2))
    if len(front):
        every = (
            objective_values(list(front.records), (x, y))
            if front.records
            else front.values[:, [front.objectives.index(x), front.objectives.index(y)]]
        )
        best = on_plane(every, plane_directions(front, x, y))
        points = every[best]
        points = points[np.argsort(points[:, 0], kind="stable")]
        n, others = len(every), [k for k in front.objectives if k not in (x, y)]
        ax.plot(
            points[:, 0] * x_scale,
            points[:, 1] * y_scale,
            "-o",
            color="tab:blue",
            markersize=5,
            linewidth=1.5,
            label=f"Pareto front ({n} plan{'s' if n != 1 else ''}; {len(points)} on this plane)"
            if n != len(points) or others
            else f"Pareto front ({n} plan{'s' if n != 1 else ''})",
            zorder=3,
        )
        if n != len(points):  # on the front by an objective this plane does not show
            off = every[~best]
            ax.scatter(
                off[:, 0] * x_scale,
                off[:, 1] * y_scale,
                s=26,
                marker="s",
                facecolors="white",
                edgecolors="tab:blue",
                linewidths=1.2,
                label=f"on the front by {', '.join(display_of(k).name for k in others) or 'ties'} ({len(off)})",
                zorder=3,
            )
        points = every
        if measured is not None and front.records:
            m = np.array([[as_number(r.get(measured)), as_number(r.get(y))] for r in front.records]).reshape(-1, 2)
            m = m[~np.isnan(m).any(axis=1)]
            if len(m):
                ax.scatter(
                    m[:, 0] * x_scale,
                    m[:, 1] * y_scale,
                    s=34,
                    facecolors="none",
                    edgecolors="tab:blue",
                    linewidths=1.0,
                    label=f"front, measured end to end ({len(m)})",
                    zorder=3,
                )

    marks = []
    for record, style in (
        (baseline, {"marker": "*", "s": 220, "color": "tab:red", "label": "original model", "zorder": 4}),
        (chosen, {"marker": "D", "s": 90, "color": "tab:green", "zorder": 5}),
    ):
        if record is None:
            continue
        px, py = as_number(record.get(x)), as_number(record.get(y))
        if not (math.isnan(px) or math.isnan(py)):
            marks.append(py)
            label = style.pop("label", None) or f"chosen ({plan_text(record)})"
            ax.scatter([px * x_scale], [py * y_scale], edgecolors="black", linewidths=0.6, label=label, **style)
    if budget is not None:
        ax.axvline(
            float(budget) * x_scale,
            color="tab:orange",
            linestyle="--",
            linewidth=1.2,
            label=f"budget ({float(budget) * x_scale:g} {x_shown.unit})".replace(" )", ")"),
            zorder=1,
        )

    shown_y = values[done][:, 1]
    up = dict(zip(front.objectives, front.directions)).get(y) or getattr(OBJECTIVES.get(y), "direction", "maximize")
    limits = clipped_range(points[:, 1], [*shown_y, *marks], maximize=up == "maximize")
    if limits is not None:  # the worst points beyond the axis: below it when maximised, above it when minimised
        low, high = limits[0] * y_scale, limits[1] * y_scale
        scaled = values[:, 1] * y_scale
        maximized = up == "maximize"
        out = values[done & ((scaled < low) if maximized else (scaled > high))]
        worst = (out[:, 1].min() if maximized else out[:, 1].max()) * y_scale if len(out) else math.nan
        where, extreme = ("below", "lowest") if maximized else ("above", "highest")
        ax.set_ylim(low, high)
        ax.scatter(
            out[:, 0] * x_scale,
            np.full(len(out), low if maximized else high),
            marker="v" if maximized else "^",
            s=30,
            color="0.35",
            clip_on=False,
            label=f"{len(out)} {where} the axis ({extreme} {y_shown.fmt.format(worst)}), clipped",
            zorder=4,
        )

    ax.set_xlabel(x_shown.axis)
    ax.set_ylabel(y_shown.axis)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
