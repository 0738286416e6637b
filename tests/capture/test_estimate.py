"""Knowing before running (issue 22, part 5): the estimate follows the capture's own plan, its disk is what the
capture writes, and a run that cannot fit is refused in one line before any weight is loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toast.capture import (
    ActivationCache,
    CalibrationSettings,
    CaptureShape,
    calibrate,
    count_params_on_meta,
    estimate_resources,
    plan_capture,
)
from toast.data import load_split
from toast.errors import ResourceError
from toast.models import get_family, load_model
from toast.spaces import space_branch_pairs, space_pairs


def _du(directory) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_meta_parameter_count_is_the_model_s():
    family = get_family("dinov2")
    config = family.tiny_config()
    import transformers

    model = transformers.AutoModel.from_config(config)
    assert count_params_on_meta(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("memory_blocks", [None, 5])
def test_the_estimate_plans_as_the_capture_does_and_its_disk_is_what_it_writes(
    tiny_dirs, image_dataset_dir, tmp_path, memory_blocks
):
    loaded = load_model(str(tiny_dirs["dinov2"]))
    split = load_split(str(image_dataset_dir), "train")
    L, d = loaded.num_blocks, loaded.hidden_size
    pairs, branch = space_pairs(L, 2), space_branch_pairs(L, 2)
    memory = None if memory_blocks is None else memory_blocks * d * d * 8
    settings = CalibrationSettings(
        samples=12,
        batch_size=4,
        pairs=pairs,
        branch_pairs=branch,
        states=frozenset({0, 1, 2}),
        stats_memory_gb=None if memory is None else memory / 1024**3,
    )
    captured = calibrate(loaded, split, settings, ActivationCache(tmp_path), progress=False)
    tokens = captured.stats.n / captured.stats.num_samples
    shape = CaptureShape.from_config(loaded.config, tokens_per_sample=tokens, branches=True)
    estimate = estimate_resources(
        shape,
        samples=12,
        batch_size=4,
        pairs=pairs,
        branch_pairs=branch,
        states={0, 1, 2},
        memory_bytes=memory if memory is not None else 6 * 1024**3,
    )
    assert estimate.passes == captured.manifest["pair_passes"]
    written = _du(captured.directory)
    assert abs(estimate.disk_bytes - written) <= 0.2 * written, (estimate.disk_bytes, written)
    assert estimate.host_bytes > estimate.parts["weights"] and estimate.capture_seconds > 0


def test_the_plan_holds_the_gram_when_it_fits_and_groups_blocks_when_not():
    everything = plan_capture(5, 8, None, [(0, 0), (0, 1)], None)
    assert everything.gram and everything.passes == (((), ((0, 0), (0, 1))),)
    grouped = plan_capture(5, 8, [(0, 0), (0, 1), (1, 1)], [(0, 0), (0, 1)], 2 * 8 * 8 * 8)
    assert not grouped.gram and grouped.passes == (
        (((0, 0), (0, 1)), ()),
        (((1, 1),), ((0, 0),)),
        ((), ((0, 1),)),
    )
    assert grouped.pass_bytes(5, 8) == 2 * 8 * 8 * 8


def test_a_model_that_cannot_fit_is_refused_before_its_weights_are_read(tmp_path):
    """A ViT config far too large for this machine, saved without weights: one line naming the flag, exit 2."""
    import transformers

    family = get_family("vit")
    config = family.tiny_config(hidden_size=8192, num_hidden_layers=96, intermediate_size=32768, num_attention_heads=64)
    folder = tmp_path / "huge"
    config.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    run = subprocess.run(
        [sys.executable, "-m", "toast.search.cli", "--model", str(folder), "--dataset", "digits", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "TOAST_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert "GB of host memory" in line and "--dtype bfloat16" in line and "Traceback" not in run.stderr


def test_a_batch_too_large_names_the_batch_size():
    shape = CaptureShape(
        num_blocks=12,
        dim=768,
        intermediate=3072,
        heads=12,
        params=86_000_000,
        tokens_per_sample=257,
        padded_tokens=257,
        branches=False,
    )
    estimate = estimate_resources(
        shape, samples=10**6, batch_size=50_000, pairs=None, branch_pairs=None, states=(), memory_bytes=10**9
    )
    from pathlib import Path

    from toast.capture import check_fits

    with pytest.raises(ResourceError, match=r"lower --batch-size \(to \d+ or less\)"):
        check_fits(estimate, cache_root=Path("/tmp"), batch_size=50_000)
    assert json.dumps(estimate.lines())


def test_a_disk_too_small_names_what_grows(tmp_path):
    from dataclasses import replace

    from toast.capture import check_fits

    shape = CaptureShape(
        num_blocks=32,
        dim=4096,
        intermediate=14336,
        heads=32,
        params=10**6,
        tokens_per_sample=2048,
        padded_tokens=1,
        branches=False,
    )
    stats_heavy = estimate_resources(
        shape, samples=2, batch_size=1, pairs=None, branch_pairs=None, states=(), memory_bytes=10**9
    )
    huge = 10**18  # more than any disk
    with pytest.raises(ResourceError, match="lower --max-removed"):
        check_fits(replace(stats_heavy, disk_bytes=huge), cache_root=tmp_path, batch_size=1)
    shards = replace(stats_heavy, disk_bytes=huge, disk_parts={"statistics": 1, "activation shards": huge})
    with pytest.raises(ResourceError, match="lower --calib-samples"):
        check_fits(shards, cache_root=tmp_path, batch_size=1)
