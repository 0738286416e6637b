"""The verified-artifact helper both caches use: atomic writes, manifests, verification on read."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from toast._artifacts import read_artifact, write_artifact
from toast.errors import CacheError

KEY = "0123456789abcdef0123456789abcdef"


def _write(final: Path, contents: dict[str, bytes], key: str = KEY, fields: dict | None = None) -> dict:
    with write_artifact(final, key, "test entry") as out:
        for name, data in contents.items():
            (out.directory / name).write_bytes(data)
        out.manifest.update(fields or {})
    return json.loads((final / "manifest.json").read_text())


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_records_every_file_and_the_fields(tmp_path):
    final = tmp_path / "entries" / KEY
    files = {"a.bin": b"\x00\x01" * 1000, "b.json": b'{"x": 1}', "empty": b""}
    written = _write(final, files, fields={"rows": 3, "spec": {"name": "x"}})
    assert written == read_artifact(final, KEY, "test entry")
    assert written["key"] == KEY and written["rows"] == 3 and written["spec"] == {"name": "x"}
    assert written["files"] == {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()
    }
    assert {p.name for p in final.iterdir()} == {*files, "manifest.json"}
    assert [p.name for p in final.parent.iterdir()] == [KEY], "no temporary folder is left"


def test_the_entry_appears_only_when_complete(tmp_path):
    final = tmp_path / KEY
    with write_artifact(final, KEY, "test entry") as out:
        (out.directory / "a.bin").write_bytes(b"abc")
        assert out.directory.parent == final.parent and out.directory.name.startswith(f".{KEY}.tmp-")
        assert not final.exists()
        with pytest.raises(CacheError, match="incomplete"):
            read_artifact(final, KEY, "test entry")
    assert out.installed and read_artifact(final, KEY, "test entry")["files"]["a.bin"]["bytes"] == 3


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_a_crash_mid_write_leaves_only_what_existed(tmp_path, exc):
    other = tmp_path / "other-key"
    _write(other, {"kept.bin": b"kept"}, key="other-key")
    before = _tree(tmp_path)
    final = tmp_path / KEY
    with pytest.raises(exc):
        with write_artifact(final, KEY, "test entry") as out:
            (out.directory / "half.bin").write_bytes(b"half of it")
            raise exc("interrupted")
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-key"]
    read_artifact(other, "other-key", "test entry")


def test_reserved_manifest_fields_are_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(ValueError, match="key, files"):
        _write(tmp_path / KEY, {"a": b"a"}, fields={"key": "mine", "files": ["a"]})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"a\.bin is truncated \(3 of 2000 bytes\)"),
        ("flip", r"a\.bin is corrupted \(checksum mismatch\)"),
        ("delete", r"a\.bin is missing"),
        ("no manifest", r"is incomplete \(no manifest\.json\)"),
        ("bad manifest", r"unreadable manifest\.json"),
        ("no file records", r"unreadable manifest\.json"),
        ("other key", r"belongs to another key"),
    ],
)
def test_damage_is_named(tmp_path, damage, message):
    final = tmp_path / KEY
    _write(final, {"a.bin": bytes(range(250)) * 8, "b.bin": b"fine"})
    target, key = final / "a.bin", KEY
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:3])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete":
        target.unlink()
    elif damage == "no manifest":
        (final / "manifest.json").unlink()
    elif damage == "bad manifest":
        (final / "manifest.json").write_text('{"key": ')
    elif damage == "no file records":
        (final / "manifest.json").write_text(json.dumps({"key": KEY}))
    else:
        key = "f" * 32
    with pytest.raises(CacheError, match=message) as info:
        read_artifact(final, key, f"test entry {final}")
    assert str(final) in str(info.value)


def test_two_writers_of_one_key_one_wins_and_the_entry_verifies(tmp_path):
    final = tmp_path / KEY
    with write_artifact(final, KEY, "test entry") as first:
        (first.directory / "a.bin").write_bytes(b"first")
        with write_artifact(final, KEY, "test entry") as second:
            (second.directory / "a.bin").write_bytes(b"second")
        assert second.installed
    assert not first.installed, "the later writer keeps the entry already in place"
    assert read_artifact(final, KEY, "test entry")["files"]["a.bin"]["bytes"] == len(b"second")
    assert (final / "a.bin").read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == [KEY]


def test_concurrent_writers_of_one_key_leave_one_verified_entry(tmp_path):
    final, n = tmp_path / KEY, 4
    ready = threading.Barrier(n)
    writers, errors = [], []

    def write(i: int) -> None:
        try:
            with write_artifact(final, KEY, "test entry") as out:
                (out.directory / "a.bin").write_bytes(str(i).encode() * 10_000)
                out.manifest["writer"] = i
                ready.wait(timeout=30)  # every writer has a complete temporary folder: all rename together
            writers.append(out)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(w.installed for w in writers) == 1
    manifest = read_artifact(final, KEY, "test entry")
    assert (final / "a.bin").read_bytes() == str(manifest["writer"]).encode() * 10_000
    assert [p.name for p in tmp_path.iterdir()] == [KEY]
