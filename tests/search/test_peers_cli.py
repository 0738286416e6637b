"""The peers' strategies through `toast-search --sampler NAME` (issue 24): the whole run on a tiny ViT, each plan a
trial of the same study, resumable; and the settings a peer cannot run with, refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import SMALL_RUN, run_main, save_tiny

from toast.search import load_run_study
from toast.search.samplers import PROPOSED_BY

L = 4  # the tiny ViT's blocks


def argv(model: Path, dataset: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--dataset", str(dataset), "--cache-dir", str(cache), "--out", str(out)] + [
        *SMALL_RUN,
        *extra,
    ]


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("sampler", "trials", "expected"),
    [("shortgpt", 100, L - 1), ("replaceme", 100, L - 1), ("sleb", 100, 4 + 3 + 2), ("evopress", 40, None)],
)
def test_a_peer_runs_as_the_study_sampler(tiny_dirs, graded_dataset_dir, tmp_path, sampler, trials, expected):
    out = tmp_path / sampler
    args = argv(tiny_dirs["vit"], graded_dataset_dir, tmp_path / "cache", out, "--sampler", sampler)
    code, stdout, stderr = run_main([*args, "--trials", str(trials), "--budget-fraction", "0.8"])
    assert code == 0, stderr
    records = rows(out)
    if expected is not None:
        assert len(records) == expected  # the rule's own number of plans (ShortGPT: one per level)
    else:  # EvoPress on 4 blocks: its offspring repeat plans (their scores reused), so its rule ends early
        assert len(records) < 40 and all(r["duplicate_of"] == "" for r in records[:-1])
    kinds = {span[2] for r in records for span in json.loads(r["spans"])}
    assert kinds == ({"linear"} if sampler == "replaceme" else {"identity"})
    removed = [sum(e - s for s, e, _ in json.loads(r["spans"])) for r in records]
    if sampler in ("shortgpt", "replaceme"):
        assert removed == list(range(1, L))  # one plan per number of removed blocks, fewest first
    study = load_run_study(out)
    proposed = [t.system_attrs.get(PROPOSED_BY) for t in study.trials]
    if expected is None:  # the study stopped on a repeat once the rule had no plan left
        assert proposed[-1] == "evopress: done, a repeat" and records[-1]["duplicate_of"] != ""
        proposed = proposed[:-1]
    assert set(proposed) == {sampler}
    front = json.loads((out / "front.json").read_text())
    assert front["front"] and "Pareto front" in stdout


def test_sleb_resumes_where_it_stopped(tiny_dirs, graded_dataset_dir, tmp_path):
    common = (tiny_dirs["vit"], graded_dataset_dir, tmp_path / "cache")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_main(argv(*common, whole, "--sampler", "sleb"))[0] == 0
    assert run_main(argv(*common, parts, "--sampler", "sleb", "--trials", "5"))[0] == 0
    assert len(rows(parts)) == 5
    assert run_main(argv(*common, parts, "--sampler", "sleb"))[0] == 0
    assert [r["plan"] for r in rows(parts)] == [r["plan"] for r in rows(whole)]


@pytest.mark.parametrize(
    ("extra", "phrase"),
    [
        (["--sampler", "replaceme", "--translators", "identity"], "add linear to --translators"),
        (["--sampler", "shortgpt", "--translators", "linear"], "add identity to --translators"),
        (["--sampler", "sleb", "--runner", "ray"], "set --max-concurrent 1"),
        (["--sampler", "evopress", "--runner", "ray", "--max-concurrent", "2"], "set --max-concurrent 1"),
    ],
)
def test_what_a_peer_cannot_run_with_is_refused_in_one_line(tmp_path, extra, phrase):
    out = tmp_path / "run"
    code, stdout, stderr = run_main(["--model", "demo-vit", "--out", str(out), *extra])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, stderr
    assert phrase in lines[0] and "Traceback" not in stderr + stdout
    assert not out.exists()


def test_a_sequential_peer_runs_on_ray_one_trial_at_a_time_when_told(tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_main(
        ["--model", "demo-vit", "--out", str(out), "--sampler", "sleb", "--runner", "ray", "--max-concurrent", "1"]
        + ["--dry-run"]
    )
    assert code == 0, stderr


def test_sleb_on_a_causal_lm_keeps_the_removal_of_least_perplexity(tmp_path):
    """Perplexity is minimised: every plan of SLEB's second level removes the block whose removal alone gave the
    lowest perplexity at the first."""
    model = save_tiny("llama", tmp_path / "llama")
    out = tmp_path / "lm"
    args = ["--model", str(model), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--seq-len", "32"]
    args += ["--calib-samples", "16", "--eval-samples", "20", "--device", "cpu", "--no-progress"]
    code, _, stderr = run_main([*args, "--sampler", "sleb", "--translators", "identity"])
    assert code == 0, stderr
    removed = [{b for s, e, _ in json.loads(r["spans"]) for b in range(s + 1, e + 1)} for r in rows(out)]
    first = [i for i, r in enumerate(removed) if len(r) == 1]
    assert first == list(range(len(first))) and len(first) >= 2  # level one: each block alone, in order
    records = rows(out)
    best = min(first, key=lambda i: float(records[i]["perplexity"]))
    second = removed[len(first) : 2 * len(first) - 1]
    assert len(second) == len(first) - 1 and all(len(r) == 2 and removed[best] < r for r in second)


def test_a_peer_has_a_run_of_its_own_beside_the_default_search():
    """The default search's samplers share a run (one may resume another's study); each peer's study is its own,
    so the fronts compare side by side, on the same activation cache."""
    from toast.search import SearchSettings

    keys = {
        s: SearchSettings.from_flat(model="demo-vit", dataset="digits", sampler=s).run_key()
        for s in ("tpe-local", "tpe", "shortgpt", "sleb")
    }
    assert keys["tpe-local"] == keys["tpe"]
    assert len({keys["tpe-local"], keys["shortgpt"], keys["sleb"]}) == 3


def test_a_new_default_study_starts_from_the_peers_one_shot_plans(tiny_dirs, graded_dataset_dir, tmp_path):
    """ShortGPT's and ReplaceMe's plans cost no evaluation to choose: the default search scores them first, each
    peer's fewest removed blocks first (they lift its early hypervolume, bench/bench_peers.py), then the DP seeds."""
    common = (tiny_dirs["vit"], graded_dataset_dir, tmp_path / "cache")
    peers = {}
    for name in ("shortgpt", "replaceme"):
        assert run_main(argv(*common, tmp_path / name, "--sampler", name))[0] == 0
        peers[name] = [r["plan"] for r in rows(tmp_path / name)]
    assert run_main(argv(*common, tmp_path / "default", "--trials", "8"))[0] == 0
    first = [r["plan"] for r in rows(tmp_path / "default")][:4]  # seeds: at most half the trials
    assert first == (peers["shortgpt"] + peers["replaceme"])[:4]
