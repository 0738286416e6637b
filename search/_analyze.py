"""`analyze`: the block similarity of a model on a dataset, without a search: the calibration capture (cached),
`similarity.json` and `similarity.png` in an output folder, and the most redundant blocks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toast.errors import SettingsError

from ._settings import SearchSettings

__all__ = ["Analysis", "analyze", "check_analysis_folder"]


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """What `analyze` measured and wrote: the similarity report, the capture it came from, the files."""

    report: Any  # `toast.objectives.SimilarityReport`
    samples: int
    tokens: int
    cache: Path
    json_path: Path
    png_path: Path

    def lines(self, top: int = 5) -> list[str]:
        """The report the command prints: the capture, the `top` most redundant blocks, the files written."""
        br = self.report.block_redundancy
        order = sorted(range(1, len(br)), key=lambda k: -br[k])
        out = [
            f"{self.samples} samples, {self.tokens} tokens; cache {self.cache}",
            "most redundant blocks (Block Redundancy, higher = the block changes its input less):",
        ]
        out += [f"  block {k - 1:>3}  (h_{k - 1} → h_{k})  BR = {br[k]:.4g}" for k in order[:top]]
        out.append(f"wrote {self.json_path} and {self.png_path}")
        return out


def check_analysis_folder(out: Path) -> None:
    """`out` is no search's run directory (its similarity.png would be replaced)."""
    out = Path(out)
    if (out / "settings.json").is_file() or any((out / f).is_file() for f in ("study.journal", "study.db")):
        raise SettingsError(
            f"`out` {out} is a search's run directory: analyze would replace its similarity.png; give another folder"
        )


def analyze(settings: SearchSettings) -> Analysis:
    """Capture `settings.data.calib_samples` samples of the train split (`split_train`) through the model (cached),
    and write `similarity.json` and `similarity.png` to `settings.out`."""
    from toast.objectives import SimilarityReport, plot_similarity

    from ..capture import calibrate
    from ._prepare import prepare

    out = settings.out
    check_analysis_folder(out)
    prepared = prepare(settings, search=False)
    captured = calibrate(
        prepared.loaded, prepared.train, prepared.calibration, prepared.cache, progress=settings.show_progress
    )
    report = SimilarityReport.from_stats(captured.stats)
    out.mkdir(parents=True, exist_ok=True)
    report.save(out / "similarity.json")
    title = f"{settings.data.model} on {Path(settings.data.dataset).name}"
    plot_similarity(report, out / "similarity.png", title=title)
    return Analysis(
        report=report,
        samples=captured.stats.num_samples,
        tokens=captured.stats.n,
        cache=captured.directory,
        json_path=out / "similarity.json",
        png_path=out / "similarity.png",
    )
