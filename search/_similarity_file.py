"""The similarity map of a capture that holds only the space's pairs, kept beside the activation cache.

Where the capture's statistics hold only the pairs a search space reads, `similarity.png` comes from a token sample
(`SampledSimilarity`). The sample is taken during the capture's own pass (an observer of its batches) and kept as
`<cache_dir>/similarity/<entry key>-seed<seed>.json`, so neither the run that captures nor a later run on the same
entry makes a second pass over the calibration samples for it; a missing or unreadable file is recomputed by one
streaming pass (`search._report.similarity_report`).
"""

from __future__ import annotations

import json
from pathlib import Path

from toast.objectives import SimilarityReport

from .._artifacts import atomic_write_text
from ..capture import CapturedActivations


def similarity_path(captured: CapturedActivations, seed: int) -> Path:
    """Where the sampled similarity of this cache entry and token-sample seed is kept."""
    return captured.directory.parent.parent / "similarity" / f"{captured.directory.name}-seed{seed}.json"


def read_similarity(captured: CapturedActivations, seed: int) -> SimilarityReport | None:
    """The kept report, or None where there is none or it cannot be read (it is then computed again)."""
    path = similarity_path(captured, seed)
    try:
        report = SimilarityReport.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return report if report.num_states == captured.stats.num_states else None


def write_similarity(captured: CapturedActivations, seed: int, report: SimilarityReport) -> None:
    """Keep `report` for this entry and seed (written whole or not at all)."""
    path = similarity_path(captured, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report.to_json(), allow_nan=False) + "\n")
