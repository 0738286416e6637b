"""Preprocessed inputs, cached once: no trial decodes an image or tokenizes a text again.

One folder per key (dataset fingerprint, split, input column, sample ids, preprocessing, maximum
text length), `CACHE_ROOT/inputs/<key>/`, holding `inputs.arrow` (an Arrow IPC file: a `sample`
column, then one fixed-size-list column per model input, `pixel_values`, `input_ids`, …, with each
sample's shape, dtype and storage in the schema's metadata) and `manifest.json`. Pixels are stored compactly
(`_pixels.py`): as the uint8 crop with a table of its 256 levels per channel where that reproduces the
processor's float32 output (checked on every batch), else float16 where that is close enough, else float32;
readers decode them back to what the processor gives. Texts are padded to the
longest sequence of the whole set; batches read back are trimmed to their own longest, so they equal
`iter_batches`' exactly. The folder is written and read with `write_artifact` / `read_artifact`:
built under a temporary name and renamed into place, verified on read against the size and sha256
in its manifest; a corrupt entry is reported with a warning and rebuilt, never used.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .._artifacts import MANIFEST, default_cache_dir, read_artifact, read_or_discard, spec_key, write_artifact
from ..errors import CacheError, DatasetError
from ._datasets import LabeledSplit, iter_batches, preprocessing_fingerprint
from ._pixels import NotRepresentable, Storage, choose

FORMAT_VERSION = 3  # 2: a folder per key (inputs.arrow + manifest.json); 3: pixels stored compactly
FILE = "inputs.arrow"


@dataclass(frozen=True)
class InputsSpec:
    """Everything that determines the preprocessed inputs; its hash is the cache key."""

    dataset: str  # the split's fingerprint
    split: str
    input_column: str
    sample_ids: tuple[int, ...]
    preprocessing: str  # the processor's configuration, as JSON
    max_length: int = 256  # texts only
    version: int = FORMAT_VERSION

    @classmethod
    def of(cls, split: LabeledSplit, ids: Sequence[int], processor: Any, *, max_length: int = 256) -> InputsSpec:
        return cls(
            split.fingerprint,
            split.split,
            split.input_column,
            tuple(int(i) for i in ids),
            preprocessing_fingerprint(processor),
            max_length,
        )

    @property
    def key(self) -> str:
        return spec_key(self)


def _trim_padding(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the sequence positions that are padding in every row (what per-batch padding never adds)."""
    mask = inputs.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return inputs
    used = mask.bool().any(0).nonzero()
    lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 0)
    return {k: v[:, lo:hi] if v.ndim >= 2 and v.shape[1] == mask.shape[1] else v for k, v in inputs.items()}


def _write_arrow(
    path: Path,
    key: str,
    modality: str,
    batches: Iterator[tuple[list[int], dict[str, torch.Tensor]]],
    total: int,
    *,
    progress: bool,
    processor: Any,
    forms: tuple[str, ...],
) -> dict[str, dict]:
    """Write the batches to the Arrow file `path`, each input in the storage its first batch allows (`forms`: the
    compact ones to try); return each input's per-sample shape, dtype, storage and largest storage error.
    `NotRepresentable` when a later batch does not fit the storage chosen on the first."""
    from tqdm.auto import tqdm

    writer = sink = None
    shapes: dict[str, dict] = {}
    storages: dict[str, Storage] = {}
    errors: dict[str, float] = {}
    try:
        bar = tqdm(total=total, desc="preprocess", unit="sample", disable=not progress)
        for chunk, inputs in batches:
            arrays = [pa.array(np.asarray(chunk, dtype=np.int64))]
            for name, t in inputs.items():
                a = t.detach().cpu().contiguous().numpy()
                info = {"shape": list(a.shape[1:]), "dtype": str(a.dtype)}
                if shapes.setdefault(name, info) != info:
                    raise DatasetError(
                        f"the processor gives {name} of varying shape or dtype ({shapes[name]} then {info}): "
                        "preprocessed inputs need a fixed size (set the processor's size)"
                    )
                if name not in storages:
                    storages[name] = choose(name, a, processor, forms=forms)
                stored, err = storages[name].encode(a)
                errors[name] = max(errors.get(name, 0.0), err)
                arrays.append(
                    pa.FixedSizeListArray.from_arrays(pa.array(stored.reshape(-1)), max(int(np.prod(a.shape[1:])), 1))
                )
            if writer is None:
                fields = [pa.field("sample", pa.int64())] + [
                    pa.field(n, arr.type) for n, arr in zip(inputs, arrays[1:])
                ]
                described = {n: {**info, **storages[n].to_json()} for n, info in shapes.items()}
                meta = {"toast.key": key, "toast.modality": modality, "toast.inputs": json.dumps(described)}
                schema = pa.schema(fields, metadata=meta)
                sink = pa.OSFile(str(path), "wb")
                writer = pa.ipc.new_file(sink, schema)
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            bar.update(len(chunk))
        bar.close()
        if writer is None:
            raise DatasetError("no samples to preprocess")
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
    return {n: {**info, **storages[n].to_json(), "max_error": errors[n]} for n, info in shapes.items()}


class PreprocessedInputs:
    """A verified cache entry: `(ids, inputs)` batches read from a memory-mapped Arrow file.

    Iterating yields the batches `iter_batches(split, ids, processor, batch_size)` would, in the same
    order, without calling the processor; `batches(n)` re-chunks; `as_tensors()` gives everything.
    """

    def __init__(self, path: Path, manifest: dict, batch_size: int) -> None:  # `path`: the Arrow file
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path = Path(path)
        self.manifest = manifest
        self.batch_size = batch_size
        self._table: pa.Table | None = None
        self._storage = {name: Storage.from_json(info) for name, info in manifest["inputs"].items()}

    # -- building and opening ----------------------------------------------------------------

    @staticmethod
    def entry_path(cache_root: str | Path | None, spec: InputsSpec) -> Path:
        """The entry's folder."""
        root = Path(cache_root) if cache_root is not None else default_cache_dir()
        return root / "inputs" / spec.key

    @classmethod
    def exists(cls, cache_root: str | Path | None, spec: InputsSpec) -> bool:
        """Whether an entry is stored for `spec` (not verified: see `open`)."""
        return (cls.entry_path(cache_root, spec) / MANIFEST).is_file()

    @classmethod
    def open(cls, cache_root: str | Path | None, spec: InputsSpec, batch_size: int) -> PreprocessedInputs:
        """Read and verify the entry for `spec`; raise `CacheError` naming what is wrong."""
        directory = cls.entry_path(cache_root, spec)
        manifest = read_artifact(directory, spec.key, f"preprocessed inputs {directory}")
        if FILE not in manifest["files"]:
            raise CacheError(f"preprocessed inputs {directory} is incomplete ({FILE} is not in its {MANIFEST})")
        return cls(directory / FILE, manifest, batch_size)

    @classmethod
    def get_or_build(
        cls,
        cache_root: str | Path | None,
        split: LabeledSplit,
        ids: Sequence[int],
        processor: Any,
        batch_size: int,
        *,
        max_length: int = 256,
        progress: bool = False,
    ) -> PreprocessedInputs:
        """The verified entry for these samples; built first (one processor pass) when missing or corrupt."""
        spec = InputsSpec.of(split, ids, processor, max_length=max_length)
        directory = cls.entry_path(cache_root, spec)
        found = read_or_discard(directory, lambda _: cls.open(cache_root, spec, batch_size), redo="rebuilding")
        if found is not None:
            return found
        cls.build(directory, spec, split, processor, batch_size, progress=progress)
        return cls.open(cache_root, spec, batch_size)

    @classmethod
    def build(
        cls,
        directory: Path,
        spec: InputsSpec,
        split: LabeledSplit,
        processor: Any,
        batch_size: int,
        *,
        progress: bool = False,
    ) -> None:
        """Run the processor over the samples and write the entry folder `directory` atomically.

        Pixels are stored in the most compact form the first batch allows; should a later batch not fit it
        (rare: a crop that is integer-valued for some images only), the entry is written again in float32."""
        start = time.perf_counter()
        ids = list(spec.sample_ids)
        # texts: one call over the whole set pads to its longest sequence (cheap: no decoding)
        step = max(len(ids), 1) if split.modality == "text" else batch_size
        forms: tuple[str, ...] = ("uint8", "float16")
        with write_artifact(directory, spec.key, f"preprocessed inputs {directory}") as out:
            while True:
                batches = iter_batches(split, ids, processor, step, max_length=spec.max_length)
                try:
                    shapes = _write_arrow(
                        out.directory / FILE,
                        spec.key,
                        split.modality,
                        batches,
                        len(ids),
                        progress=progress,
                        processor=processor,
                        forms=forms,
                    )
                    break
                except NotRepresentable as exc:
                    if not forms:
                        raise
                    warnings.warn(f"preprocessed inputs: {exc} on a later batch; storing float32", stacklevel=2)
                    forms = ()
            out.manifest.update(
                {
                    "spec": {**asdict(spec), "sample_ids": len(spec.sample_ids)},
                    "rows": len(ids),
                    "modality": split.modality,
                    "inputs": shapes,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's per-sample shape."""
        return {name: tuple(info["shape"]) for name, info in self.manifest["inputs"].items()}

    def _open_table(self) -> pa.Table:
        if self._table is None:
            source = pa.memory_map(str(self.path))
            self._table = pa.ipc.open_file(source).read_all()  # zero-copy over the memory map
        return self._table

    def __getstate__(self) -> dict:  # picklable (e.g. for Ray workers): the map is reopened there
        return {**self.__dict__, "_table": None}

    @property
    def ids(self) -> list[int]:
        return self._open_table().column("sample").to_numpy().tolist()

    def _decoded(self, name: str, stored: np.ndarray) -> torch.Tensor:
        """Stored rows of `name` (flat, writable) as the processor gave them: shape and dtype restored."""
        rows = stored.reshape(-1, *self.shapes[name])
        return torch.from_numpy(self._storage[name].decode(rows, self.manifest["inputs"][name]["dtype"]))

    def _rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        column = self._open_table().column(name).slice(start, stop - start)
        parts = [chunk.flatten().to_numpy(zero_copy_only=True) for chunk in column.chunks if len(chunk)]
        flat = np.concatenate(parts) if parts else np.empty(0, dtype=column.type.value_type.to_pandas_dtype())
        return self._decoded(name, flat)  # concatenate copied: writable

    def batches(
        self, batch_size: int | None = None, *, trim: bool = True
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """`(sample ids, inputs)` batches of `batch_size` (the build's by default) in the stored order."""
        size = batch_size or self.batch_size
        ids = self.ids
        for start in range(0, len(ids), size):
            stop = min(start + size, len(ids))
            inputs = {name: self._rows(name, start, stop) for name in self.shapes}
            yield ids[start:stop], _trim_padding(inputs) if trim else inputs

    def __iter__(self) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        return self.batches()

    def length_batches(
        self, batch_size: int | None = None, *, rows: np.ndarray | None = None, names: Sequence[str] | None = None
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """`(row positions, inputs)` batches of `batch_size` for a forward pass: texts grouped by length, longest
        first (as sentence-transformers batches them: a batch pads only to its own longest, so a random order
        pads ~2x the real tokens), images in the stored order. Positions index the stored order (`ids`); `rows`
        (positions, default all) restricts the pass to those samples, `names` the inputs read (default all)."""
        size = batch_size or self.batch_size
        n = len(self)
        names = list(self.shapes) if names is None else [k for k in names if k in self.shapes]
        text = "attention_mask" in self.shapes
        if rows is None and not text:  # every image, in contiguous slices
            for start in range(0, n, size):
                stop = min(start + size, n)
                yield np.arange(start, stop), {name: self._rows(name, start, stop) for name in names}
            return
        if text:
            lengths = self._rows("attention_mask", 0, n).sum(1).numpy()
            order = np.argsort(-lengths, kind="stable")
            if rows is not None:
                keep = np.zeros(n, dtype=bool)
                keep[np.asarray(rows, dtype=np.int64)] = True
                order = order[keep[order]]
        else:  # a subset of images, in the stored order
            order = np.sort(np.asarray(rows, dtype=np.int64))
        table = self._open_table()
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            inputs = {}
            for name in names:
                taken = table.column(name).take(pa.array(chunk)).combine_chunks().flatten().to_numpy()
                inputs[name] = self._decoded(name, np.array(taken))
            yield chunk, _trim_padding(inputs) if text else inputs

    def as_tensors(self) -> dict[str, torch.Tensor]:
        """Every sample's inputs at once, in the order of `ids` (texts padded to the set's longest)."""
        return {name: self._rows(name, 0, len(self)) for name in self.shapes}
