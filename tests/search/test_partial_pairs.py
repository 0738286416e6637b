"""A search whose statistics hold only the pairs its space uses, planned into several passes (issue 22): the same
trials as with the all-pairs Gram, and the similarity map from a token sample of a second pass."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from toast.search.cli import main


def _run(out: Path, cache: Path, *extra: str) -> list[dict[str, str]]:
    args = ["--max-removed", "1", "--trials", "6", "--calib-samples", "64", "--no-progress", "--quiet"]
    assert main([*args, *extra, "--out", str(out), "--cache-dir", str(cache)]) in (0, None)
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_pairs_planned_into_passes_score_as_the_all_pairs_capture(tmp_path):
    whole = _run(tmp_path / "whole", tmp_path / "cache-whole")
    parts = _run(tmp_path / "parts", tmp_path / "cache-parts", "--stats-memory-gb", "0.0001")
    passes = {
        p.parents[2].name: json.loads(p.read_text())["pair_passes"]
        for p in tmp_path.glob("cache-*/activations/*/manifest.json")
    }
    assert passes == {"cache-whole": 1, "cache-parts": passes["cache-parts"]} and passes["cache-parts"] > 1, passes
    assert [(r["plan"], r["accuracy"]) for r in whole] == [(r["plan"], r["accuracy"]) for r in parts]
    assert (tmp_path / "parts" / "similarity.png").stat().st_size > 0


def test_the_sampled_similarity_is_taken_during_the_capture_and_kept_for_later_runs(tmp_path):
    """The capture's own pass feeds the token sample (no second pass); a later run on the same entry reads it; and
    what it kept equals a second streaming pass over the same samples."""
    cache = tmp_path / "cache"
    _run(tmp_path / "first", cache, "--stats-memory-gb", "0.0001")
    (kept,) = (cache / "similarity").glob("*-seed0.json")
    first = kept.read_text()
    assert json.loads(first)["cka_tokens"].startswith("sample:")
    kept.unlink()  # the next run on the entry (a cache hit) makes the second pass and keeps what it found
    _run(tmp_path / "second", cache, "--stats-memory-gb", "0.0001")
    assert kept.read_text() == first
