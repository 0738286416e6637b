"""Content hashes shared by the caches: file digests and keys of frozen specs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any


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
