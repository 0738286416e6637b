"""What both caches share: their root folder, keys of frozen specs, and verified artifacts.

An artifact is one folder per key holding files and a `manifest.json` that records the key, the
caller's fields and every file's size and sha256. `write_artifact` builds it in a temporary folder
beside its final place and renames it there in one step, so a partial write is never read as
complete; `read_artifact` returns the manifest only once every file it lists has been verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import CacheError

T = TypeVar("T")

MANIFEST = "manifest.json"
#: the layout of an artifact folder and its manifest; an entry of another version is recomputed, never read
ARTIFACT_FORMAT = 1
_RESERVED = ("key", "files", "artifact_format")  # manifest fields the helper writes itself
_TMP = ".tmp-"  # `.<name>.tmp-<host>-<pid>-<hex>`: a folder being written, by this host's process <pid>


def default_cache_dir() -> Path:
    """`$TOAST_CACHE_DIR`, else `$XDG_CACHE_HOME/toast-search`, else `~/.cache/toast-search`."""
    if os.environ.get("TOAST_CACHE_DIR"):
        return Path(os.environ["TOAST_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "toast-search"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file beside it, flushed to the disk, then renamed over
    it (a kill or a full disk leaves the previous content). The file's mode is an ordinary file's (0666 less the
    umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 16 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def spec_key(spec: Any) -> str:
    """A 32-hex-digit key of a dataclass's content (canonical JSON)."""
    blob = json.dumps(asdict(spec), sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def file_record(path: Path) -> dict[str, Any]:
    """What a manifest records of a file to verify it later: size and sha256."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_manifest(path: Path, key: str, what: str) -> dict:
    """A cache entry's JSON manifest, checked to belong to `key`; `CacheError` naming the problem."""
    if not path.is_file():
        raise CacheError(f"{what} is incomplete (no {path.name})")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise CacheError(f"{what} has an unreadable {path.name}") from None
    if not isinstance(manifest, dict):
        raise CacheError(f"{what} has an unreadable {path.name}")
    if manifest.get("key") != key:
        raise CacheError(f"{what} belongs to another key")
    version = manifest.get("artifact_format", ARTIFACT_FORMAT)  # entries written before the field: version 1
    if version != ARTIFACT_FORMAT:
        raise CacheError(
            f"{what} was written by another format version ({version!r}, this one reads {ARTIFACT_FORMAT})"
        )
    return manifest


def remove_entry(path: Path) -> None:
    """Remove a cache entry found unusable, whatever it is: its folder, or a file (or link) where the folder should
    be. A folder that cannot be removed whole is a `CacheError` (a new entry could not be installed there)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    if path.exists() or path.is_symlink():
        raise CacheError(
            f"cannot remove the unusable cache entry {path}: remove it by hand, or use another `cache_dir`"
        )


#: what reading an entry that is not what its reader expects may raise, besides `CacheError` (a field missing from a
#: manifest of another version, a file where a folder should be, an Arrow or JSON file cut short)
UNUSABLE = (CacheError, ValueError, TypeError, KeyError, IndexError, OSError)


def read_or_discard(directory: Path, read: Callable[[Path], T], *, redo: str) -> T | None:
    """`read(directory)` (which verifies the entry) when the entry exists; None when it does not, or when it is not
    what its reader expects: then it is said in one line ("<what is wrong>; <redo>") and removed, so the caller
    computes it again."""
    directory = Path(directory)
    if not (directory.exists() or directory.is_symlink()):
        return None
    try:
        return read(directory)
    except UNUSABLE as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        warnings.warn(f"{message}; {redo}", stacklevel=3)
        remove_entry(directory)
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_orphans(parent: Path, name: str) -> list[Path]:
    """Remove the temporary folders of `name` under `parent` whose writer on this host has died (a killed capture:
    an `except` never ran); the folders removed. A temporary folder of a live process, or of another host sharing
    the cache folder, is left alone."""
    host = socket.gethostname()
    removed = []
    for tmp in Path(parent).glob(f".{name}{_TMP}*"):
        parts = tmp.name[len(f".{name}{_TMP}") :].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def verify_file(path: Path, record: dict[str, Any], what: str) -> None:
    """Raise `CacheError` if `path` is missing, truncated or corrupted against its manifest record."""
    if not path.is_file():
        raise CacheError(f"{what}: {path.name} is missing")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise CacheError(f"{what}: {path.name} is truncated ({size} of {record['bytes']} bytes)")
    if sha256_file(path) != record["sha256"]:
        raise CacheError(f"{what}: {path.name} is corrupted (checksum mismatch)")


@dataclass
class ArtifactWriter:
    """An artifact being written: put files in `directory` (temporary) and fields in `manifest`.

    After the `with` block, `installed` says whether this write went into place (False: another
    writer of the same key finished first and its entry was kept).
    """

    directory: Path
    final: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    installed: bool = False


@contextmanager
def write_artifact(final_dir: Path, key: str, what: str) -> Iterator[ArtifactWriter]:
    """Write an artifact for `key` at `final_dir` atomically.

    Yields an `ArtifactWriter` whose `directory` is a fresh temporary folder beside `final_dir`. On
    a clean exit every file under it is recorded (bytes, sha256) in `manifest.json` with the fields
    of `writer.manifest` (`key` and `files` are the helper's), and the folder is renamed to
    `final_dir`; if `final_dir` exists by then (another process finished first), theirs is kept and
    ours discarded. On any exception, KeyboardInterrupt included, the temporary folder is removed.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(final_dir.parent, final_dir.name)
    tmp = final_dir.parent / f".{final_dir.name}{_TMP}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    writer = ArtifactWriter(tmp, final_dir)
    try:
        yield writer
        clash = [name for name in _RESERVED if name in writer.manifest]
        if clash:
            raise ValueError(f"manifest fields {', '.join(clash)} are written by write_artifact itself")
        files = {
            p.relative_to(tmp).as_posix(): file_record(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        manifest = {"key": key, "artifact_format": ARTIFACT_FORMAT, **writer.manifest, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(tmp, final_dir)
        except OSError as exc:
            if not final_dir.is_dir():  # not another writer's entry (a file in its place, a full disk)
                raise CacheError(f"cannot install {what} ({exc.strerror or exc})") from None
            shutil.rmtree(tmp, ignore_errors=True)  # another writer finished first: keep theirs
        else:
            writer.installed = True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_artifact(directory: Path, key: str, what: str) -> dict:
    """The manifest of the artifact at `directory`, every file it lists verified.

    Raises `CacheError` naming what is wrong: no manifest, an unreadable one, another key, or a
    file missing, truncated or corrupted.
    """
    directory = Path(directory)
    manifest = read_manifest(directory / MANIFEST, key, what)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(r, dict) and {"bytes", "sha256"} <= r.keys() for r in files.values()
    ):
        raise CacheError(f"{what} has an unreadable {MANIFEST} (no file records)")
    for name, record in files.items():
        verify_file(directory / name, record, what)
    return manifest
