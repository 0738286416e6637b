"""The prefix store's cap (issue 19, item 6): one cap over every store under `<cache_dir>/prefix/`, the least recently
used state out first whichever run wrote it, and a default that respects a small disk."""

from __future__ import annotations

import os
import shutil
import time
from collections import namedtuple

import torch

from toast.capture import _prefix
from toast.capture._prefix import SUFFIX, PrefixStore, default_cap_bytes

STATE = torch.arange(4 * 8 * 16, dtype=torch.float32).reshape(4, 8, 16)  # one batch: 4 samples × 8 tokens × 16 wide


def _name(i: int, kind: str = "c") -> str:
    return f"probe-subset-{i:024x}-{kind}"


def _put(store: PrefixStore, name: str, when: float | None = None) -> bool:
    writer = store.writer(name, torch.float32)
    writer.write(STATE)
    kept = writer.commit()
    if kept and when is not None:  # a use that long ago
        os.utime(store.directory / f"{name}{SUFFIX}", (when, when))
        store._used[name] = when
    return kept


def _held(root) -> set[str]:
    return {f"{f.parent.name}/{f.name[: -len(SUFFIX)]}" for f in root.glob(f"*/*{SUFFIX}")}


def test_the_cap_holds_across_keys_least_recently_used_first(tmp_path):
    root = tmp_path / "prefix"
    probe = PrefixStore(root / "probe-size", 1 << 30)
    _put(probe, _name(0))
    size = probe.sizes[_name(0)]
    shutil.rmtree(probe.directory)
    cap = 3 * size + size // 2  # room for three states, not four

    now = time.time()
    a = PrefixStore(root / "a", cap)  # one model and dataset's run ...
    assert _put(a, _name(1), now - 300) and _put(a, _name(2), now - 200)
    b = PrefixStore(root / "b", cap)  # ... and another's, under the same cache
    assert _put(b, _name(3), now - 100)
    assert _held(root) == {f"a/{_name(1)}", f"a/{_name(2)}", f"b/{_name(3)}"}

    assert a.read(_name(1), torch.float32, 16) is not None  # a1 used again: now a2 is the least recently used
    assert _put(b, _name(4))
    assert _held(root) == {f"a/{_name(1)}", f"b/{_name(3)}", f"b/{_name(4)}"}
    assert a.total_nbytes() <= cap and _name(2) not in a  # the other store sees its state gone

    c = PrefixStore(root / "c", 2 * size)  # a later run with a smaller cap trims every store to it, oldest first
    assert _held(root) == {f"a/{_name(1)}", f"b/{_name(4)}"} and c.total_nbytes() <= 2 * size


def test_the_running_stores_original_states_go_last(tmp_path):
    root = tmp_path / "prefix"
    now = time.time()
    a = PrefixStore(root / "a", 1 << 30)
    _put(a, _name(1, "o"), now - 300)  # another run's original states: no longer protected
    size = a.sizes[_name(1, "o")]
    b = PrefixStore(root / "b", 2 * size + size // 2)
    _put(b, _name(2, "o"), now - 200)
    _put(b, _name(3, "c"), now - 100)
    assert _held(root) == {f"b/{_name(2, 'o')}", f"b/{_name(3, 'c')}"}  # a's original, the oldest, went first
    _put(b, _name(4, "c"))  # b's original is older than b's compressed state, but kept
    assert _held(root) == {f"b/{_name(2, 'o')}", f"b/{_name(4, 'c')}"}


def test_the_default_cap_is_2_gb_or_a_tenth_of_the_disk(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(_prefix.shutil, "disk_usage", lambda path: usage(10**13, 0, 10**12))
    assert default_cap_bytes(tmp_path / "prefix") == 2 * 1024**3  # a roomy disk: 2 GB
    monkeypatch.setattr(_prefix.shutil, "disk_usage", lambda path: usage(10**11, 0, 5 * 10**9))
    assert default_cap_bytes(tmp_path / "not" / "made" / "yet") == 5 * 10**8  # 5 GB free: a tenth of it


def test_values_changed_in_a_valid_file_are_found_and_recomputed(tmp_path, recwarn):
    """Finite noise over a stored state's values (the Arrow structure intact) would silently change every trial that
    starts there: the per-row checksums catch it on the first read in a process, the entry is dropped."""
    import numpy as np
    import torch

    from toast.capture._prefix import SUFFIX, PrefixStore

    store = PrefixStore(tmp_path / "prefix" / "key", cap_bytes=10**8)
    states = torch.randn(4, 5, 8)
    writer = store.writer("eval-" + "0" * 24 + "-o", torch.float32)
    writer.write(states)
    assert writer.commit()
    name = "eval-" + "0" * 24 + "-o"
    path = store.directory / f"{name}{SUFFIX}"
    torch.testing.assert_close(PrefixStore(store.directory, 10**8).read(name, torch.float32, 8)[0], states)
    data = bytearray(path.read_bytes())
    raw = states.numpy().tobytes()
    at = bytes(data).find(raw[:64])
    assert at > 0
    noise = np.random.default_rng(0).normal(size=16).astype(np.float32).tobytes()
    data[at : at + len(noise)] = noise
    path.write_bytes(bytes(data))
    fresh = PrefixStore(store.directory, 10**8)  # another process: nothing verified yet
    assert fresh.read(name, torch.float32, 8) is None
    said = [str(w.message) for w in recwarn if "unusable" in str(w.message)]
    assert len(said) == 1 and "checksum" in said[0] and "recomputing" in said[0]
    assert name not in fresh and not path.exists()
