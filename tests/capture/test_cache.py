"""The activation cache: content against the model's own hidden states, keying, atomicity, verification."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from toast.capture import ActivationCache, CalibrationSettings, calibrate
from toast.data import load_split
from toast.errors import CacheError
from toast.models import CompressedModel, load_model
from toast.spaces import PairStats, Plan


@pytest.fixture()
def setup(tiny_dirs, image_dataset_dir, tmp_path):
    loaded = load_model(str(tiny_dirs["dinov2"]))
    split = load_split(str(image_dataset_dir), "train")
    return loaded, split, ActivationCache(tmp_path / "cache")


def _count_forwards(loaded):
    calls = []
    handle = loaded.parts.embeddings.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_shards_hold_every_hidden_state(setup, dtype):
    loaded, split, cache = setup
    settings = CalibrationSettings(samples=12, batch_size=5, activation_dtype=dtype)
    captured = calibrate(loaded, split, settings, cache, progress=False)
    ids = sorted(set(captured.sample_index().tolist()))
    assert len(ids) == 12
    # reference: the original model's hidden states for the same samples, processed the same way
    from toast.data import iter_batches

    inputs = {
        "pixel_values": torch.cat([b["pixel_values"] for _, b in iter_batches(split, ids, loaded.processor, 100)])
    }
    with torch.no_grad():
        ref = loaded.model(**inputs, output_hidden_states=True).hidden_states
    tol = {"float32": 1e-6, "float16": 2e-3, "bfloat16": 2e-2}[dtype]
    for k in range(loaded.num_blocks + 1):
        stored = captured.state(k)
        expected = ref[k].reshape(-1, loaded.hidden_size).numpy()
        assert stored.shape == expected.shape
        np.testing.assert_allclose(stored, expected, rtol=tol, atol=tol * np.abs(expected).max())
    # statistics come from the full-precision activations, whatever the shard dtype
    x, y = (
        ref[1].reshape(-1, loaded.hidden_size).double().numpy(),
        ref[3].reshape(-1, loaded.hidden_size).double().numpy(),
    )
    expected = PairStats.from_arrays(x, y)
    got = captured.stats.pair(1, 3)
    np.testing.assert_allclose(got.sxy, expected.sxy, rtol=1e-5, atol=1e-5 * np.abs(expected.sxy).max())
    np.testing.assert_allclose(got.mean_y, expected.mean_y, rtol=1e-6, atol=1e-7)


def test_second_capture_runs_no_forward_pass(setup):
    loaded, split, cache = setup
    settings = CalibrationSettings(samples=10, batch_size=4)
    calls, handle = _count_forwards(loaded)
    try:
        first = calibrate(loaded, split, settings, cache, progress=False)
        assert len(calls) == 3
        second = calibrate(loaded, split, settings, cache, progress=False)
        assert len(calls) == 3, "a cache hit must not run the model"
    finally:
        handle.remove()
    assert first.directory == second.directory
    # a different draw is a different key
    other = calibrate(loaded, split, CalibrationSettings(samples=10, batch_size=4, seed=1), cache, progress=False)
    assert other.directory != first.directory


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "stats", "file for folder", "other format"])
def test_corrupt_entry_is_detected_and_recaptured(setup, damage):
    loaded, split, cache = setup
    settings = CalibrationSettings(samples=10, batch_size=4)
    captured = calibrate(loaded, split, settings, cache, progress=False)
    good = captured.state(2).copy()
    target = captured.files[0] if damage != "stats" else captured.directory / "gram.npy"
    data = bytearray(target.read_bytes())
    manifest = json.loads((captured.directory / "manifest.json").read_text())
    if damage == "file for folder":  # a file where the entry's folder should be
        import shutil

        shutil.rmtree(captured.directory)
        captured.directory.write_text("not a cache entry")
    elif damage == "other format":  # an entry a later (or earlier) version of the cache layout wrote
        (captured.directory / "manifest.json").write_text(json.dumps({**manifest, "artifact_format": 99}))
    elif damage in ("flip", "stats"):
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[: len(data) // 3]))
    else:
        target.unlink()
    with pytest.raises(CacheError, match="truncated|corrupted|missing|incomplete|format version"):
        cache.load(_spec_of(loaded, split, settings))
    calls, handle = _count_forwards(loaded)
    try:
        with pytest.warns(UserWarning, match="recapturing"):
            again = calibrate(loaded, split, settings, cache, progress=False)
    finally:
        handle.remove()
    assert len(calls) == 3, "a corrupt entry must be recaptured"
    np.testing.assert_array_equal(again.state(2), good)
    assert manifest["key"] == json.loads((again.directory / "manifest.json").read_text())["key"]


def _spec_of(loaded, split, settings):
    from toast.capture import CaptureSpec
    from toast.data import preprocessing_fingerprint, sample_ids

    return CaptureSpec(
        loaded.model_id,
        loaded.revision,
        split.fingerprint,
        split.split,
        sample_ids(len(split), settings.samples, settings.seed),
        preprocessing_fingerprint(loaded.processor),
        settings.activation_dtype,
    )


def test_interrupted_capture_leaves_no_entry(setup):
    loaded, split, cache = setup
    spec = _spec_of(loaded, split, CalibrationSettings(samples=10))
    original = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))

    def broken():
        from toast.data import iter_batches

        for i, batch in enumerate(iter_batches(split, spec.sample_ids, loaded.processor, 4)):
            if i == 1:
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_capture(spec, original, broken, progress=False)
    assert not cache.path(spec).exists()
    assert not any(p.name.startswith(".") for p in cache.path(spec).parent.iterdir())


def test_key_covers_what_determines_the_content(setup):
    loaded, split, _ = setup
    base = _spec_of(loaded, split, CalibrationSettings(samples=10))
    from dataclasses import replace

    variants = [
        replace(base, revision="other"),
        replace(base, dataset="x"),
        replace(base, split="test"),
        replace(base, sample_ids=base.sample_ids[:-1]),
        replace(base, preprocessing="{}"),
        replace(base, dtype="float32"),
    ]
    assert len({v.key for v in variants} | {base.key}) == len(variants) + 1


def test_text_capture_respects_padding(tiny_dirs, tmp_path):
    import datasets

    texts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13"] * 3
    datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1] * 3}).save_to_disk(str(tmp_path / "txt"))
    loaded = load_model(str(tiny_dirs["bert"]))
    split = load_split(str(tmp_path / "txt"), "train")
    captured = calibrate(
        loaded, split, CalibrationSettings(samples=12, batch_size=5), ActivationCache(tmp_path / "c"), progress=False
    )
    lengths = [len(t.split()) + 2 for t in texts]  # [CLS] … [SEP]
    assert captured.stats.n == sum(lengths) == len(captured.sample_index())


def test_a_killed_captures_temporary_folder_is_removed_and_a_live_ones_kept(setup):
    """A kill -9 during a capture leaves `.<key>.tmp-<host>-<pid>-<hex>` (no `except` ran): the next write of that
    entry removes it when its process is gone, and leaves the folder of a process still writing."""
    import os
    import socket
    import subprocess
    import sys

    loaded, split, cache = setup
    settings = CalibrationSettings(samples=10, batch_size=4)
    spec = _spec_of(loaded, split, settings)
    parent = cache.path(spec).parent
    parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    orphan = parent / f".{spec.key}.tmp-{host}-{int(dead.stdout)}-0badc0de"
    live = parent / f".{spec.key}.tmp-{host}-{os.getpid()}-0000beef"
    for folder in (orphan, live):
        folder.mkdir()
        (folder / "shard-00000.arrow").write_bytes(b"\0" * 1000)
    calibrate(loaded, split, settings, cache, progress=False)
    assert not orphan.exists() and live.is_dir()


# ---------------------------------------------------------------- pairs planned into memory, states where read (issue 22)


def _pairs_memory(loaded, pairs: int) -> float:
    """`stats_memory_gb` that holds the MLP-branch accumulators and `pairs` pair blocks, not the all-pairs Gram."""
    d, L = loaded.hidden_size, loaded.num_blocks
    branch = (L + L * (L + 1) // 2) * d * d * 8
    return (branch + pairs * d * d * 8) / 1024**3


def test_a_two_pass_capture_equals_a_one_pass_capture(setup, tmp_path):
    """The space's pairs split over two passes of the calibration data give the same statistics as one pass."""
    from toast.spaces import space_pairs

    loaded, split, _ = setup
    pairs = space_pairs(loaded.num_blocks, 1)
    S = loaded.num_blocks + 1
    assert len(pairs) < S * (S + 1) // 2
    captured = {}
    for passes, memory in ((1, _pairs_memory(loaded, len(pairs))), (2, _pairs_memory(loaded, (len(pairs) + 1) // 2))):
        settings = CalibrationSettings(samples=10, batch_size=4, pairs=pairs, stats_memory_gb=memory)
        cache = ActivationCache(tmp_path / f"cache-{passes}")
        calls, handle = _count_forwards(loaded)
        try:
            captured[passes] = calibrate(loaded, split, settings, cache, progress=False)
        finally:
            handle.remove()
        assert len(calls) == 3 * passes
        assert captured[passes].stats.gram is None and captured[passes].stats.held_pairs == pairs
        assert len(list(captured[passes].directory.glob("ext-*"))) == passes - 1
    one, two = captured[1].stats, captured[2].stats
    for i, j in sorted(pairs):
        a, b = one.pair(i, j), two.pair(i, j)
        for field in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
            np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-12, atol=0, err_msg=field)
    # the pairs path agrees with the all-pairs Gram (today's path) within float32 products' rounding
    full = calibrate(loaded, split, CalibrationSettings(samples=10, batch_size=4), ActivationCache(tmp_path / "all"))
    assert full.stats.gram is not None
    for i, j in sorted(pairs):
        want = full.stats.scatter(i, j)
        np.testing.assert_allclose(two.scatter(i, j), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_a_wider_space_reuses_the_pairs_a_narrower_one_captured(setup):
    from toast.errors import MissingStatsError
    from toast.spaces import space_pairs

    loaded, split, cache = setup
    narrow, wide = space_pairs(loaded.num_blocks, 1), space_pairs(loaded.num_blocks, 2)
    memory = _pairs_memory(loaded, len(wide))
    first = calibrate(
        loaded, split, CalibrationSettings(samples=10, batch_size=4, pairs=narrow, stats_memory_gb=memory), cache
    )
    (i, j) = sorted(wide - narrow)[0]
    with pytest.raises(MissingStatsError, match=rf"no pair \(h_{i}, h_{j}\)"):
        first.stats.pair(i, j)
    calls, handle = _count_forwards(loaded)
    try:
        second = calibrate(
            loaded, split, CalibrationSettings(samples=10, batch_size=4, pairs=wide, stats_memory_gb=memory), cache
        )
    finally:
        handle.remove()
    assert len(calls) == 3  # one extension pass, for the missing pairs only
    assert second.directory == first.directory and second.stats.held_pairs == wide
    (ext,) = second.directory.glob("ext-*")
    manifest = json.loads((ext / "manifest.json").read_text())
    assert sorted(map(tuple, manifest["pairs"])) == sorted(wide - narrow)
    for a, b in sorted(narrow):  # the narrow space's pairs are read from the first pass, unchanged
        np.testing.assert_array_equal(second.stats.block(a, b), first.stats.block(a, b))
    fresh = calibrate(
        loaded,
        split,
        CalibrationSettings(samples=10, batch_size=4, pairs=wide, stats_memory_gb=memory),
        ActivationCache(cache.root.parent / "fresh"),
    )
    for a, b in sorted(wide):
        np.testing.assert_allclose(second.stats.block(a, b), fresh.stats.block(a, b), rtol=1e-12)
    again = calibrate(
        loaded, split, CalibrationSettings(samples=10, batch_size=4, pairs=narrow, stats_memory_gb=memory), cache
    )
    assert again.stats.held_pairs == wide  # a narrower run reads the entry as it is, no pass


def test_shards_hold_only_the_states_asked_for_and_a_later_run_adds_states(setup):
    from toast.errors import MissingStatsError

    loaded, split, cache = setup
    first = calibrate(loaded, split, CalibrationSettings(samples=10, batch_size=4, states=frozenset()), cache)
    assert first.states == () and first.manifest["states"] == []
    assert len(set(first.sample_index().tolist())) == 10  # sample and token columns are still written
    with pytest.raises(MissingStatsError, match="hold no h_1"):
        first.state(1)
    calls, handle = _count_forwards(loaded)
    try:
        second = calibrate(
            loaded, split, CalibrationSettings(samples=10, batch_size=4, states=frozenset({1, 3})), cache
        )
    finally:
        handle.remove()
    assert len(calls) == 3 and second.states == (1, 3)
    assert second.shard_dir.name.startswith("ext-")
    full = calibrate(loaded, split, CalibrationSettings(samples=10, batch_size=4), ActivationCache(cache.root / "x"))
    np.testing.assert_array_equal(second.state(3), full.state(3))
    with pytest.raises(MissingStatsError, match="hold no h_2"):
        second.state(2)


def test_branch_blocks_are_planned_into_passes_and_a_wider_space_adds_only_those_it_lacks(setup, tmp_path):
    """The MLP branch blocks of `folded` (issue 22): only those the space's spans read, planned into passes with the
    state pairs, and extended by a wider space; every folded span's statistics equal a one-pass capture of all."""
    from toast.errors import MissingStatsError
    from toast.spaces import space_branch_pairs, space_pairs

    loaded, split, cache = setup
    L, d = loaded.num_blocks, loaded.hidden_size
    narrow, wide = space_branch_pairs(L, 1), space_branch_pairs(L, 2)
    memory = 4 * d * d * 8 / 1024**3  # four blocks a pass
    runs = {}
    for name, branch, pairs in (("narrow", narrow, space_pairs(L, 1)), ("wide", wide, space_pairs(L, 2))):
        settings = CalibrationSettings(
            samples=10, batch_size=4, pairs=pairs, branch_pairs=branch, stats_memory_gb=memory
        )
        runs[name] = calibrate(loaded, split, settings, cache, progress=False)
    first, second = runs["narrow"], runs["wide"]
    assert first.manifest["pair_passes"] > 2 and first.stats.held_branch_pairs == narrow
    s, t = sorted(wide - narrow)[0]
    with pytest.raises(MissingStatsError, match=rf"no MLP branch block \(m_{s}, h_{t}\)"):
        first.stats.branch_pair(s, t)
    assert second.directory == first.directory and second.stats.held_branch_pairs == wide
    added = [json.loads((e / "manifest.json").read_text()) for e in second.directory.glob("ext-*")]
    extended = [tuple(p) for m in added for p in m.get("branch_pairs", [])]
    in_base = len(list((second.directory / "branch").glob("*.npy")))
    assert {p for p in extended if p not in narrow} == wide - narrow  # the wider run captured only what it lacked
    assert in_base + len(extended) == len(wide)  # each block captured once
    full = calibrate(loaded, split, CalibrationSettings(samples=10, batch_size=4), ActivationCache(tmp_path / "all"))
    assert full.stats.gram is not None and len(full.stats.held_branch_pairs) == L + L * (L + 1) // 2
    for start in range(L):
        for target in range(start + 1, min(L, start + 3) + 1):
            a, b = second.stats.branch_pair(start, target), full.stats.branch_pair(start, target)
            for field in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
                want = getattr(b, field)
                np.testing.assert_allclose(
                    getattr(a, field), want, rtol=1e-9, atol=1e-9 * np.abs(want).max(), err_msg=field
                )
