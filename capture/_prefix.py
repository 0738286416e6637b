"""Prefix reuse: hidden states of the probe and evaluation inputs at plan points, kept on disk between trials.

Every plan whose first span reads block `s`'s output runs the original blocks `0 … s` on the same inputs, and
plans sharing their first steps (same kept blocks, same translators) share the states up to there. A
`PrefixStore` keeps those states, one Arrow IPC file per (point, input group): one record batch per forward
batch, one row per sample (its tokens × width, flattened, in the model's dtype, so a trial that starts from
a stored state computes exactly what the full forward computes), read back memory-mapped, with a CRC-32 per row
(sample) checked on an entry's first read in a process: values changed in a file whose structure is intact are
found, said in one line, and the states computed again. The states are keyed
by the steps before the point (`point_key`), the store's folder by everything the states depend on.

Each store is one folder `<root>/<key>` (`<cache_dir>/prefix/<key>`), and `cap_bytes` holds for all the stores under
`root` together, so the cache stays within the cap however many models and datasets were searched: the least
recently used state goes first, whichever run wrote it (recency is the file's modification time, which a read
updates, so other processes see it), and the running store's states of the original model last. The default cap
(`default_cap_bytes`) is the smaller of 2 GB and a tenth of the disk the store may use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from .._faults import fault_point

__all__ = ["DEFAULT_CAP_GB", "DISK_SHARE", "PrefixStore", "PrefixWriter", "default_cap_bytes", "point_key"]

_WIDE = {torch.float32: (np.float32, pa.float32()), torch.float16: (np.float16, pa.float16())}
SUFFIX = ".arrow"
#: An entry's file name (`PrefixStore.entry`): what a scan of the root counts, and nothing else.
ENTRY = re.compile(r"[\w-]+-[0-9a-f]{24}-[oc]" + re.escape(SUFFIX))
DEFAULT_CAP_GB = 2.0  # the default cap over the whole prefix store (GB of 1024**3 bytes) ...
DISK_SHARE = 0.1  # ... or this share of the disk it may use (free space and what it holds), when smaller


def default_cap_bytes(root: str | Path) -> int:
    """The default cap of the prefix store under `root`: the smaller of `DEFAULT_CAP_GB` and `DISK_SHARE` of the
    disk it may use (the free space where it lives plus what it already holds), so a full laptop disk is respected."""
    root = Path(root)
    where = root
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = 0
    held = sum(size for _, size, _ in _scan(root))
    return int(min(DEFAULT_CAP_GB * 1024**3, DISK_SHARE * (free + held)))


def _scan(root: Path) -> list[tuple[Path, int, float]]:
    """Every entry of every store under `root`: its path, size and last use (modification time)."""
    out = []
    try:
        folders = [d for d in os.scandir(root) if d.is_dir(follow_symlinks=False)]
    except OSError:
        return out
    for folder in folders:
        try:
            files = list(os.scandir(folder.path))
        except OSError:
            continue
        for f in files:
            if not ENTRY.fullmatch(f.name):
                continue
            try:
                stat = f.stat()
            except OSError:  # dropped by another process meanwhile
                continue
            out.append((Path(f.path), stat.st_size, stat.st_mtime))
    return out


def point_key(steps: Sequence[tuple[str, str]], point: int) -> str:
    """The name of the state before step `point` of a plan with `steps` (`toast.search._forward.step_names`): the steps
    before it, so two plans with the same first steps name the same state."""
    return hashlib.sha256(json.dumps([list(s) for s in steps[:point]]).encode()).hexdigest()[:24]


def is_original(steps: Sequence[tuple[str, str]], point: int) -> bool:
    """Whether the steps before `point` are the original model's blocks only."""
    return all(kind == "block" for kind, _ in steps[:point])


CHECKSUM = "crc32"  # one checksum per row (sample), of its states' bytes: finds damage, at a third of blake2b's cost
CHECKSUM_BYTES = 4


def _row_checksums(flat: np.ndarray, rows: int) -> list[bytes]:
    """The CRC-32 of each row's bytes of `flat` (the rows' states, flattened in order), read in place."""
    per_row = flat.reshape(rows, -1) if rows else flat.reshape(0, 0)
    return [zlib.crc32(memoryview(row)).to_bytes(CHECKSUM_BYTES, "little") for row in per_row]


class PrefixWriter:
    """Appends one forward batch's states at a time to a temporary file; `commit` renames it into the store,
    `abort` (or going over the store's cap) drops it."""

    def __init__(self, store: PrefixStore, name: str, dtype: torch.dtype, batches: int = 1) -> None:
        self.store, self.name, self.dtype, self.batches = store, name, dtype, batches
        self.path = store.directory / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        numpy_dtype, arrow_type = _WIDE.get(dtype, (np.uint16, pa.uint16()))  # bfloat16: its 16 bits
        self._numpy_dtype = numpy_dtype
        self._schema = pa.schema(
            [pa.field("state", pa.list_(arrow_type)), pa.field(CHECKSUM, pa.binary(CHECKSUM_BYTES))],
            metadata={"toast.dtype": str(dtype)},
        )
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self._schema)
        self.nbytes = 0
        self._written = 0
        self.dropped = False

    def write(self, state: torch.Tensor) -> None:
        """One batch's states, `(rows, tokens, width)`."""
        if self.dropped:
            return
        t = state.detach().to("cpu").contiguous()
        flat = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().view(self._numpy_dtype).reshape(-1)
        rows = t.shape[0]
        per_row = flat.size // max(rows, 1)
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * per_row)
        sums = pa.array(_row_checksums(flat, rows), pa.binary(CHECKSUM_BYTES))
        self._writer.write_batch(
            pa.record_batch([pa.ListArray.from_arrays(offsets, pa.array(flat)), sums], self._schema)
        )
        self.nbytes += flat.nbytes
        self._written += 1
        # the first batch tells the whole entry's size (texts: an upper bound, the longest come first)
        projected = self.nbytes * self.batches if self._written == 1 else self.nbytes
        if not self.store.room_for(projected):
            self.abort()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None

    def abort(self) -> None:
        self.dropped = True
        self._close()
        self.path.unlink(missing_ok=True)

    def commit(self) -> bool:
        """Put the states in the store; False when they were dropped (over the cap)."""
        if self.dropped:
            return False
        self._close()
        size = self.path.stat().st_size
        if not self.store.make_room(size, keep=self.name):
            self.abort()
            return False
        fault_point("prefix")
        os.replace(self.path, self.store.directory / f"{self.name}{SUFFIX}")  # atomic: readers see all or nothing
        self.store.sizes[self.name] = size
        self.store.touch(self.name)
        return True


class _Corrupt(ValueError):
    """A stored state whose bytes are not the ones written."""


class PrefixStore:
    """States at plan points, disk-backed and memory-mapped; at most `cap_bytes` for every store under the same root
    (`directory.parent`) together (0: nothing kept).

    `directory` is one context's: its name must cover everything the states depend on (model, inputs, their
    batches, translators' fits), which `SearchContext` hashes into it.
    """

    def __init__(self, directory: str | Path, cap_bytes: int) -> None:
        self.directory = Path(directory)
        self.root = self.directory.parent
        self.cap_bytes = int(cap_bytes)
        self.sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._verified: set[str] = set()  # entries whose checksums this process checked
        if self.cap_bytes > 0:
            if self.directory.is_file() or self.directory.is_symlink():  # a file where the store's folder should be
                warnings.warn(f"{self.directory} is a file, not a prefix store; replacing it", stacklevel=2)
                self.directory.unlink()
            self.directory.mkdir(parents=True, exist_ok=True)
            for f in self.directory.glob(f"*{SUFFIX}"):
                stat = f.stat()
                self.sizes[f.name[: -len(SUFFIX)]] = stat.st_size
                self._used[f.name[: -len(SUFFIX)]] = stat.st_mtime
            self._evict(0)  # a smaller cap than the stores were filled under
            for f in self.directory.glob(".*.tmp"):  # a writer killed mid-way (an hour ago: not another process's)
                try:
                    if time.time() - f.stat().st_mtime > 3600:
                        f.unlink(missing_ok=True)
                except OSError:
                    pass

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    @property
    def nbytes(self) -> int:
        return sum(self.sizes.values())

    @staticmethod
    def entry(steps: Sequence[tuple[str, str]], point: int, group: str) -> str:
        """The entry name of the state before step `point` of `steps` on input group `group` (its suffix `-o` for
        the original model's prefix, `-c` for a compressed one)."""
        return f"{group}-{point_key(steps, point)}-{'o' if is_original(steps, point) else 'c'}"

    def __contains__(self, name: str) -> bool:
        return name in self.sizes and (self.directory / f"{name}{SUFFIX}").is_file()

    def touch(self, name: str) -> None:
        """Mark `name` used now, here and on disk (its modification time), so that every process's eviction sees it."""
        now = time.time()
        self._used[name] = now
        try:
            os.utime(self.directory / f"{name}{SUFFIX}", (now, now))
        except OSError:
            pass

    def room_for(self, nbytes: int) -> bool:
        """Whether `nbytes` more could be held, evicting every other state if need be (this store's states of the
        original model are kept)."""
        originals = sum(v for k, v in self.sizes.items() if k.endswith("-o"))
        return self.enabled and originals + nbytes <= self.cap_bytes

    def make_room(self, nbytes: int, *, keep: str) -> bool:
        """Drop least recently used states, of any store under the root (this one's original prefixes last), until
        `nbytes` more fit under the cap."""
        if not self.room_for(nbytes) and not keep.endswith("-o"):
            return False
        return self._evict(nbytes, keep=keep)

    def total_nbytes(self) -> int:
        """Bytes held by every store under the root (what the cap bounds)."""
        return sum(size for _, size, _ in _scan(self.root))

    def _evict(self, nbytes: int, keep: str = "") -> bool:
        """Drop states until `nbytes` more fit under the cap over the whole root, least recently used first (this
        store's original prefixes last); `keep` is never dropped. This store's view (`sizes`) is refreshed from the
        disk on the way, as another process may have added or dropped states."""
        entries = []  # (this store's original prefix, last use, path, size)
        mine: dict[str, int] = {}
        for path, size, mtime in _scan(self.root):
            name = path.name[: -len(SUFFIX)]
            if path.parent == self.directory:
                mine[name] = size
                if name != keep:
                    entries.append((name.endswith("-o"), max(mtime, self._used.get(name, mtime)), path, size))
            else:
                entries.append((False, mtime, path, size))
        self.sizes = mine
        self._used = {k: v for k, v in self._used.items() if k in mine or k == keep}
        total = sum(e[3] for e in entries)
        for _, _, path, size in sorted(entries, key=lambda e: (e[0], e[1])):
            if total + nbytes <= self.cap_bytes:
                break
            if path.parent == self.directory:
                self.drop(path.name[: -len(SUFFIX)])
            else:  # another store's folder stays, even empty: its run may be writing into it now
                path.unlink(missing_ok=True)
            total -= size
        return total + nbytes <= self.cap_bytes

    def drop(self, name: str) -> None:
        (self.directory / f"{name}{SUFFIX}").unlink(missing_ok=True)
        self.sizes.pop(name, None)
        self._used.pop(name, None)

    def writer(self, name: str, dtype: torch.dtype, batches: int = 1) -> PrefixWriter | None:
        """A writer for a new entry of `batches` forward batches, or None when the store is off or the entry is
        there already."""
        if not self.enabled or name in self:
            return None
        return PrefixWriter(self, name, dtype, batches)

    def read(self, name: str, dtype: torch.dtype, width: int) -> list[torch.Tensor] | None:
        """The entry's batches of states, `(rows, tokens, width)` each, or None when it is missing or unreadable
        (then it is dropped: the trial runs the prefix instead)."""
        if name not in self:
            return None
        verify = name not in self._verified
        try:
            with pa.memory_map(str(self.directory / f"{name}{SUFFIX}")) as source:
                reader = pa.ipc.open_file(source)
                out = []
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    column = batch.column(0)
                    values = np.array(column.values.to_numpy(zero_copy_only=False))  # copied out of the map
                    rows = len(column)
                    if verify and _row_checksums(values, rows) != batch.column(CHECKSUM).to_pylist():
                        raise _Corrupt(f"record batch {i} does not match its checksum")
                    t = torch.from_numpy(values.reshape(rows, -1, width))
                    out.append(t.view(torch.bfloat16) if dtype == torch.bfloat16 else t)
        except (OSError, pa.ArrowInvalid, ValueError, KeyError, _Corrupt) as exc:
            why = " ".join(str(exc).split())[:160] or type(exc).__name__
            warnings.warn(f"stored prefix states {name} are unusable ({why}); recomputing them", stacklevel=2)
            self.drop(name)
            return None
        self._verified.add(name)  # checked once per process: the file is not written again under this name
        self.touch(name)
        return out

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.sizes.clear()
        self._used.clear()
