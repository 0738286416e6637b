"""What both caches share: their root folder, file digests, keys of frozen specs, manifests verified on read."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._errors import CacheError


def default_cache_dir() -> Path:
    """`$TOAST_CACHE_DIR`, else `$XDG_CACHE_HOME/toast-search`, else `~/.cache/toast-search`."""
    if os.environ.get("TOAST_CACHE_DIR"):
        return Path(os.environ["TOAST_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "toast-search"


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
    except ValueError:
        raise CacheError(f"{what} has an unreadable {path.name}") from None
    if manifest.get("key") != key:
        raise CacheError(f"{what} belongs to another key")
    return manifest


def verify_file(path: Path, record: dict[str, Any], what: str) -> None:
    """Raise `CacheError` if `path` is missing, truncated or corrupted against its manifest record."""
    if not path.is_file():
        raise CacheError(f"{what}: {path.name} is missing")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise CacheError(f"{what}: {path.name} is truncated ({size} of {record['bytes']} bytes)")
    if sha256_file(path) != record["sha256"]:
        raise CacheError(f"{what}: {path.name} is corrupted (checksum mismatch)")
