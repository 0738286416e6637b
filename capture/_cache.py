"""The activation cache: the hidden states the search reads, in Arrow IPC shards, plus statistics.

One directory per key (a hash of everything that determines the content), written and read with
`write_artifact` / `read_artifact`: built in a temporary directory and renamed into place (a partial
write is never read as complete), verified on read against the sizes and sha256 digests in its
manifest; a corrupt entry is reported, removed and recaptured, never used.

What a run asks for may grow without a new key: the statistics are held per pair of states and the shards hold
the states asked for (manifest `states`); a run needing pairs or states the entry lacks captures only those, in an
extension pass written as its own verified artifact inside the entry (`ext-<hash>/`: `pairs/<i>-<j>.npy`, and
shards of every state held so far plus the new ones where states were missing). Pairs that do not fit the memory
given (`memory_bytes`) at once are captured in several passes (one extension each), trading time for memory
(`plan_capture`); the MLP branch blocks of `folded` (`branch/<s>-<t>.npy`) are planned and extended the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from toast.spaces import (
    BRANCH_DIR,
    ActivationStats,
    BlockFiles,
    StatsAccumulator,
    all_branch_pairs,
    all_pairs,
    load_pairs,
    pair_bytes,
    plan_passes,
    save_pairs,
)

from .._artifacts import MANIFEST, default_cache_dir, read_artifact, read_or_discard, spec_key, write_artifact
from .._faults import fault_point
from ..errors import CacheError, MissingStatsError, ModelOutputError

STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_ARROW_TYPES = {"float16": pa.float16(), "bfloat16": pa.uint16(), "float32": pa.float32()}
SHARD_BYTES = 512 << 20
EXTENSION = "ext-"  # an extension artifact's folder inside an entry: `ext-<hash>`
# 2: the statistics hold the MLP branch outputs of pre-norm families (`folded`); 3: those per branch block;
# 4: the mean token cosine of every pair of states (the peers' signals, `--sampler shortgpt` / `replaceme`)
FORMAT_VERSION = 4


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
    """Writes hidden states as Arrow IPC files, one row per token: `sample`, `token`, and `h_k` for each of `states`
    (default: all of `h_0 … h_L`)."""

    def __init__(
        self,
        directory: Path,
        *,
        num_states: int,
        dim: int,
        dtype: str,
        key: str,
        shard_bytes: int = SHARD_BYTES,
        states: Sequence[int] | None = None,
    ) -> None:
        self.directory = directory
        self.num_states = num_states
        self.states = tuple(range(num_states)) if states is None else tuple(sorted(set(states)))
        self.dim = dim
        self.dtype = dtype
        self.shard_bytes = shard_bytes
        value = pa.list_(_ARROW_TYPES[dtype], dim)
        fields = [pa.field("sample", pa.int64()), pa.field("token", pa.int32())]
        fields += [pa.field(f"h_{k}", value) for k in self.states]
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
        for k in self.states:
            h = states[k]
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
    """A verified cache entry: statistics (memory-mapped) and the shards, read back memory-mapped.

    `shard_dir` / `shard_names`: the shard set read (the entry's own, or an extension's holding more states);
    `states`: the states those shards hold."""

    directory: Path
    manifest: dict
    stats: ActivationStats = field(repr=False)
    shard_dir: Path | None = None
    shard_names: tuple[str, ...] | None = None
    states: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.shard_dir is None:
            self.shard_dir = self.directory
            self.shard_names = tuple(self.manifest["shards"])
            self.states = _held_states(self.manifest)

    @property
    def files(self) -> list[Path]:
        return [self.shard_dir / f for f in self.shard_names]

    def iter_state(self, k: int) -> Iterator[np.ndarray]:
        """`h_k` of every stored token, one memory-mapped `(tokens, d)` array per record batch."""
        if k not in self.states:
            raise MissingStatsError(
                f"the activation shards hold no h_{k} (they hold {_describe(self.states)}): only the states a trained "
                "kind or a refit pass reads are written; capture with the states asked for (`states`) to add it"
            )
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


def _held_states(manifest: dict) -> tuple[int, ...]:
    """The states a manifest's shards hold (entries written before `states` was recorded hold every state)."""
    states = manifest.get("states")
    return tuple(range(int(manifest["num_states"]))) if states is None else tuple(states)


def _describe(states: Sequence[int]) -> str:
    return ", ".join(f"h_{k}" for k in states) if states else "no state"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


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
        """Read and verify an entry and its extensions; raise `CacheError` naming what is wrong with the entry (a
        corrupt extension is said in one line, removed, and its pairs or states captured again when next asked)."""
        directory = self.path(spec)
        manifest = read_artifact(directory, spec.key, f"cache entry {directory}")
        pairs = branch = BlockFiles()
        shards = None
        for ext in sorted(directory.glob(f"{EXTENSION}*")):
            found = read_or_discard(
                ext,
                lambda e: read_artifact(e, f"{spec.key}-{e.name}", f"cache extension {e}"),
                redo="capturing its statistics again when asked",
            )
            if found is None:
                continue
            pairs |= load_pairs(ext)
            branch |= load_pairs(ext, folder=BRANCH_DIR)
            if found.get("states") is not None and (shards is None or len(found["states"]) > len(shards[2])):
                shards = (ext, tuple(found["shards"]), tuple(found["states"]))
        stats = ActivationStats.load(directory, pairs=pairs, branch_blocks=branch)
        if shards is None or len(shards[2]) <= len(_held_states(manifest)):
            return CapturedActivations(directory, manifest, stats)
        return CapturedActivations(directory, manifest, stats, *shards)

    def get_or_capture(
        self,
        spec: CaptureSpec,
        model,
        batches: Callable[[], Iterable[tuple[list[int], dict[str, torch.Tensor]]]],
        *,
        progress: bool = True,
        pairs: Iterable[tuple[int, int]] | None = None,
        branch_pairs: Iterable[tuple[int, int]] | None = None,
        states: Iterable[int] | None = None,
        memory_bytes: int | None = None,
        observers: Sequence = (),
    ) -> CapturedActivations:
        """The verified entry for `spec` holding the statistics of `pairs` (None: every pair), the MLP branch blocks
        `branch_pairs` (None: every one; where `spec.branches` and the family has MLP branches) and the shards of
        `states` (None: every state); what is missing is captured first: the whole entry when it is missing or
        corrupt, else only the blocks and states it lacks (extension passes). `memory_bytes` bounds the accumulators
        held at once (None: unbounded; `plan_capture`): when every pair's Gram fits, every pair is captured as one
        all-pairs Gram, whatever `pairs` asks. `observers`: objects with `update(states, mask)`, fed every batch of
        the entry's first pass (e.g. `toast.objectives.SampledSimilarity`); not fed on a cache hit."""
        found = read_or_discard(self.path(spec), lambda _: self.load(spec), redo="recapturing")
        if found is None:
            return self.capture(
                spec,
                model,
                batches(),
                progress=progress,
                pairs=pairs,
                branch_pairs=branch_pairs,
                states=states,
                memory_bytes=memory_bytes,
                observers=observers,
                more=batches,
            )
        num_states = int(found.manifest["num_states"])
        wanted = set(all_pairs(num_states) if pairs is None else ((min(i, j), max(i, j)) for i, j in pairs))
        missing_pairs = sorted(wanted - found.stats.held_pairs)
        missing_branch = []
        if found.stats.has_branches:
            branch = set(all_branch_pairs(num_states - 1) if branch_pairs is None else branch_pairs)
            missing_branch = sorted(branch - found.stats.held_branch_pairs)
        wanted_states = set(range(num_states) if states is None else states)
        missing_states = sorted(wanted_states - set(found.states))
        if not missing_pairs and not missing_branch and not missing_states:
            return found
        shard_states = sorted(set(found.states) | wanted_states) if missing_states else None
        plan = plan_capture(num_states, found.stats.dim, missing_pairs, missing_branch, memory_bytes, gram=False)
        for k, (group, branch_group) in enumerate(plan.passes):
            shards = shard_states if k == 0 else None
            self._pass(spec, model, batches(), found.stats, group, branch_group, shards, progress=progress)
        return self.load(spec)

    @torch.inference_mode()
    def capture(
        self,
        spec: CaptureSpec,
        model,
        batches: Iterable[tuple[list[int], dict[str, torch.Tensor]]],
        *,
        progress: bool = True,
        pairs: Iterable[tuple[int, int]] | None = None,
        branch_pairs: Iterable[tuple[int, int]] | None = None,
        states: Iterable[int] | None = None,
        memory_bytes: int | None = None,
        observers: Sequence = (),
        more: Callable[[], Iterable[tuple[list[int], dict[str, torch.Tensor]]]] | None = None,
    ) -> CapturedActivations:
        """One pass of the (uncompressed) model: shards and statistics, written atomically; then, where the blocks
        asked for do not fit `memory_bytes` in one pass, one extension pass per further group (`more` gives the
        batches again; required then)."""
        from tqdm.auto import tqdm

        final = self.path(spec)
        num_states = model.plan.num_blocks + 1
        dim = int(model.config.hidden_size)
        with_branches = captures_branches(model, spec.branches)
        if with_branches and branch_pairs is None:
            branch_pairs = all_branch_pairs(num_states - 1)
        plan = plan_capture(
            num_states,
            dim,
            None if pairs is None else list(pairs),
            branch_pairs if with_branches else None,
            memory_bytes,
        )
        if len(plan.passes) > 1 and more is None:
            raise ValueError("the pairs need several passes over the calibration data: give `more` (the batches again)")
        with write_artifact(final, spec.key, f"cache entry {final}") as out:
            cls_index = model.family.layout(model.config).cls_index
            first, first_branch = plan.passes[0]
            acc = StatsAccumulator(num_states, dim, pairs=None if plan.gram else first, branch_pairs=first_branch)
            start = time.perf_counter()
            bar = tqdm(total=len(spec.sample_ids), desc="capture", unit="sample", disable=not progress)
            with (
                ShardWriter(
                    out.directory, num_states=num_states, dim=dim, dtype=spec.dtype, key=spec.key, states=states
                ) as writer,
                _branch_outputs(model, with_branches) as branches,
            ):
                for ids, inputs in batches:
                    branches.clear()
                    states_, mask = model.hidden_states(inputs)
                    _check_finite(states_, spec)
                    acc.update(states_, mask, cls_index, branches=branches.ordered())
                    writer.write(states_, mask, list(ids))
                    for observer in observers:
                        observer.update(states_, mask)
                    fault_point("capture")
                    bar.update(len(ids))
            bar.close()
            stats = acc.result()
            stats.save(out.directory)
            out.manifest.update(
                {
                    "spec": {**asdict(spec), "sample_ids": len(spec.sample_ids)},
                    "shards": writer.files,
                    "states": list(writer.states),
                    "dim": dim,
                    "num_states": num_states,
                    "dtype": spec.dtype,
                    "num_tokens": stats.n,
                    "num_samples": stats.num_samples,
                    "pair_passes": len(plan.passes),
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
        del acc, stats  # the first pass's blocks are on disk: a later pass holds only its own
        if len(plan.passes) > 1:
            base = self.load(spec).stats  # its shifts and token count, its blocks memory-mapped
            for group, branch_group in plan.passes[1:]:
                self._pass(spec, model, more(), base, group, branch_group, None, progress=progress)
        return self.load(spec)

    @torch.inference_mode()
    def _pass(
        self, spec, model, batches, base: ActivationStats, pairs, branch_pairs, shard_states, *, progress: bool
    ) -> None:
        """One extension pass: the blocks of `pairs` and the MLP branch blocks `branch_pairs` (shifted by the entry's
        statistics' shifts, so they add to its own) and, with `shard_states`, a new shard set of those states;
        written as an artifact `ext-<hash>` inside the entry. The pass must see the entry's tokens (`base.n`), else
        it is refused (the data changed)."""
        from tqdm.auto import tqdm

        num_states = model.plan.num_blocks + 1
        dim = int(model.config.hidden_size)
        pairs, branch_pairs = sorted(pairs), sorted(branch_pairs)
        key = {"pairs": pairs, "states": shard_states} | ({"branch": branch_pairs} if branch_pairs else {})
        name = EXTENSION + _digest(key)
        final = self.path(spec) / name
        with (
            write_artifact(final, f"{spec.key}-{name}", f"cache extension {final}") as out,
            _branch_outputs(model, bool(branch_pairs)) as branches,
        ):
            acc = None
            if pairs or branch_pairs:
                acc = StatsAccumulator(
                    num_states,
                    dim,
                    pairs=pairs,
                    shift=base.shift,
                    branch_pairs=branch_pairs,
                    branch_shift=base.branch_shift,
                )
            tokens = 0
            writer = (
                ShardWriter(
                    out.directory, num_states=num_states, dim=dim, dtype=spec.dtype, key=spec.key, states=shard_states
                )
                if shard_states is not None
                else None
            )
            start = time.perf_counter()
            bar = tqdm(total=len(spec.sample_ids), desc="capture (more)", unit="sample", disable=not progress)
            try:
                for ids, inputs in batches:
                    branches.clear()
                    states_, mask = model.hidden_states(inputs)
                    _check_finite(states_, spec)
                    tokens += int(mask.bool().sum()) if mask is not None else states_[0].shape[0] * states_[0].shape[1]
                    if acc is not None:
                        acc.update(states_, mask, branches=branches.ordered())
                    if writer is not None:
                        writer.write(states_, mask, list(ids))
                    fault_point("capture")
                    bar.update(len(ids))
            finally:
                if writer is not None:
                    writer._close()
            bar.close()
            if tokens != base.n:
                raise CacheError(
                    f"a later pass over the calibration samples of cache entry {self.path(spec)} saw {tokens} tokens, "
                    f"the entry {base.n}: the data or its preprocessing changed under the same key; remove the entry"
                )
            if acc is not None:
                save_pairs(out.directory, acc.pair_blocks())
                if branch_pairs:
                    save_pairs(out.directory, acc.branch_blocks(), folder=BRANCH_DIR)
            out.manifest.update(
                {
                    "pairs": [list(p) for p in pairs],
                    "branch_pairs": [list(p) for p in branch_pairs],
                    "shards": None if writer is None else writer.files,
                    "states": None if writer is None else list(writer.states),
                    "num_tokens": tokens,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )


@dataclass(frozen=True)
class CapturePlan:
    """How a capture's statistics are accumulated: `gram` True: the first pass holds the all-pairs Gram (everything
    fits the memory given); `passes`: the state pairs and MLP branch blocks each pass over the data accumulates."""

    gram: bool
    passes: tuple[tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]], ...]

    def pass_bytes(self, num_states: int, dim: int) -> int:
        """The most accumulator memory any pass holds."""
        gram = (num_states * dim) ** 2 * 8 if self.gram else 0
        return max(gram + (len(p) + len(b)) * pair_bytes(dim) for p, b in self.passes)


def plan_capture(
    num_states: int,
    dim: int,
    pairs: Iterable[tuple[int, int]] | None,
    branch_pairs: Iterable[tuple[int, int]] | None,
    memory_bytes: int | None,
    *,
    gram: bool = True,
) -> CapturePlan:
    """The passes of a capture holding the statistics of `pairs` (None: every pair) and the MLP branch blocks
    `branch_pairs` (None: none captured). One pass with the all-pairs Gram where every pair is asked for (`pairs`
    None: `analyze`, the exact similarity map) and it fits `memory_bytes` with the branch blocks (or no bound is set)
    and `gram` allows it (a new entry; an extension adds blocks); else the blocks, each pair once (half the Gram's
    memory), grouped into passes of at most `memory_bytes` each (`toast.spaces.plan_passes`), state pairs first."""
    branch = sorted(set(branch_pairs or ()))
    wanted = sorted(set(all_pairs(num_states) if pairs is None else pairs))
    fits = memory_bytes is None or ((num_states * dim) ** 2 * 8 + len(branch) * pair_bytes(dim)) <= memory_bytes
    if gram and pairs is None and fits:
        return CapturePlan(True, (((), tuple(branch)),))
    units = [("h", *p) for p in wanted] + [("m", *p) for p in branch]
    groups = [units] if memory_bytes is None else plan_passes(units, dim, memory_bytes)
    return CapturePlan(
        False,
        tuple((tuple(u[1:] for u in g if u[0] == "h"), tuple(u[1:] for u in g if u[0] == "m")) for g in groups or [[]]),
    )


def captures_branches(model, wanted: bool) -> bool:
    """Whether a capture of `model` (an uncompressed `CompressedModel`) records MLP branch outputs: asked for, and
    every block has an MLP branch (pre-norm families)."""
    blocks = [model.blocks[str(b)] for b in range(model.plan.num_blocks)]
    return wanted and all(model.family.mlp_branch(block) is not None for block in blocks)


def _check_finite(states: list[torch.Tensor], spec: CaptureSpec) -> None:
    if not all(bool(torch.isfinite(h).all()) for h in states):
        raise ModelOutputError(
            f"the outputs of model {spec.model_id!r} are not finite (NaN or infinite) on the calibration "
            "samples: its weights may be corrupt; re-download the model or save it again"
        )


def memory_plan_bytes(stats_memory_gb: float | None, device: str = "cpu", *, loading_bytes: int = 0) -> int:
    """The bytes the statistics' accumulators may hold at once: `stats_memory_gb` (GiB, as `prefix_cache_gb`), else
    a quarter of the host's RAM, and on a GPU (where they live) at most half of the device memory left free once the
    model is loaded (`loading_bytes`: the weights still to load, for an estimate made before loading them)."""
    if stats_memory_gb is not None:
        return int(stats_memory_gb * 1024**3)
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return max(pair_bytes(1), min(host, (free - loading_bytes) // 2))
    return host
