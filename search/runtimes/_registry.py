"""The runtime registry: each way of running a model that latency can be measured in is one module that registers a
`Runtime` (`--runtime NAME`, `--latency-runtime NAME`).

A runtime turns a compressed model and a batch of inputs into a zero-argument call that runs the batch once in that
runtime (`prepare`): PyTorch eager (`eager`), `torch.compile` (`compile`), ONNX Runtime (`onnxruntime`, with the
CPU, CUDA or TensorRT execution provider). Whatever a runtime does once per model (compiling, exporting, building a
session, warming up) happens in `prepare`, so that only the calls are timed. The latency table and the end-to-end
measurements (`toast.search._latency`) time every runtime's calls the same way. `check` says in one line, before any
work, why a runtime cannot run here (a missing package, a device or mode it does not run). `toast.search.runtimes.
testing.check_runtime` is the conformance suite every registered runtime passes.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from toast.errors import SettingsError

if TYPE_CHECKING:
    from toast.models import CompressedModel

__all__ = [
    "RUNTIMES",
    "Runtime",
    "device_memory",
    "device_name",
    "get_runtime",
    "list_runtimes",
    "register_runtime",
]

PREFILL, DECODE = "prefill", "decode"


class Runtime:
    """A way of running a compressed model that latency is measured in (see the module).

    Subclasses set `name`, `help`, `devices` (the torch device types it runs on) and `modes` (`prefill`: a forward
    over whole inputs; `decode`: one decoding step of a causal LM after cached tokens), and implement `versions`,
    `prepare` and, where a package or a provider may be missing, `check`.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    modes: ClassVar[tuple[str, ...]] = (PREFILL,)
    #: whether several prepared models can be timed side by side, round by round (a shared machine's changing load
    #: then shifts them alike); False: one model prepared, timed and released at a time
    interleaved: ClassVar[bool] = True
    #: whether each prepared model holds its own copy of the weights (an ONNX Runtime session does; eager and compile
    #: run the loaded model's own): such models are timed side by side only while the copies fit in memory
    #: (`toast.search._latency.time_models`)
    copies_weights: ClassVar[bool] = False

    def versions(self) -> dict[str, str]:
        """The versions of what runs the model (`{"torch": "2.13.0+cpu", "onnxruntime": "1.32.0"}`): a latency table
        names them, since another release runs the same graph at another speed."""
        import torch

        return {"torch": torch.__version__}

    def check(self, device: torch.device | str, mode: str = PREFILL, dtype: Any = None) -> None:
        """A `SettingsError` (or `MissingDependencyError`) in one line when this runtime cannot run `mode` on
        `device` here, or models in `dtype` (a `torch.dtype` or its name; None: not checked); nothing otherwise.
        Cheap: called before any model is loaded."""
        import torch

        kind = torch.device(device).type
        if kind not in self.devices:
            raise SettingsError(
                f"runtime {self.name} does not run on {kind}: it runs on {', '.join(self.devices)} "
                f"(runtimes: {', '.join(list_runtimes())})"
            )
        if mode not in self.modes:
            others = [r for r in list_runtimes() if mode in get_runtime(r).modes]
            raise SettingsError(
                f"runtime {self.name} cannot time a {mode} step of a causal LM (it runs {', '.join(self.modes)} only): "
                f"use runtime {' or '.join(others)} for {mode} latency"
            )

    def check_model(self, family: Any, config: Any, mode: str = PREFILL, seq_len: int | None = None) -> None:
        """A `SettingsError` (or `UnsupportedModelError`) in one line when this runtime cannot run `mode` of a model
        of `family` with `config` (read before any weight loads) on `seq_len` tokens (a decode: after that many
        cached; None: any); nothing otherwise."""

    def prepare(self, model: CompressedModel, inputs: dict[str, Any], *, mode: str = PREFILL) -> Callable[[], Any]:
        """A call that runs `inputs` (a batch on the model's device) through `model` once in this runtime: what a
        deployment runs, the model's export graph (`CompressedModel.export_module`: an image model's head, a text
        encoder's token and sentence embeddings, an LM's logits) in every runtime alike; `mode` decode: one new token
        per sequence after the inputs' tokens, cached once here. Everything done once per
        model (compiling, exporting, warming up) is done here."""
        raise NotImplementedError

    def release(self) -> None:
        """Let go of what `prepare` built and no call holds any more."""

    @contextlib.contextmanager
    def side_by_side(self, n: int) -> Iterator[None]:
        """Entered around preparing `n` models and timing them side by side: what the runtime needs to hold them all
        at once (compile: room for `n` graphs in dynamo's cache); everything is let go at the end (`release`)."""
        try:
            yield
        finally:
            self.release()

    def device_label(self, device: torch.device | str) -> str:
        """What a latency table and front.json name as where it ran: the runtime and the hardware."""
        return device_name(device)

    def __repr__(self) -> str:
        return f"<runtime {self.name}>"


def dtype_name(dtype: Any) -> str | None:
    """`torch.bfloat16` or "bfloat16" -> "bfloat16" (the name `--dtype` takes and a latency table records); None
    stays None."""
    return None if dtype is None else str(dtype).removeprefix("torch.")


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


def device_memory(device: torch.device | str) -> int:
    """Bytes of memory on `device`: the GPU's, or the machine's physical memory for the CPU (0 where it cannot be
    read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 0


_REGISTRY: dict[str, Runtime] = {}
RUNTIMES: Mapping[str, Runtime] = MappingProxyType(_REGISTRY)


def register_runtime(runtime: Runtime) -> Runtime:
    """Add `runtime` to the registry under its `name` (registered once)."""
    if runtime.name in _REGISTRY:
        raise ValueError(f"a runtime named {runtime.name!r} is already registered")
    _REGISTRY[runtime.name] = runtime
    return runtime


def get_runtime(name: str) -> Runtime:
    """The registered runtime `name`; a `SettingsError` naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SettingsError(f"unknown runtime {name!r}: use one of {', '.join(_REGISTRY)}") from None


def list_runtimes() -> list[str]:
    """The registered runtimes' names, in registration order (the default, eager, first)."""
    return list(_REGISTRY)
