"""Measuring a model's `LatencyTable` on the run's device (cached), and a compressed model end to end.

    measure_latency_table(loaded, kinds=..., batch_size=1, seq_len=128, cache_dir=...)  ->  (LatencyTable, measured)

Each component is timed in isolation on a batch at the model's input size (`example_inputs`, the cost table's
inputs, repeated to the batch; text: `seq_len` tokens): the embeddings with the block mask they build, one block of
each shape, each translator kind's module at the model's width (`empty_module(d)`: the same shape as a fitted one),
and the tail. Warm-up, then the median of repeats (`measure_latency`, CUDA synchronised; the parts interleaved round
by round, a fast part in a burst of back-to-back calls), with the thread count the process uses. The table is stored under `<cache>/latency/<key>`, keyed by everything it depends on
(`LatencySpec`), so a second run on the same machine measures nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from toast.objectives import LatencyTable, measure_latency
from toast.spaces import Plan, PlanSpace, Span, translator_class

from .._artifacts import read_artifact, read_or_discard, spec_key, write_artifact
from .._faults import fault_point
from ..models import CompressedModel, LoadedModel, example_inputs

__all__ = [
    "LatencySpec",
    "cheapest_latency_plan",
    "device_name",
    "interleaved_medians",
    "latency_inputs",
    "latency_spec",
    "measure_end_to_end",
    "measure_latency_table",
]

FORMAT_VERSION = 1
PREFILL, DECODE = "prefill", "decode"  # `--latency-mode`: a forward over whole sequences, or one decoding step
TABLE_FILE = "latency.json"
PART_WARMUP, PART_REPEATS = 3, 15  # each component of the table
END_TO_END_WARMUP, END_TO_END_REPEATS = 2, 10  # a whole compressed model (front plans, chosen/)
BURST_MS, MAX_BURST = 2.0, 200  # a part faster than this runs back to back in a timed burst (at most this many calls)


def device_name(device: torch.device | str) -> str:
    """The hardware behind `device`: `cuda: <GPU name>`, or `cpu: <model name>` (from /proc/cpuinfo where it exists)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return device.type
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"cpu: {name or platform.processor() or platform.machine() or 'unknown'}"


def _dtype_name(loaded: LoadedModel) -> str:
    return str(next(loaded.model.parameters()).dtype).removeprefix("torch.")


@dataclass(frozen=True)
class LatencySpec:
    """Everything a latency table depends on; its hash is the cache key."""

    model_id: str
    revision: str
    config: str  # the architecture (config JSON): what the timings depend on
    device: str
    torch_version: str
    dtype: str
    batch_size: int
    seq_len: int | None
    threads: int
    kinds: tuple[str, ...]
    inputs: str  # the timed batch's shapes
    mode: str = PREFILL  # causal LMs: a forward over the inputs, or one decoding step after them (`DECODE`)
    warmup: int = PART_WARMUP
    repeats: int = PART_REPEATS
    version: int = FORMAT_VERSION

    @property
    def key(self) -> str:
        return spec_key(self)


def latency_inputs(loaded: LoadedModel, *, batch_size: int = 1, seq_len: int = 128) -> dict[str, torch.Tensor]:
    """A batch of `batch_size` inputs at the model's input size: the cost table's example input repeated (images: the
    processor's crop), or `seq_len` tokens per text (at most the model's position embeddings)."""
    return example_inputs(loaded, batch=batch_size, seq_len=seq_len)


def _describe(inputs: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())


def latency_spec(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], *, kinds: Iterable[str], seq_len: int | None
) -> LatencySpec:
    """The cache key of `loaded`'s latency table on its device, with `inputs` and this process's thread count."""
    config = json.loads(loaded.config.to_json_string(use_diff=False))
    for name in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        config.pop(name, None)
    return LatencySpec(
        model_id=loaded.model_id,
        revision=loaded.revision,
        config=json.dumps(config, sort_keys=True, default=str),
        device=device_name(loaded.device),
        torch_version=torch.__version__,
        dtype=_dtype_name(loaded),
        batch_size=int(next(iter(inputs.values())).shape[0]),
        seq_len=seq_len if loaded.family.sequence_inputs else None,
        threads=torch.get_num_threads(),
        kinds=tuple(dict.fromkeys(kinds)),
        inputs=_describe(inputs),
    )


def interleaved_medians(calls: dict, *, warmup: int, repeats: int, device, burst_ms: float = BURST_MS) -> dict:
    """Median milliseconds per call of each callable of `calls`, timed in `repeats` rounds that time each in turn
    (after `warmup` rounds), so that a change of load on a shared machine shifts every part alike.

    In a round a callable runs as a burst of back-to-back calls lasting about `burst_ms` (one call when it is
    slower), timed as one and divided: a sub-millisecond part timed alone between other work runs slower (colder
    caches) than it does inside the model, where it follows the previous part at once."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    bursts = {}
    for name, fn in calls.items():
        once = measure_latency(fn, warmup=0, repeats=1, device=device).median_ms
        bursts[name] = max(1, min(MAX_BURST, math.ceil(burst_ms / max(once, 1e-6))))
    times: dict = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            k = bursts[name]
            ms = measure_latency(lambda fn=fn, k=k: [fn() for _ in range(k)], warmup=0, repeats=1, device=device)
            times[name].append(ms.median_ms / k)
    return {name: float(np.median(t)) for name, t in times.items()}


@torch.inference_mode()
def _time_parts(loaded: LoadedModel, inputs: dict[str, torch.Tensor], spec: LatencySpec) -> LatencyTable:
    """Each component of `loaded` timed in isolation on `inputs` (interleaved rounds, median per part)."""
    model = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    family, config = loaded.family, loaded.config

    def embed():
        x, mask = family.embed(model.embeddings, dict(inputs))
        return x, family.block_kwargs(config, x, mask)

    h, mask, _ = model.run(inputs)
    block_kwargs = family.block_kwargs(config, h, mask)
    calls = {"embed": embed, "tail": lambda: model.tail(h, mask)}
    shapes: list[tuple] = []
    for block in loaded.parts.blocks:
        shape = _block_shape(block)
        if shape not in shapes:  # identical blocks take the same time: one of each shape is timed
            shapes.append(shape)
            calls[("block", len(shapes) - 1)] = lambda block=block: family.run_block(block, h, block_kwargs)
    ref = next(loaded.model.parameters())
    for kind in spec.kinds:  # one span's module of each kind, of the shape a fitted one has
        module = translator_class(kind).empty_module(loaded.hidden_size).to(device=ref.device, dtype=ref.dtype).eval()
        calls[("kind", kind)] = lambda module=module: module(h)
    return _table(loaded, calls, shapes, spec)


def _block_shape(block: torch.nn.Module) -> tuple:
    return tuple((n, tuple(p.shape)) for n, p in block.named_parameters())


def _table(loaded: LoadedModel, calls: dict, shapes: list[tuple], spec: LatencySpec) -> LatencyTable:
    """The medians of `calls` (interleaved rounds) as a table: each block the time of its shape's call."""
    ms = interleaved_medians(calls, warmup=spec.warmup, repeats=spec.repeats, device=loaded.device)
    blocks = [ms[("block", shapes.index(_block_shape(block)))] for block in loaded.parts.blocks]
    return LatencyTable(
        embed_ms=ms["embed"],
        blocks_ms=tuple(blocks),
        tail_ms=ms["tail"],
        translators_ms={kind: ms[("kind", kind)] for kind in spec.kinds},
        device=spec.device,
        dtype=spec.dtype,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        threads=spec.threads,
        torch_version=spec.torch_version,
        input_description=spec.inputs,
        mode=spec.mode,
    )


@torch.inference_mode()
def _time_decode_parts(loaded: LoadedModel, inputs: dict[str, torch.Tensor], spec: LatencySpec) -> LatencyTable:
    """Each component of a causal LM timed on one decoding step: one new token per sequence after the `inputs`' tokens,
    whose keys and values the stock model caches first (a `DynamicCache`). A block's call appends its entry and the
    entry is put back after it, so every call sees the same cache length; the tail is the head on the new token."""
    from transformers import DynamicCache

    model = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    family, config = loaded.family, loaded.config
    prompt = inputs["input_ids"].to(loaded.device)
    cache = DynamicCache(config=config)
    model.decode_step(prompt, cache)  # the prompt's keys and values: what a decoding step attends to
    past = int(prompt.shape[1])
    step = prompt[:, -1:]
    layers = {family.layer_type(b): int(family.attention(b).layer_idx) for b in reversed(loaded.parts.blocks)}
    h = family.embed_step(model.embeddings, step, past)
    kwargs = family.decode_kwargs(config, h, cache, past, layers)

    def restoring(fn, index: int):
        layer = cache.layers[index]

        def call():
            saved = dict(vars(layer))
            try:
                return fn()
            finally:
                vars(layer).update(saved)

        return call

    def embed():
        x = family.embed_step(model.embeddings, step, past)
        return x, family.decode_kwargs(config, x, cache, past, layers)

    calls = {"embed": embed, "tail": lambda: model.tail(h, None)}
    shapes: list[tuple] = []
    for block in loaded.parts.blocks:
        if _block_shape(block) not in shapes:
            shapes.append(_block_shape(block))
            run = lambda block=block: family.run_block(block, h, kwargs)  # noqa: E731
            calls[("block", len(shapes) - 1)] = restoring(run, int(family.attention(block).layer_idx))
    ref = next(loaded.model.parameters())
    for kind in spec.kinds:
        module = translator_class(kind).empty_module(loaded.hidden_size).to(device=ref.device, dtype=ref.dtype).eval()
        calls[("kind", kind)] = lambda module=module: module(h)
    return _table(loaded, calls, shapes, spec)


def _read_table(directory: Path, key: str) -> LatencyTable:
    """The verified latency table cached at `directory`."""
    read_artifact(directory, key, f"latency table {directory}")
    return LatencyTable.from_json(json.loads((directory / TABLE_FILE).read_text()))


def measure_latency_table(
    loaded: LoadedModel,
    *,
    kinds: Iterable[str],
    batch_size: int = 1,
    seq_len: int = 128,
    cache_dir: str | Path | None = None,
    warmup: int = PART_WARMUP,
    repeats: int = PART_REPEATS,
    mode: str = PREFILL,
) -> tuple[LatencyTable, bool]:
    """`loaded`'s latency table on its device and dtype, and whether it was measured now (False: read from the cache).
    `mode` decode (causal LMs): each part timed on one new token per sequence after `seq_len` cached ones.

    `cache_dir` None: measured and not stored. A corrupt cache entry is measured again (with a warning)."""
    inputs = latency_inputs(loaded, batch_size=batch_size, seq_len=seq_len)
    spec = dataclasses.replace(
        latency_spec(loaded, inputs, kinds=kinds, seq_len=seq_len), warmup=warmup, repeats=repeats, mode=mode
    )
    directory = Path(cache_dir) / "latency" / spec.key if cache_dir is not None else None
    found = (
        read_or_discard(directory, lambda d: _read_table(d, spec.key), redo="measuring the latency table again")
        if directory is not None
        else None
    )
    if found is not None:
        return found, False
    table = (_time_decode_parts if mode == DECODE else _time_parts)(loaded, inputs, spec)
    fault_point("latency")
    if directory is not None:
        with write_artifact(directory, spec.key, f"latency table {directory}") as writer:
            (writer.directory / TABLE_FILE).write_text(json.dumps(table.to_json(), indent=2))
            writer.manifest["spec"] = asdict(spec)
    return table, True


@torch.inference_mode()
def measure_end_to_end(
    model: CompressedModel,
    inputs: dict[str, torch.Tensor],
    *,
    warmup: int = END_TO_END_WARMUP,
    repeats: int = END_TO_END_REPEATS,
    mode: str = PREFILL,
) -> float:
    """Median milliseconds of `model(**inputs)` (the whole compressed model, head included) on its device; `mode`
    decode: of one decoding step (`decode_step`) after the inputs' tokens, cached by the model itself first, the cache
    put back after each step."""
    device = next(model.parameters()).device
    if mode != DECODE:
        return measure_latency(lambda: model(**inputs), warmup=warmup, repeats=repeats, device=device).median_ms
    from transformers import DynamicCache

    prompt = inputs["input_ids"].to(device)
    cache = DynamicCache(config=model.config)
    model.decode_step(prompt, cache)
    saved = [dict(vars(layer)) for layer in cache.layers]
    step = prompt[:, -1:]

    def decode():
        try:
            return model.decode_step(step, cache)
        finally:
            for layer, state in zip(cache.layers, saved):
                vars(layer).update(state)

    return measure_latency(decode, warmup=warmup, repeats=repeats, device=device).median_ms


def cheapest_latency_plan(table: LatencyTable, space: PlanSpace) -> tuple[Plan, float]:
    """The plan of `space` with the lowest estimate: one span over the slowest `removal_limit` consecutive blocks,
    of the fastest kind the space allows there (every block of a family has one shape, so this is the minimum)."""
    r, L = space.removal_limit, space.num_blocks
    best: tuple[float, Plan] | None = None
    original = Plan((), L)
    if r == 0:
        return original, table.estimate(original)
    for start in range(-1, L - r):
        for kind in space.kinds:
            plan = Plan((Span(start, start + r, kind),), L)
            if not space.contains(plan):
                continue
            ms = table.estimate(plan)
            if best is None or ms < best[0]:
                best = (ms, plan)
    if best is None:  # no single span fits (constraints of a kind): the original is always in the space
        return original, table.estimate(original)
    return best[1], best[0]
