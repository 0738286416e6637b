"""The activation cache: every hidden state of the calibration samples in Arrow IPC shards, plus statistics.

One directory per key (a hash of everything that determines the content), written and read with
`write_artifact` / `read_artifact`: built in a temporary directory and renamed into place (a partial
write is never read as complete), verified on read against the sizes and sha256 digests in its
manifest; a corrupt entry is reported, removed and recaptured, never used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from toast.spaces import ActivationStats, StatsAccumulator

from .._artifacts import MANIFEST, default_cache_dir, read_artifact, read_or_discard, spec_key, write_artifact
from .._faults import fault_point
from ..errors import CacheError, ModelOutputError

STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_ARROW_TYPES = {"float16": pa.float16(), "bfloat16": pa.uint16(), "float32": pa.float32()}
SHARD_BYTES = 512 << 20
FORMAT_VERSION = 2  # 2: the statistics hold the MLP branch outputs of pre-norm families (`folded`)


@dataclass(frozen=True)
class CaptureSpec:
    """Everything that determines a capture's content; its hash is the cache key."""

    model_id: str
    revision: str
    dataset: str  # dataset fingerprint
    split: str
    sample_ids: tuple[int, ...]
    preprocessing: str  # the processor's configuration, as JSON
    dtype: str = "float16"
    branches: bool = True  # MLP-branch statistics gathered too (where the family has an MLP branch)
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.dtype not in STORAGE_DTYPES:
            raise CacheError(f"unknown activation dtype {self.dtype!r}: use one of {', '.join(STORAGE_DTYPES)}")

    @property
    def key(self) -> str:
        return spec_key(self)


class ShardWriter:
    """Writes hidden states as Arrow IPC files, one row per token: `sample`, `token`, `h_0 … h_L`."""

    def __init__(
        self, directory: Path, *, num_states: int, dim: int, dtype: str, key: str, shard_bytes: int = SHARD_BYTES
    ) -> None:
        self.directory = directory
        self.num_states = num_states
        self.dim = dim
        self.dtype = dtype
        self.shard_bytes = shard_bytes
        value = pa.list_(_ARROW_TYPES[dtype], dim)
        fields = [pa.field("sample", pa.int64()), pa.field("token", pa.int32())]
        fields += [pa.field(f"h_{k}", value) for k in range(num_states)]
        meta = {"toast.key": key, "toast.dtype": dtype, "toast.dim": str(dim), "toast.num_states": str(num_states)}
        self.schema = pa.schema(fields, metadata=meta)
        self.files: list[str] = []
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._sink = None
        self._written = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def _open(self) -> None:
        name = f"shard-{len(self.files):05d}.arrow"
        self._sink = pa.OSFile(str(self.directory / name), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self.files.append(name)
        self._written = 0

    def write(self, states: list[torch.Tensor], mask: torch.Tensor | None, sample_ids: list[int]) -> None:
        """Append one batch: `states[k]` of shape `(B, N, d)`, `mask` `(B, N)` marking real tokens."""
        B, N, _ = states[0].shape
        keep = torch.ones(B, N, dtype=torch.bool) if mask is None else mask.bool().cpu()
        rows, cols = keep.nonzero(as_tuple=True)
        ids = torch.as_tensor(sample_ids, dtype=torch.int64)[rows]
        arrays = [pa.array(ids.numpy()), pa.array(cols.to(torch.int32).numpy())]
        torch_dtype = STORAGE_DTYPES[self.dtype]
        for h in states:
            t = h.detach().to(torch_dtype)[keep.to(h.device)].cpu().contiguous()
            flat = (t.view(torch.int16).numpy().view(np.uint16) if self.dtype == "bfloat16" else t.numpy()).reshape(-1)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), self.dim))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        if self._writer is None or self._written >= self.shard_bytes:
            self._close()
            self._open()
        self._writer.write_batch(batch)
        self._written += batch.nbytes


def decode_state(column: pa.FixedSizeListArray, dim: int, dtype: str) -> np.ndarray:
    """One stored state column as a `(tokens, d)` array: a zero-copy view of the (memory-mapped) shard, except
    bfloat16, which is widened to float32."""
    values = column.values.to_numpy(zero_copy_only=True).reshape(-1, dim)
    # bfloat16 is stored as its 16 bits: they are the high half of a float32
    return (values.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else values


@dataclass
class CapturedActivations:
    """A verified cache entry: statistics (memory-mapped) and the shards, read back memory-mapped."""

    directory: Path
    manifest: dict
    stats: ActivationStats = field(repr=False)

    @property
    def files(self) -> list[Path]:
        return [self.directory / f for f in self.manifest["shards"]]

    def iter_state(self, k: int) -> Iterator[np.ndarray]:
        """`h_k` of every stored token, one memory-mapped `(tokens, d)` array per record batch."""
        dim, dtype = self.manifest["dim"], self.manifest["dtype"]
        for path in self.files:
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield decode_state(reader.get_batch(i).column(f"h_{k}"), dim, dtype)

    def state(self, k: int, dtype: np.dtype = np.float32) -> np.ndarray:
        """All tokens of `h_k` stacked, `(tokens, d)` (a copy in `dtype`)."""
        return np.concatenate([np.asarray(a, dtype=dtype) for a in self.iter_state(k)])

    def sample_index(self) -> np.ndarray:
        """The calibration sample id of every stored token."""
        out = []
        for path in self.files:
            with pa.memory_map(str(path)) as source:
                out.append(pa.ipc.open_file(source).read_all().column("sample").to_numpy())
        return np.concatenate(out)


class _Branches:
    """The MLP branch output of each block in one forward pass, recorded by forward hooks."""

    def __init__(self, num_blocks: int, enabled: bool) -> None:
        self.num_blocks, self.enabled = num_blocks, enabled
        self.outputs: dict[int, torch.Tensor] = {}

    def clear(self) -> None:
        self.outputs.clear()

    def ordered(self) -> list[torch.Tensor] | None:
        if not self.enabled:
            return None
        if len(self.outputs) != self.num_blocks:
            raise ModelOutputError(f"the MLP branch of {self.num_blocks - len(self.outputs)} blocks did not run")
        return [self.outputs[b] for b in range(self.num_blocks)]


@contextmanager
def _branch_outputs(model, wanted: bool = True) -> Iterator[_Branches]:
    """Hook the MLP branch of every block of `model` (an uncompressed `CompressedModel`) where its family has one
    and the capture asks for them (`wanted`)."""
    blocks = [model.blocks[str(b)] for b in range(model.plan.num_blocks)]
    modules = [model.family.mlp_branch(block) for block in blocks]
    out = _Branches(len(blocks), enabled=wanted and all(m is not None for m in modules))
    handles = []
    if out.enabled:
        for b, module in enumerate(modules):

            def hook(_module, _args, output, b=b):
                out.outputs[b] = output[0] if isinstance(output, tuple) else output

            handles.append(module.register_forward_hook(hook))
    try:
        yield out
    finally:
        for handle in handles:
            handle.remove()


class ActivationCache:
    """Cache entries under `root`, one directory per `CaptureSpec.key`."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, spec: CaptureSpec) -> Path:
        return self.root / "activations" / spec.key

    def exists(self, spec: CaptureSpec) -> bool:
        return (self.path(spec) / MANIFEST).is_file()

    def load(self, spec: CaptureSpec) -> CapturedActivations:
        """Read and verify an entry; raise `CacheError` naming what is wrong."""
        directory = self.path(spec)
        manifest = read_artifact(directory, spec.key, f"cache entry {directory}")
        return CapturedActivations(directory, manifest, ActivationStats.load(directory))

    def get_or_capture(
        self,
        spec: CaptureSpec,
        model,
        batches: Callable[[], Iterable[tuple[list[int], dict[str, torch.Tensor]]]],
        *,
        progress: bool = True,
    ) -> CapturedActivations:
        """The verified entry for `spec`; captured first (one forward pass) when missing or corrupt."""
        found = read_or_discard(self.path(spec), lambda _: self.load(spec), redo="recapturing")
        return found if found is not None else self.capture(spec, model, batches(), progress=progress)

    @torch.inference_mode()
    def capture(
        self,
        spec: CaptureSpec,
        model,
        batches: Iterable[tuple[list[int], dict[str, torch.Tensor]]],
        *,
        progress: bool = True,
    ) -> CapturedActivations:
        """One pass of the (uncompressed) model: shards and statistics, written atomically."""
        from tqdm.auto import tqdm

        final = self.path(spec)
        with write_artifact(final, spec.key, f"cache entry {final}") as out:
            num_states = model.plan.num_blocks + 1
            dim = int(model.config.hidden_size)
            cls_index = model.family.layout(model.config).cls_index
            acc = StatsAccumulator(num_states, dim)
            start = time.perf_counter()
            bar = tqdm(total=len(spec.sample_ids), desc="capture", unit="sample", disable=not progress)
            with (
                ShardWriter(out.directory, num_states=num_states, dim=dim, dtype=spec.dtype, key=spec.key) as writer,
                _branch_outputs(model, spec.branches) as branches,
            ):
                for ids, inputs in batches:
                    branches.clear()
                    states, mask = model.hidden_states(inputs)
                    if not all(bool(torch.isfinite(h).all()) for h in states):
                        raise ModelOutputError(
                            f"the outputs of model {spec.model_id!r} are not finite (NaN or infinite) on the calibration "
                            "samples: its weights may be corrupt; re-download the model or save it again"
                        )
                    acc.update(states, mask, cls_index, branches=branches.ordered())
                    writer.write(states, mask, list(ids))
                    fault_point("capture")
                    bar.update(len(ids))
            bar.close()
            stats = acc.result()
            stats.save(out.directory)
            out.manifest.update(
                {
                    "spec": {**asdict(spec), "sample_ids": len(spec.sample_ids)},
                    "shards": writer.files,
                    "dim": dim,
                    "num_states": num_states,
                    "dtype": spec.dtype,
                    "num_tokens": stats.n,
                    "num_samples": stats.num_samples,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
        return self.load(spec)
