"""Prefix reuse: hidden states of the probe and evaluation inputs at plan points, kept on disk between trials.

Every plan whose first span reads block `s`'s output runs the original blocks `0 … s` on the same inputs, and
plans sharing their first steps (same kept blocks, same translators) share the states up to there. A
`PrefixStore` keeps those states, one Arrow IPC file per (point, input group): one record batch per forward
batch, one row per sample (its tokens × width, flattened, in the model's dtype, so a trial that starts from
a stored state computes exactly what the full forward computes), read back memory-mapped. The states are keyed
by the steps before the point (`point_key`), the store's folder by everything the states depend on. The store
holds at most `cap_bytes` on disk: the least recently used state of a compressed prefix is dropped first, the
original model's prefixes last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

__all__ = ["PrefixStore", "PrefixWriter", "point_key"]

_WIDE = {torch.float32: (np.float32, pa.float32()), torch.float16: (np.float16, pa.float16())}
SUFFIX = ".arrow"


def point_key(steps: Sequence[tuple[str, str]], point: int) -> str:
    """The name of the state before step `point` of a plan with `steps` (`toast.search._forward.step_names`): the steps
    before it, so two plans with the same first steps name the same state."""
    return hashlib.sha256(json.dumps([list(s) for s in steps[:point]]).encode()).hexdigest()[:24]


def is_original(steps: Sequence[tuple[str, str]], point: int) -> bool:
    """Whether the steps before `point` are the original model's blocks only."""
    return all(kind == "block" for kind, _ in steps[:point])


class PrefixWriter:
    """Appends one forward batch's states at a time to a temporary file; `commit` renames it into the store,
    `abort` (or going over the store's cap) drops it."""

    def __init__(self, store: PrefixStore, name: str, dtype: torch.dtype, batches: int = 1) -> None:
        self.store, self.name, self.dtype, self.batches = store, name, dtype, batches
        self.path = store.directory / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        numpy_dtype, arrow_type = _WIDE.get(dtype, (np.uint16, pa.uint16()))  # bfloat16: its 16 bits
        self._numpy_dtype = numpy_dtype
        self._schema = pa.schema([pa.field("state", pa.list_(arrow_type))], metadata={"toast.dtype": str(dtype)})
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
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * (flat.size // max(rows, 1)))
        self._writer.write_batch(pa.record_batch([pa.ListArray.from_arrays(offsets, pa.array(flat))], self._schema))
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
        os.replace(self.path, self.store.directory / f"{self.name}{SUFFIX}")  # atomic: readers see all or nothing
        self.store.sizes[self.name] = size
        self.store.touch(self.name)
        return True


class PrefixStore:
    """States at plan points, disk-backed and memory-mapped, at most `cap_bytes` in all (0: nothing kept).

    `directory` is one context's: its name must cover everything the states depend on (model, inputs, their
    batches, translators' fits), which `SearchContext` hashes into it.
    """

    def __init__(self, directory: str | Path, cap_bytes: int) -> None:
        self.directory = Path(directory)
        self.cap_bytes = int(cap_bytes)
        self.sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        if self.cap_bytes > 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            for f in self.directory.glob(f"*{SUFFIX}"):
                stat = f.stat()
                self.sizes[f.name[: -len(SUFFIX)]] = stat.st_size
                self._used[f.name[: -len(SUFFIX)]] = stat.st_mtime - time.time()  # older than this process's
            self._evict(0)  # a smaller cap than the folder was filled under
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
        self._used[name] = time.monotonic()

    def room_for(self, nbytes: int) -> bool:
        """Whether `nbytes` more could be held, evicting every compressed prefix if need be."""
        originals = sum(v for k, v in self.sizes.items() if k.endswith("-o"))
        return self.enabled and originals + nbytes <= self.cap_bytes

    def make_room(self, nbytes: int, *, keep: str) -> bool:
        """Drop least recently used states (compressed prefixes first) until `nbytes` more fit."""
        if not self.room_for(nbytes) and not keep.endswith("-o"):
            return False
        return self._evict(nbytes, keep=keep)

    def _evict(self, nbytes: int, keep: str = "") -> bool:
        order = sorted(
            (k for k in self.sizes if k != keep),
            key=lambda k: (k.endswith("-o"), self._used.get(k, -1e18)),  # compressed first, then least recently used
        )
        while self.nbytes + nbytes > self.cap_bytes and order:
            self.drop(order.pop(0))
        return self.nbytes + nbytes <= self.cap_bytes

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
        try:
            with pa.memory_map(str(self.directory / f"{name}{SUFFIX}")) as source:
                reader = pa.ipc.open_file(source)
                out = []
                for i in range(reader.num_record_batches):
                    column = reader.get_batch(i).column(0)
                    values = column.values.to_numpy(zero_copy_only=False)
                    rows = len(column)
                    t = torch.from_numpy(np.array(values).reshape(rows, -1, width))  # copied out of the map
                    out.append(t.view(torch.bfloat16) if dtype == torch.bfloat16 else t)
        except (OSError, pa.ArrowInvalid, ValueError):
            self.drop(name)
            return None
        self.touch(name)
        return out

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.sizes.clear()
        self._used.clear()
