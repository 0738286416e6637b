"""`onnxruntime` and `onnxruntime-tensorrt`: the model exported to ONNX (`toast-search export --format onnx`'s
exporter: the torch.export-based one, dynamic batch and sequence axes) and run by an ONNX Runtime session, on the CPU
execution provider (`--device cpu`), CUDA's (`--device cuda`) or TensorRT's (`onnxruntime-tensorrt`, CUDA behind it
for what TensorRT does not take). The session uses as many intra-op threads as torch does (`torch.get_num_threads`),
so a table names one thread count for every runtime. Inputs are fed as host arrays, as a server fed by a network
does; a prefill only (an exported graph has no KV cache to decode with).

A session's thread pool would spin on after each run and take the cores from the next session timed side by side (5
demo-vit sessions in turn measured 6× their time alone), so sessions stop spinning when a run returns
(`session.force_spinning_stop`; within a run they spin as usual): side by side, each measures its time alone. On this
2-core CPU the option changed a session's time by +3% (demo-vit, batch 1) and −1% (batch 32), medians of 20
alternations. Each session holds a copy of the weights (`copies_weights`), so models too big to hold together are
timed one after the other.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from toast.errors import MissingDependencyError, SettingsError

from ._registry import PREFILL, Runtime, register_runtime

if TYPE_CHECKING:
    from toast.models import CompressedModel

__all__ = ["OnnxRuntime", "session_options"]

EXPORT_BATCH = 2  # torch.export specialises a dimension of size 1: the graph is traced at batch 2, run at any
WARM_CALLS = 3  # the first runs allocate and (TensorRT) build engines


def session_options(ort: Any) -> Any:
    """Session options: torch's intra-op thread count, one inter-op thread, no spinning once a run has returned, only
    errors logged."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3
    return options


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    help = "ONNX Runtime on the exported graph: CPU execution provider on cpu, CUDA's on cuda (pip install 'toast-search[onnx]'; onnxruntime-gpu for CUDA)"
    devices = ("cpu", "cuda")
    modes = (PREFILL,)
    copies_weights = True
    providers_by_device = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider",)}

    def _ort(self) -> Any:
        from .._onnx import ONNX_EXTRA_HINT, require_onnx

        try:
            return require_onnx()
        except MissingDependencyError:
            raise MissingDependencyError(f"runtime {self.name}: {ONNX_EXTRA_HINT}") from None

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "onnxruntime": self._ort().__version__}

    def providers(self, device: torch.device | str) -> tuple[str, ...]:
        return self.providers_by_device[torch.device(device).type]

    def check(self, device: torch.device | str, mode: str = PREFILL) -> None:
        super().check(device, mode)
        ort = self._ort()
        wanted = self.providers(device)
        missing = [p for p in wanted if p not in ort.get_available_providers()]
        if missing:
            raise MissingDependencyError(
                f"runtime {self.name} on {torch.device(device).type} needs onnxruntime's {', '.join(missing)}, which "
                f"this onnxruntime {ort.__version__} lacks (it has {', '.join(ort.get_available_providers())}): "
                + ("pip install onnxruntime-gpu" if "cuda" in str(device) else "reinstall onnxruntime")
            )

    def release(self) -> None:
        gc.collect()  # the session of the model timed last, and its thread pool

    def device_label(self, device: torch.device | str) -> str:
        return f"{super().device_label(device)} ({', '.join(self.providers(device))})"

    def prepare(self, model: CompressedModel, inputs: dict[str, Any], *, mode: str = PREFILL) -> Callable[[], Any]:
        from .._onnx import _export

        param = next(model.parameters())
        self.check(param.device, mode)
        ort = self._ort()
        folder = Path(tempfile.mkdtemp(prefix="toast-latency-onnx-"))
        path = folder / "model.onnx"
        example = {k: v[:EXPORT_BATCH] if v.shape[0] >= EXPORT_BATCH else v for k, v in inputs.items()}
        if next(iter(example.values())).shape[0] < EXPORT_BATCH:
            example = {k: v.repeat(EXPORT_BATCH, *(1,) * (v.dim() - 1)) for k, v in example.items()}
        try:
            _export(model.eval(), example, path, None)
            session = ort.InferenceSession(
                str(path), session_options(ort), providers=list(self.providers(param.device))
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        names = [i.name for i in session.get_inputs()]
        unknown = [n for n in names if n not in inputs]
        if unknown:
            raise SettingsError(f"the exported graph wants inputs {unknown} the latency batch lacks")
        feed = {n: inputs[n].detach().cpu().numpy() for n in names}

        def call():
            return session.run(None, feed)

        weakref.finalize(call, shutil.rmtree, folder, True)  # an external weights file stays while the session runs
        for _ in range(WARM_CALLS):
            call()
        return call


class TensorRtRuntime(OnnxRuntime):
    name = "onnxruntime-tensorrt"
    help = (
        "ONNX Runtime's TensorRT execution provider (CUDA's for the rest; where onnxruntime-gpu and TensorRT install)"
    )
    devices = ("cuda",)
    providers_by_device = {"cuda": ("TensorrtExecutionProvider", "CUDAExecutionProvider")}


ONNXRUNTIME = register_runtime(OnnxRuntime())
TENSORRT = register_runtime(TensorRtRuntime())
