"""Measuring a model's `LatencyTable` in a runtime on a device (cached), and a compressed model end to end.

    measure_latency_table(loaded, kinds=..., batch_size=1, seq_len=128, runtime="eager", cache_dir=...)
        ->  (LatencyTable, measured)

The table is solved from whole models, each run end to end in the runtime (`toast.search.runtimes`: PyTorch eager,
`torch.compile`, ONNX Runtime …) on a batch at the model's input size (`example_inputs`, the cost table's inputs
repeated to the batch; text: `seq_len` tokens): the original, models that keep their first k blocks (one identity
span over the rest) at a few depths k (`depth_knots`: 1, about L/4, L/2 and 3L/4), and for each translator kind
(identity included) a model whose every other block is a one-block span of that kind (`probe_plans`). Their times are
linear in the unknowns (the fixed part with the kept blocks at each depth, linear between them: a runtime's block can
cost more the more are kept; a span of each kind; where a model's layers are of several attention kinds, each kind's
offset, from one more probe per kind: `block_classes`), solved by least squares (`solve_probes`, `depth_parts`); a
few more whole models (`check_plans`), timed with the probes, give the table's `margin`: how much slower than its
estimate a plan ran, at most (`check_margin`). Timing whole models rather than parts alone counts what a runtime does
around and between them (its per-call work, fusions across a block boundary, caches warm from the previous part),
which is what a plan's estimate must add up to; every runtime is timed
the same way: side by side, round by round, so that the machine's changes of speed (on a shared machine, 2× within
seconds) shift every model alike (warm-up, then the fastest of rounds lasting at least `TABLE_SECONDS`, with the
machine's `drift` over them: `Timings`). Translators are their kind's module at the fitted shape with
default-initialised weights (`timing_model`): a latency does not depend on the values. The table is stored under
`<cache>/latency/<key>`, keyed by everything it depends on (`LatencySpec`), so a second run on the same machine
measures nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toast.errors import PlanError
from toast.objectives import LatencyTable, measure_latency
from toast.spaces import Plan, PlanSpace, Span, translator_class

from .._artifacts import read_artifact, read_or_discard, spec_key, write_artifact
from .._faults import fault_point
from ..models import CompressedModel, LoadedModel, example_inputs
from .runtimes import PREFILL, Runtime, device_memory, device_name, dtype_name, get_runtime

__all__ = [
    "LatencySpec",
    "architecture_fingerprint",
    "block_classes",
    "class_blocks",
    "check_plans",
    "cheapest_latency_plan",
    "depth_knots",
    "depth_parts",
    "depth_weights",
    "describe_inputs",
    "device_name",
    "interleaved_times",
    "latency_inputs",
    "latency_spec",
    "measure_end_to_end",
    "measure_latency_table",
    "plan_counts",
    "probe_plans",
    "side_by_side",
    "solve_probes",
    "Timings",
    "unsteady",
    "time_models",
    "timing_model",
    "weight_bytes",
]

#: 7: the kept blocks' cost by their count (`depth_knots`) and each block's class (`block_classes`); 6: the fastest
#: round over 20 s, not the median over 2 s; 5: a call under 100 ms timed after one untimed call, the first block alone
#: a probe; 4: compile and onnxruntime timed side by side; 3: with the check plans' margin; 2: solved from whole
#: models; 1: parts timed alone, eager only
FORMAT_VERSION = 7
TABLE_FILE = "latency.json"
PART_WARMUP, PART_REPEATS = 2, 7  # each probe model of the table
#: rounds go on until they have lasted this long (at most `MAX_ROUNDS`), so that the fastest round is the machine's own
#: speed: on this project's 2-core CPU a 2-thread timing runs 1.3–2× slower in spells of 1 s to 30 s and more (`Timings`)
TABLE_SECONDS, END_TO_END_SECONDS, MAX_ROUNDS = 20.0, 10.0, 10_000
DRIFT_WARN = 0.1  # a machine whose speed changed by more than this while timing is said to be unsteady
UNSTEADY_RETRIES = 1  # a table timed while the machine was unsteady is timed again this many times (the faster kept)
CHECK_PLANS = 3  # whole models timed besides the probes, for the table's margin (`check_plans`)
END_TO_END_WARMUP, END_TO_END_REPEATS = 2, 10  # a whole compressed model (front plans, chosen/)
BURST_MS, MAX_BURST = 2.0, 200  # a call faster than this runs back to back in a timed burst (at most this many calls)
#: a call faster than this is timed after one untimed call of its own (`interleaved_times`); a slower one's cold start
#: is a small part of it (its weights do not fit the caches anyway), and the untimed call would double its timing
WARM_BELOW_MS = 100.0
#: config fields that name a copy or a release, not the architecture: left out of the fingerprint
NOT_ARCHITECTURE = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash", "architectures")


def architecture_config(config: Any) -> str:
    """`config` as canonical JSON without the fields that name a copy or a release (`NOT_ARCHITECTURE`)."""
    doc = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    doc = {k: v for k, v in doc.items() if k not in NOT_ARCHITECTURE and not k.startswith("_")}
    return json.dumps(doc, sort_keys=True, default=str)


def architecture_fingerprint(config: Any) -> str:
    """The model's architecture as a short hash of its config (`architecture_config`): what a latency depends on. The
    same for any copy of the model (a local folder, the hub, a fine-tuned one), so a table travels between machines;
    readable from the config alone, before any weight is loaded."""
    return "sha256:" + hashlib.sha256(architecture_config(config).encode()).hexdigest()[:16]


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
    seconds: float = TABLE_SECONDS
    runtime: str = "eager"
    versions: str = ""  # the runtime's package versions (JSON)
    checks: int = CHECK_PLANS
    version: int = FORMAT_VERSION

    @property
    def key(self) -> str:
        return spec_key(self)


def latency_inputs(loaded: LoadedModel, *, batch_size: int = 1, seq_len: int = 128) -> dict[str, torch.Tensor]:
    """A batch of `batch_size` inputs at the model's input size: the cost table's example input repeated (images: the
    processor's crop), or `seq_len` tokens per text (at most the model's position embeddings)."""
    return example_inputs(loaded, batch=batch_size, seq_len=seq_len)


def describe_inputs(inputs: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items())


def latency_spec(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], *, kinds: Iterable[str], seq_len: int | None
) -> LatencySpec:
    """The cache key of `loaded`'s latency table on its device, with `inputs` and this process's thread count."""
    return LatencySpec(
        model_id=loaded.model_id,
        revision=loaded.revision,
        config=architecture_config(loaded.config),
        device=device_name(loaded.device),
        torch_version=torch.__version__,
        dtype=dtype_name(next(loaded.model.parameters()).dtype),
        batch_size=int(next(iter(inputs.values())).shape[0]),
        seq_len=seq_len if loaded.family.sequence_inputs else None,
        threads=torch.get_num_threads(),
        kinds=tuple(dict.fromkeys(kinds)),
        inputs=describe_inputs(inputs),
    )


class Timings(dict):
    """Milliseconds per call by model, each its fastest round's, and `drift`: how much slower (> 0) or faster (< 0)
    the machine ran the same work at the end of the timing than at its start, relative (the later half of the rounds
    against the earlier half, or the first model timed again after the others); 0 where it could not be told (one
    model, few rounds).

    The fastest round, not the median: a shared machine's slow spells make every model slower for a while and never
    faster, so the fastest round is what the model costs on the machine itself. On this project's 2-core CPU a
    2-thread timing ran 1.3–2× slower in spells of 1 s to 30 s and more (a third of the time in one quarter of an hour).
    From the same rounds of 20 s (`bench/RESULTS.md`, issue 25, section h), the table's median error on 20 random
    plans, median over 3–4 trials, was 0.6–5.3% with the fastest round against 1.2–14.8% with the median (demo-vit:
    eager, onnxruntime and compile at batch 1, compile at batch 32). A timing whose whole window falls in a spell is
    off by the spell's factor either way; the longer the window, the rarer that is (`TABLE_SECONDS`)."""

    drift: float = 0.0

    def __init__(self, times: Mapping[Any, float], drift: float = 0.0) -> None:
        super().__init__(times)
        self.drift = float(drift)


def unsteady(drift: float) -> str | None:
    """A line saying the machine's speed changed while timing when `drift` is over `DRIFT_WARN`, else None."""
    if not abs(drift) > DRIFT_WARN:
        return None
    return (
        f"the machine ran {abs(drift):.0%} {'slower' if drift > 0 else 'faster'} at the end of the timing than at its "
        "start: these times are not steady; time on an otherwise idle machine (or with OMP_NUM_THREADS=1 on a shared "
        "one) and compare"
    )


def interleaved_times(
    calls: dict, *, warmup: int, repeats: int, device, burst_ms: float = BURST_MS, seconds: float = 0.0
) -> Timings:
    """Milliseconds per call of each callable of `calls`, its fastest round's (`Timings`), timed in `repeats` rounds
    that time each in turn (after `warmup` rounds), so that a change of load on a shared machine shifts every part
    alike; more rounds while the timed ones have lasted less than `seconds` (at most `MAX_ROUNDS`). Its `drift`
    compares the later half of the rounds' totals with the earlier half (4 rounds or more).

    In a round a callable runs as a burst of back-to-back calls lasting about `burst_ms` (one call when it is
    slower), timed as one and divided, after one untimed call (calls under `WARM_BELOW_MS`): a model's first call
    after another model's runs on caches that hold the other's weights, where a model served back to back runs warm
    (onnxruntime, demo-vit, batch 1, on this project's 2-core CPU: 0.73–0.77 ms side by side with one other model,
    0.82–0.90 with 6 others and 0.87–0.95 with 20; 0.71–0.83 in all three after the untimed call). The untimed call
    precedes a single call too: demo-lm's compiled decode step at batch 1 ran about 0.7 ms slower cold, so models
    just over `burst_ms` (bursts of one) read 2.04–2.19 ms against 1.33–1.48 for the models just under it."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    bursts, warm = {}, {}
    for name, fn in calls.items():
        once = measure_latency(fn, warmup=0, repeats=1, device=device).median_ms
        bursts[name] = max(1, min(MAX_BURST, math.ceil(burst_ms / max(once, 1e-6))))
        warm[name] = once < WARM_BELOW_MS
    times: dict = {name: [] for name in calls}
    start, rounds = time.perf_counter(), 0
    while rounds < repeats or (time.perf_counter() - start < seconds and rounds < MAX_ROUNDS):
        rounds += 1
        for name, fn in calls.items():
            k = bursts[name]
            if warm[name]:  # untimed: it brings this model's weights back into the caches the previous model took
                fn()
            ms = measure_latency(lambda fn=fn, k=k: [fn() for _ in range(k)], warmup=0, repeats=1, device=device)
            times[name].append(ms.median_ms / k)
    totals = np.sum([t for t in times.values()], axis=0)
    half = len(totals) // 2
    drift = float(np.median(totals[-half:]) / np.median(totals[:half]) - 1.0) if half >= 2 else 0.0
    return Timings({name: float(np.min(t)) for name, t in times.items()}, drift)


class _ShapeOnly:
    """A stand-in for a fitted translator of `kind` at width `dim`: its module of the fitted shape, default-initialised
    (a folded span's source block is kept as it is: the folded copy has the same shapes)."""

    def __init__(self, kind: str, dim: int) -> None:
        self.kind, self.dim = kind, dim

    def to_module(self) -> torch.nn.Module:
        return translator_class(self.kind).empty_module(self.dim)

    def fold_into(self, block: Any, family: Any) -> None:
        return None


def timing_model(loaded: LoadedModel, plan: Plan) -> CompressedModel:
    """`plan` over `loaded` with every translator at its fitted shape and default-initialised weights: what a latency
    is measured on (it depends on the shapes, not the values), no statistics needed."""
    stand_ins = {s: _ShapeOnly(s.kind, loaded.hidden_size) for s in plan.spans if translator_class(s.kind).needs_fit}
    return CompressedModel.from_model(loaded, plan, stand_ins).eval()  # type: ignore[arg-type]


def depth_knots(num_blocks: int) -> tuple[int, ...]:
    """The counts of kept blocks the table's probes run at, between which a table's `kept_ms` is linear: the first
    block alone and L; from 4 blocks also L - ⌊L/2⌋ (the kinds' probes), about L/4 and about 3L/4 (12 blocks: 1, 3,
    6, 9, 12); at 2 blocks none and 2. A runtime's cost per kept block can change with the depth (demo-lm's onnxruntime
    decoding step: 0.09 ms a block with 1–5 kept, 0.15 ms with 9–12), which a single cost per block would average."""
    L = int(num_blocks)
    if L < 2:
        raise ValueError(f"a latency table needs a model of 2 or more blocks, got {L}")
    if L < 4:  # no knot between the ends: there the identity probe would be the knot's own probe
        return (1 if L == 3 else 0, L)
    return tuple(sorted({1, round(L / 4), L - L // 2, round(3 * L / 4), L}))


def depth_weights(kept: int, knots: tuple[int, ...]) -> dict[str, float]:
    """The unknowns `kept@k` of the knots (`depth_knots`) that a model keeping `kept` blocks is made of: linear
    between the two knots around it (beyond the first, along the first two)."""
    i = max(1, min(len(knots) - 1, int(np.searchsorted(knots, kept))))
    lo, hi = knots[i - 1], knots[i]
    w = (kept - lo) / (hi - lo)
    return {n: v for n, v in ((f"kept@{lo}", 1.0 - w), (f"kept@{hi}", w)) if v != 0.0}


def block_classes(loaded: LoadedModel) -> tuple[str, ...]:
    """Each block's cost class: its attention kind where the family has several (`layer_types`: Gemma 2 alternates
    sliding-window and full layers, and past the window a decoding step's full layer reads every cached token while a
    sliding one reads its window), else one class for every block."""
    kinds = getattr(loaded.family, "layer_types", None)
    if callable(kinds):
        out = tuple(str(k) for k in kinds(loaded.config))
        if len(out) == loaded.num_blocks:
            return out
    return ("block",) * loaded.num_blocks


def plan_counts(plan: Plan, classes: tuple[str, ...]) -> dict[str, float]:
    """`plan`'s count of each unknown of a table: the knots its kept blocks' count is made of (`depth_weights`), a
    span of each kind, and per class but the first (`class:<c>`) how many more of its blocks are kept than the
    model's share of the kept count (0 for a model of one class: its blocks' offsets from the mean block)."""
    L, kept = plan.num_blocks, plan.kept
    counts: dict[str, float] = dict(depth_weights(len(kept), depth_knots(L)))
    for span in plan.spans:
        counts[span.kind] = counts.get(span.kind, 0.0) + 1.0
    for c in list(dict.fromkeys(classes))[1:]:
        counts[f"class:{c}"] = sum(classes[b] == c for b in kept) - len(kept) * classes.count(c) / L
    return counts


def _identity_over(blocks: Iterable[int], L: int) -> Plan:
    """One-block identity spans over `blocks`."""
    return Plan(tuple(Span(b - 1, b, "identity") for b in sorted(blocks)), L)


def probe_plans(
    num_blocks: int, kinds: Iterable[str], classes: tuple[str, ...] | None = None
) -> dict[Plan, dict[str, float]]:
    """The whole models a table is solved from, each with its count of each unknown (`plan_counts`: the fixed part
    with the kept blocks at each knot of `depth_knots`, a span of each kind, each class's offset): the original; at
    each other knot the first `k` blocks, one identity span over the rest; per kind (identity first, always) ⌊L/2⌋
    one-block spans, each after a kept block (blocks 1, 3, 5 … replaced), so that a kind that folds into its source
    block fits; and where the blocks are of several `classes`, per class but the first the model without that class's
    blocks (or with only them, where that is already a probe: Gemma 2's odd blocks). The identity probe and the
    one-span probe at L/2 kept tell an identity span's cost from the depth's (below 4 blocks, where there is no such
    pair, the knots are the two ends and the depths between them linear in them).

    With the first block alone the fixed part is nearly measured, not extrapolated from L and L/2 blocks, where a
    probe's noise comes back doubled (a simulated 2% noise per probe: median error over 20 random plans 1.4% → 1.1% at
    6 blocks, its 90th percentile 3.0% → 2.2%)."""
    L = int(num_blocks)
    classes = tuple(classes) if classes is not None else ("block",) * L
    if len(classes) != L:
        raise ValueError(f"{len(classes)} block classes for {L} blocks")
    knots, half = depth_knots(L), L // 2
    kinds = list(dict.fromkeys(["identity", *kinds]))
    plans = [Plan((), L)]
    plans += [Plan((Span(k - 1, L - 1, "identity"),), L) for k in knots[:-1]]
    plans += [Plan(tuple(Span(2 * i, 2 * i + 1, kind) for i in range(half)), L) for kind in kinds]
    for c in list(dict.fromkeys(classes))[1:]:
        without = _identity_over([b for b in range(L) if classes[b] == c], L)
        plans.append(without if without not in plans else _identity_over([b for b in range(L) if classes[b] != c], L))
    return {plan: plan_counts(plan, classes) for plan in dict.fromkeys(plans)}


def solve_probes(probes: Mapping[Plan, Mapping[str, float]], ms: Mapping[Plan, float]) -> dict[str, float]:
    """The unknowns of `probes` (each knot's `kept@k`, each kind, each class's offset) from the probes' measured
    milliseconds `ms`: least squares, a negative time (noise around a free part) clipped to 0; an offset may be
    negative (a class cheaper than the first)."""
    names = list(dict.fromkeys(n for counts in probes.values() for n in counts))
    a = np.array([[counts.get(n, 0) for n in names] for counts in probes.values()], dtype=float)
    b = np.array([ms[plan] for plan in probes], dtype=float)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    return {n: float(v) if n.startswith("class:") else max(float(v), 0.0) for n, v in zip(names, x)}


def depth_parts(parts: Mapping[str, float], num_blocks: int) -> tuple[float, tuple[float, ...]]:
    """The fixed part and `kept_ms` (the kept blocks' milliseconds for 0 … L kept) of the solved knots `parts`: linear
    between the knots, the fixed part where the first two knots' line meets 0 kept blocks (within 0 and the first
    knot's time); never fewer milliseconds for more blocks kept (a dip is the probes' noise)."""
    knots = depth_knots(num_blocks)
    total = [sum(parts[n] * w for n, w in depth_weights(k, knots).items()) for k in range(num_blocks + 1)]
    fixed = min(max(total[0], 0.0), parts[f"kept@{knots[0]}"])
    kept = np.maximum.accumulate(np.maximum(np.array(total) - fixed, 0.0))
    kept[0] = 0.0
    return fixed, tuple(float(v) for v in kept)


def class_blocks(parts: Mapping[str, float], kept_all: float, classes: tuple[str, ...]) -> tuple[float, ...]:
    """Each block's milliseconds in the original (`LatencyTable.blocks_ms`): the mean block (`kept_all`, the L blocks'
    milliseconds, over L) plus its class's offset from the mean (the solved `class:<c>`, the first class's 0)."""
    raw = [parts.get(f"class:{c}", 0.0) for c in classes]
    mean = sum(raw) / len(raw)
    return tuple(max(kept_all / len(classes) + r - mean, 0.0) for r in raw)


def check_plans(
    num_blocks: int, kinds: Iterable[str], n: int = CHECK_PLANS, classes: tuple[str, ...] | None = None
) -> list[Plan]:
    """`n` plans, neither the original nor a probe, that the table's estimate is checked on (its `margin`): seeded, so
    the same for every table of a depth and kinds; each block kept with probability 0.6, else a span of a random kind
    (identity included), at least one span each."""
    L, kinds = int(num_blocks), list(dict.fromkeys(["identity", *kinds]))
    space = PlanSpace(num_blocks=L, kinds=tuple(kinds))
    rng = np.random.default_rng(20261206)
    probes, out = probe_plans(L, kinds, classes), []
    for _ in range(100 * n):
        if len(out) == n:
            break
        try:
            plan = space.decode(["keep" if rng.random() < 0.6 else str(rng.choice(kinds)) for _ in range(L)])
        except PlanError:  # a kind that needs a source block drawn at block 0
            continue
        if plan.spans and space.contains(plan) and plan not in probes and plan not in out:
            out.append(plan)
    return out


def check_margin(table: LatencyTable, ms: Mapping[Plan, float]) -> float:
    """The largest relative amount by which the check plans' measured milliseconds `ms` exceed `table`'s estimates
    (0 when none ran slower than estimated)."""
    return max([0.0, *(t / table.estimate(plan) - 1.0 for plan, t in ms.items() if table.estimate(plan) > 0)])


#: models whose own copies of the weights (`Runtime.copies_weights`: twice the weights, a copy and its working memory)
#: would take more than this share of the device's memory are timed one after the other instead of side by side
SIDE_BY_SIDE_SHARE = 0.25


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of `model`'s parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def side_by_side(runtime: Runtime, models: Mapping[Any, Callable[[], CompressedModel]], device: Any) -> bool:
    """Whether `models` are timed side by side in `runtime`: where it allows it and, for a runtime whose prepared
    models copy the weights, while twice the first model's weights (the original, the largest) for each model fit in
    `SIDE_BY_SIDE_SHARE` of the memory of `device`."""
    if not runtime.interleaved:
        return False
    if not runtime.copies_weights or len(models) < 2:
        return True
    first = next(iter(models.values()))()
    need = 2 * len(models) * weight_bytes(first)
    return need <= SIDE_BY_SIDE_SHARE * device_memory(device if device is not None else next(first.parameters()).device)


def time_models(
    runtime: Runtime,
    models: Mapping[Any, Callable[[], CompressedModel]],
    inputs: dict[str, torch.Tensor],
    *,
    mode: str = PREFILL,
    warmup: int = PART_WARMUP,
    repeats: int = PART_REPEATS,
    seconds: float = 0.0,
    device: torch.device | str | None = None,
) -> Timings:
    """Milliseconds per call of each model of `models` (built when needed: `key -> build()`) on `inputs` in
    `runtime`: side by side in rounds (`interleaved_times`) where the runtime allows and they fit (`side_by_side`),
    so that a change of the machine's speed shifts them alike; else one model after the other, each released before
    the next is prepared, and the first model timed again at the end for the `drift`. Each is timed over at least
    `seconds` (`interleaved_times`)."""
    if side_by_side(runtime, models, device):
        with runtime.side_by_side(len(models)):
            calls = {key: runtime.prepare(build(), inputs, mode=mode) for key, build in models.items()}
            try:
                return interleaved_times(calls, warmup=warmup, repeats=repeats, device=device, seconds=seconds)
            finally:
                calls.clear()  # before the runtime lets go of what it built (`side_by_side`'s release)

    def alone(build: Callable[[], CompressedModel]) -> float:
        call = runtime.prepare(build(), inputs, mode=mode)
        try:
            return interleaved_times({0: call}, warmup=warmup, repeats=repeats, device=device, seconds=seconds)[0]
        finally:
            del call
            runtime.release()

    out = {key: alone(build) for key, build in models.items()}
    if len(out) < 2:
        return Timings(out)
    first = next(iter(models))
    return Timings(out, alone(models[first]) / out[first] - 1.0)


def _table(loaded: LoadedModel, inputs: dict[str, torch.Tensor], spec: LatencySpec, runtime: Runtime) -> LatencyTable:
    """The table of `spec`: the probe models timed in `runtime`, the parts solved from them, and its margin from the
    check plans timed with them."""
    classes = block_classes(loaded)
    probes = probe_plans(loaded.num_blocks, spec.kinds, classes)
    checks = check_plans(loaded.num_blocks, spec.kinds, spec.checks, classes)
    ms = time_models(
        runtime,
        {plan: (lambda plan=plan: timing_model(loaded, plan)) for plan in [*probes, *checks]},
        inputs,
        mode=spec.mode,
        warmup=spec.warmup,
        repeats=spec.repeats,
        seconds=spec.seconds,
        device=loaded.device,
    )
    parts = solve_probes(probes, ms)
    fixed, kept = depth_parts(parts, loaded.num_blocks)
    table = LatencyTable(
        embed_ms=fixed,
        blocks_ms=class_blocks(parts, kept[-1], classes),
        tail_ms=0.0,
        kept_ms=kept,
        translators_ms={kind: parts[kind] for kind in spec.kinds},
        device=spec.device,
        dtype=spec.dtype,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        threads=spec.threads,
        torch_version=spec.torch_version,
        input_description=spec.inputs,
        mode=spec.mode,
        runtime=spec.runtime,
        versions=json.loads(spec.versions or "{}"),
        fingerprint=architecture_fingerprint(loaded.config),
    )
    margin = check_margin(table, {plan: ms[plan] for plan in checks})
    return dataclasses.replace(table, margin=margin, drift=getattr(ms, "drift", 0.0))


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
    runtime: str = "eager",
    checks: int = CHECK_PLANS,
    seconds: float = TABLE_SECONDS,
) -> tuple[LatencyTable, bool]:
    """`loaded`'s latency table in `runtime` on its device and dtype, and whether it was measured now (False: read
    from the cache). `mode` decode (causal LMs): one new token per sequence after `seq_len` cached ones. `checks`:
    how many check plans give the table's margin (0: none, margin 0). `seconds`: each probe is timed over at least
    this long (rounds go on past `repeats`).

    A table whose timing drifted by more than `DRIFT_WARN` is timed again (`UNSTEADY_RETRIES` times at most) and the
    faster timing kept (the lower estimate of the original): a slow spell only ever slows the machine, so the faster
    timing is the nearer to the machine's own speed, as a model's fastest round is (`Timings`).

    `cache_dir` None: measured and not stored. A corrupt cache entry is measured again (with a warning)."""
    engine = get_runtime(runtime)
    engine.check(loaded.device, mode, next(loaded.model.parameters()).dtype)
    inputs = latency_inputs(loaded, batch_size=batch_size, seq_len=seq_len)
    spec = dataclasses.replace(
        latency_spec(loaded, inputs, kinds=kinds, seq_len=seq_len),
        warmup=warmup,
        repeats=repeats,
        checks=checks,
        seconds=seconds,
        mode=mode,
        runtime=engine.name,
        device=engine.device_label(loaded.device),
        versions=json.dumps(engine.versions(), sort_keys=True),
    )
    directory = Path(cache_dir) / "latency" / spec.key if cache_dir is not None else None
    found = (
        read_or_discard(directory, lambda d: _read_table(d, spec.key), redo="measuring the latency table again")
        if directory is not None
        else None
    )
    if found is not None:
        return found, False
    table = _table(loaded, inputs, spec, engine)
    for _ in range(UNSTEADY_RETRIES):  # the machine's speed changed while timing: time the probes again
        if unsteady(table.drift) is None:
            break
        table = min((table, _table(loaded, inputs, spec, engine)), key=lambda t: t.original_ms)
    fault_point("latency")
    if directory is not None:
        with write_artifact(directory, spec.key, f"latency table {directory}") as writer:
            (writer.directory / TABLE_FILE).write_text(json.dumps(table.to_json(), indent=2))
            writer.manifest["spec"] = asdict(spec)
    return table, True


def measure_end_to_end(
    model: CompressedModel,
    inputs: dict[str, torch.Tensor],
    *,
    warmup: int = END_TO_END_WARMUP,
    repeats: int = END_TO_END_REPEATS,
    mode: str = PREFILL,
    runtime: str = "eager",
    seconds: float = END_TO_END_SECONDS,
) -> float:
    """Milliseconds (the fastest round's, `Timings`) of the whole compressed model, head included, on `inputs` in `runtime` on its device
    (`mode` decode: one decoding step after the inputs' tokens, cached by the model itself first, the cache put back
    after each step)."""
    engine = get_runtime(runtime)
    device = next(model.parameters()).device
    return time_models(
        engine,
        {"model": lambda: model},
        inputs,
        mode=mode,
        warmup=warmup,
        repeats=repeats,
        seconds=seconds,
        device=device,
    )["model"]


def cheapest_latency_plan(table: LatencyTable, space: PlanSpace) -> tuple[Plan, float]:
    """The plan of `space` with the lowest estimate: one span over the slowest `removal_limit` consecutive blocks of
    the fastest kind the space allows there (every block of a family's one shape costs alike, so this is the
    minimum), or, where blocks cost differently (`blocks_ms`: Gemma 2's full and sliding layers), the costliest
    blocks replaced, as many as the space allows or fewer, each run of them one span of one kind."""
    r, L = space.removal_limit, space.num_blocks
    original = Plan((), L)
    candidates = [original]
    if r > 0:
        candidates += [Plan((Span(start, start + r, kind),), L) for start in range(-1, L - r) for kind in space.kinds]
        costliest = sorted(range(L), key=lambda b: -table.blocks_ms[b])
        for n, kind in itertools.product(range(1, r + 1), space.kinds):
            removed = set(costliest[:n])
            try:
                candidates.append(space.decode([kind if b in removed else "keep" for b in range(L)]))
            except PlanError:  # a kind that needs a source block, at block 0
                continue
    plan = min((p for p in dict.fromkeys(candidates) if space.contains(p)), key=table.estimate)
    return plan, table.estimate(plan)
