"""Figures of the similarity report (the papers' Figures 2 and 3), drawn with matplotlib's Agg canvas.

matplotlib is imported inside the functions only, and through `Figure` + `FigureCanvasAgg` rather than
pyplot, so neither `import toast.objectives` nor a plot changes the caller's backend or global state.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toast.errors import MissingDependencyError

from ._similarity import SimilarityReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["cka_figure", "plot_cka", "plot_similarity", "similarity_figure"]

_MAX_LABELLED_TICKS = 25  # the largest models in scope (24 blocks) keep a label on every state
_MAX_ANNOTATED_STATES = 13  # write the values in the cells up to 12-block models


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on an Agg canvas; raises `MissingDependencyError` without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError(
            "plotting needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _tick_labels(positions: range) -> tuple[list[int], list[str]]:
    """Tick positions (hidden states `h_k`) and their labels in the plans' notation, thinned evenly past
    `_MAX_LABELLED_TICKS` states: state `h_k` is the output of block `k - 1`, so `h_0`, the embeddings' output, is
    `-1`, as in a span `-1→e`."""
    step = max(1, math.ceil(len(positions) / _MAX_LABELLED_TICKS))
    kept = list(positions)[::step]
    return kept, [str(k - 1) for k in kept]


#: The colour bar label of a CKA heatmap.
CKA_LABEL = "linear CKA between the two states"

#: The axis label of a heatmap of hidden states: which state each tick is, in the plans' notation.
STATE_AXIS = "output of block (plans' notation; -1: the embeddings)"


def _heatmap(figure: Figure, ax: Axes, matrix: np.ndarray, title: str, vmin: float, vmax: float, *, label: str) -> None:
    """One `(S, S)` matrix as a heatmap, `h_0` (block `-1`, the embeddings) top-left, NaN in grey, with a colour
    bar that says what its values are (`label`); both axes say which state a tick is."""
    import matplotlib

    S = matrix.shape[0]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ticks, labels = _tick_labels(range(S))
    fontsize = 9 if S <= 13 else 7
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set_title(title)
    ax.set_xlabel(STATE_AXIS, fontsize=8)
    ax.set_ylabel(STATE_AXIS, fontsize=8)
    if S <= _MAX_ANNOTATED_STATES:
        for i in range(S):
            for j in range(S):
                value = matrix[i, j]
                if np.isfinite(value):
                    dark = (value - vmin) / (vmax - vmin) < 0.6
                    ax.text(
                        j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white" if dark else "black"
                    )
    figure.colorbar(image, ax=ax, shrink=0.8, label=label)


def _as_matrix(matrix: Any, name: str) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} must be a square (S, S) matrix, got shape {array.shape}")
    return array


def _cosine_range(matrix: np.ndarray) -> tuple[float, float]:
    """Colour range `[min(0, lowest), 1]`: negative cosines stay visible, the usual case starts at 0."""
    finite = matrix[np.isfinite(matrix)]
    return (min(0.0, float(finite.min())) if finite.size else 0.0), 1.0


def cka_figure(matrix: Any, title: str | None = None) -> Figure:
    """The figure `plot_cka` writes: one CKA heatmap `(S, S)`, its axes the states `h_0 … h_L` labelled in the plans'
    notation (`-1 … L-1`: `h_k` is the output of block `k - 1`), its colour bar labelled."""
    matrix = _as_matrix(matrix, "the CKA matrix")
    side = 3.0 + 0.22 * matrix.shape[0]
    figure = new_figure(side + 1.4, side + 0.4)
    _heatmap(figure, figure.add_subplot(), matrix, title or "Linear CKA (all tokens)", 0.0, 1.0, label=CKA_LABEL)
    return figure


def plot_cka(matrix: Any, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write `cka_figure(matrix, title)` as a PNG to `path`; return the path."""
    figure = cka_figure(matrix, title)
    path = Path(path)
    figure.savefig(path, format="png", dpi=150)
    return path


def similarity_figure(report: SimilarityReport, title: str | None = None) -> Figure:
    """The figure `plot_similarity` writes: the CKA and [CLS] cosine heatmaps and the Block Redundancy bars, every
    axis in the plans' notation (state `h_k` is block `k - 1`'s output; `-1` the embeddings')."""
    S = report.num_states
    side = 3.0 + 0.22 * S
    figure = new_figure(3 * side + 2.5, side + 0.4)
    cka_ax, cos_ax, br_ax = figure.subplots(1, 3, width_ratios=[1.15, 1.15, 1.0])
    _heatmap(figure, cka_ax, report.cka, "Linear CKA (all tokens)", 0.0, 1.0, label=CKA_LABEL)
    _heatmap(
        figure,
        cos_ax,
        report.cosine_cls,
        "Cosine similarity ([CLS])",
        *_cosine_range(report.cosine_cls),
        label="[CLS] cosine similarity",
    )

    states = range(1, S)  # h_0 has no predecessor, so no score
    scores = report.block_redundancy[1:]
    br_ax.bar(list(states), np.nan_to_num(scores, nan=0.0), color="tab:blue")
    ticks, labels = _tick_labels(states)
    br_ax.set_xticks(ticks, labels, rotation=90, fontsize=9 if S <= 13 else 7)
    br_ax.set_xlim(0.4, S - 0.4)
    br_ax.set_title("Block Redundancy")
    br_ax.set_xlabel("block b (plans' notation)")
    br_ax.set_ylabel(r"BR $= -\mathrm{mean}\,(\mathrm{out}_b - \mathrm{in}_b)^2$")
    br_ax.axhline(0.0, color="black", linewidth=0.8)
    br_ax.grid(axis="y", alpha=0.3)

    if title:
        figure.suptitle(title)
    return figure


def plot_similarity(report: SimilarityReport, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write `similarity_figure(report, title)` as one PNG to `path`; return the path."""
    figure = similarity_figure(report, title)
    path = Path(path)
    figure.savefig(path, format="png", dpi=150)
    return path
