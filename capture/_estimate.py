"""What a run will need before it runs: host and device memory, disk and time of the capture and of a trial.

Everything is read from the model's shape (its config; parameters counted on the meta device, no weight loaded),
the statistics the space reads (`plan_capture`: the very plan the capture follows, passes included), the sample
and token counts and the dtypes. Memory is the sum of what the capture holds at its peak:

    the interpreter with the libraries (BASE_BYTES, measured)  +  the weights  +  one pass's accumulators
    +  one batch's hidden states (model dtype, their float64 shifted copy and float32 products' operands)
    +  the forward's own transients (attention scores, the MLP's hidden layer)

The fits that follow read each block from its memory-mapped file and let it go, so they add a few `(d, d)` arrays,
not the statistics. Time is FLOPs over this device's measured matrix-product rate: a lower bound of the forward's
(norms, softmax and memory traffic are not counted), the products' about right.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ResourceError
from ._cache import CapturePlan, plan_capture

#: resident memory of the interpreter with torch, transformers, datasets, pyarrow and the package imported
BASE_BYTES = 450 * 2**20
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
GB = 1024**3


@dataclass(frozen=True)
class CaptureShape:
    """What the estimate reads of a model: its depth and widths, its parameters, its tokens per sample."""

    num_blocks: int
    dim: int
    intermediate: int  # the MLP's hidden width
    heads: int
    params: int
    tokens_per_sample: float  # real (unpadded) tokens, on average
    padded_tokens: int  # a batch's sequence length (the longest sample)
    branches: bool  # the MLP branch outputs are captured (`folded` in the space, a pre-norm family)
    param_bytes: int = 4  # bytes per weight (the model's dtype)

    @property
    def num_states(self) -> int:
        return self.num_blocks + 1

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        tokens_per_sample: float,
        padded_tokens: int | None = None,
        branches: bool = False,
        dtype: str = "float32",
        params: int | None = None,
    ) -> CaptureShape:
        """From a Transformers config (its standard fields); `params` None: counted on a meta-device model of it."""
        if params is None:
            params = count_params_on_meta(config)
        dim = int(config.hidden_size)
        intermediate = getattr(config, "intermediate_size", None)
        if intermediate is None:  # ViT-style `mlp_ratio` (DINOv2)
            intermediate = int(dim * float(getattr(config, "mlp_ratio", 4)))
        return cls(
            num_blocks=int(config.num_hidden_layers),
            dim=dim,
            intermediate=int(intermediate),
            heads=int(config.num_attention_heads),
            params=int(params),
            tokens_per_sample=float(tokens_per_sample),
            padded_tokens=int(padded_tokens if padded_tokens is not None else round(tokens_per_sample)),
            branches=branches,
            param_bytes=_BYTES[dtype],
        )


def meta_model(config: Any, model_class: Any = None) -> torch.nn.Module:
    """A model of `config` on the meta device: its shapes, no memory, no weights read."""
    import transformers

    cls = model_class or transformers.AutoModel
    with torch.device("meta"):
        return cls.from_config(config) if hasattr(cls, "from_config") else cls._from_config(config)


def count_params_on_meta(config: Any, model_class: Any = None) -> int:
    return sum(p.numel() for p in meta_model(config, model_class).parameters())


@dataclass(frozen=True)
class ResourceEstimate:
    """A run's estimated needs. `device_bytes` is the capture device's (equal to the host's on a CPU)."""

    host_bytes: int
    device_bytes: int
    disk_bytes: int
    capture_seconds: float
    trial_seconds: float
    passes: int
    parts: dict  # name -> bytes of the capture's peak, for the refusal's reason
    on_cpu: bool
    disk_parts: dict | None = None  # "statistics" / "activation shards" -> bytes

    def lines(self) -> list[str]:
        """What `--dry-run` and the start of a run print."""
        device = "" if self.on_cpu else f", device memory {self.device_bytes / GB:.3g} GB"
        return [
            f"estimate   capture: host memory {self.host_bytes / GB:.3g} GB{device}, disk {self.disk_bytes / GB:.3g} GB, "
            f"about {_duration(self.capture_seconds)} ({self.passes} pass{'es' if self.passes > 1 else ''} over the "
            f"calibration samples); a trial: about {_duration(self.trial_seconds)} at most"
        ]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.2g} s"
    if seconds < 5400:
        return f"{seconds / 60:.2g} min"
    return f"{seconds / 3600:.2g} h"


@functools.lru_cache(maxsize=4)
def matmul_flops_per_second(device: str = "cpu") -> float:
    """This device's float32 matrix-product rate (best of three products of 512 × 1024 by 1024 × 1024)."""
    a = torch.randn(512, 1024, device=device)
    b = torch.randn(1024, 1024, device=device)
    best = float("inf")
    for _ in range(4):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        _ = a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 512 * 1024 * 1024 / max(best, 1e-9)


def estimate_resources(
    shape: CaptureShape,
    *,
    samples: int,
    batch_size: int,
    pairs: Iterable[tuple[int, int]] | None,
    branch_pairs: Iterable[tuple[int, int]] | None,
    states: Iterable[int] | None,
    memory_bytes: int | None,
    activation_dtype: str = "float16",
    device: str = "cpu",
    trial_samples: int = 0,
    spans_per_trial: int = 1,
    flops_per_second: float | None = None,
    plan: CapturePlan | None = None,
    offloaded: bool = False,
) -> ResourceEstimate:
    """The capture's peak host and device memory, its disk and time, and a trial's time, for a capture of `samples`
    samples in batches of `batch_size` holding `pairs` (None: all), `branch_pairs` (None: all, where
    `shape.branches`) and the shards of `states` (None: all), planned into `memory_bytes` as the capture plans it.
    `trial_samples`: the samples a trial runs (probe + evaluation); `spans_per_trial`: the spans it fits.
    `offloaded` (a device map spreading the weights over devices and disk): two blocks' weights resident at once."""
    S, L, d = shape.num_states, shape.num_blocks, shape.dim
    if plan is None:
        branch = None
        if shape.branches:
            branch = [(s, t) for s in range(L) for t in range(s, L + 1)] if branch_pairs is None else branch_pairs
        plan = plan_capture(S, d, None if pairs is None else list(pairs), branch, memory_bytes)
    B, N, pb = min(batch_size, samples), shape.padded_tokens, shape.param_bytes
    batch_tokens = B * N
    state_elems = S * batch_tokens * d
    branch_elems = L * batch_tokens * d if shape.branches else 0
    weights = shape.params * pb if not offloaded else 2 * shape.params * pb // max(L, 1)
    parts = {
        "weights": weights,
        "statistics accumulators": plan.pass_bytes(S, d),
        # the states in the model's dtype and their shifted float32 copy side by side (one state's float64 at a time)
        "a batch's hidden states": (state_elems + branch_elems) * (pb + 4) + 2 * batch_tokens * d * 8,
        # one (N × N) score matrix a head (PyTorch's attention does not keep three), the MLP's hidden layer twice
        "the forward's transients": B * shape.heads * N * N * 4 + batch_tokens * shape.intermediate * pb * 2,
        "one row's products": d * S * d * (4 + 8),
    }
    device_peak = sum(parts.values())
    on_cpu = not device.startswith("cuda")
    shard_states = S if states is None else len(set(states))
    tokens = samples * shape.tokens_per_sample
    shard_bytes = tokens * (shard_states * d * _BYTES[activation_dtype] + 12) if shard_states else 0
    writer = batch_tokens * shard_states * d * (pb + _BYTES[activation_dtype])
    if on_cpu:
        host = BASE_BYTES + device_peak + writer
    else:  # the host holds the libraries, the shards being written and the blocks on their way to disk
        host = BASE_BYTES + writer + plan.pass_bytes(S, d)
    blocks = sum(len(p) + len(b) for p, b in plan.passes) * d * d * 8
    stats_bytes = blocks + ((S * d) ** 2 * 8 if plan.gram else 0)
    rate = flops_per_second or matmul_flops_per_second(device)
    forward_per_token = 2 * shape.params + 4 * L * N * d  # weights' products + attention's two (N × N) products
    gram_units = S * (S + 1) // 2 if plan.gram else 0
    products_per_token = 2 * d * d * (gram_units + sum(len(p) + len(b) for p, b in plan.passes))
    capture = tokens * (len(plan.passes) * forward_per_token + products_per_token) / rate
    trial = trial_samples * shape.tokens_per_sample * forward_per_token / rate + spans_per_trial * 4 * d**3 / rate
    return ResourceEstimate(
        host_bytes=int(host),
        device_bytes=int(device_peak),
        disk_bytes=int(shard_bytes + stats_bytes),
        capture_seconds=float(capture),
        trial_seconds=float(trial),
        passes=len(plan.passes),
        parts=parts,
        on_cpu=on_cpu,
        disk_parts={"statistics": int(stats_bytes), "activation shards": int(shard_bytes)},
    )


def host_memory_available() -> int:
    """The memory the kernel says a new allocation can take (`MemAvailable`), else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(estimate: ResourceEstimate, *, cache_root: Path, device: str = "cpu", batch_size: int) -> None:
    """Refuse, in one line naming the flag that makes it fit, a capture that cannot fit this machine's memory, the
    device's, or the cache's disk."""
    host = host_memory_available()
    if estimate.host_bytes > host:
        raise ResourceError(
            f"the capture needs about {estimate.host_bytes / GB:.3g} GB of host memory and {host / GB:.3g} GB is "
            f"available (largest part: {_largest(estimate)}): {_remedy(estimate, host, batch_size)}"
        )
    if not estimate.on_cpu and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        if estimate.device_bytes > free:
            raise ResourceError(
                f"the capture needs about {estimate.device_bytes / GB:.3g} GB of device memory and {free / GB:.3g} GB "
                f"is free on {device} (largest part: {_largest(estimate)}): {_remedy(estimate, free, batch_size)}"
            )
    root = Path(cache_root)
    while not root.exists() and root != root.parent:
        root = root.parent
    free_disk = shutil.disk_usage(root).free
    if estimate.disk_bytes > free_disk:
        disk = estimate.disk_parts or {}
        if disk.get("statistics", 0) >= disk.get("activation shards", 0):
            remedy = "lower --max-removed (the statistics grow with the spans a plan may remove)"
        else:
            remedy = (
                "lower --calib-samples (the activation shards grow with it; closed-form --translators such as "
                "identity,linear write none)"
            )
        raise ResourceError(
            f"the capture writes about {estimate.disk_bytes / GB:.3g} GB under {cache_root} and {free_disk / GB:.3g} "
            f"GB is free there: free disk, give another --cache-dir, or {remedy}"
        )


def _largest(estimate: ResourceEstimate) -> str:
    name, size = max(estimate.parts.items(), key=lambda kv: kv[1])
    return f"{name}, {size / GB:.3g} GB"


def _remedy(estimate: ResourceEstimate, room: int, batch_size: int) -> str:
    """The flag that makes the largest part fit."""
    parts = estimate.parts
    name = max(parts, key=parts.get)
    rest = sum(parts.values()) - parts[name]
    if name == "statistics accumulators":
        fit = max(room - rest - BASE_BYTES, 0) / GB
        return f"lower --stats-memory-gb (to {fit:.2g} or less: more passes over the data, each holding fewer blocks)"
    if name in ("a batch's hidden states", "the forward's transients"):
        scale = max(room - rest - BASE_BYTES, 0) / max(parts[name], 1)
        return f"lower --batch-size (to {max(1, int(batch_size * scale))} or less)"
    return "load the model in half precision (--dtype bfloat16) or spread it over devices and disk (--device-map auto)"
