"""`onnxruntime` and `onnxruntime-tensorrt`: the model exported to ONNX (`toast-search export --format onnx`'s
exporter: the torch.export-based one, dynamic batch and sequence axes) and run by an ONNX Runtime session, on the CPU
execution provider (`--device cpu`), CUDA's (`--device cuda`) or TensorRT's (`onnxruntime-tensorrt`, CUDA behind it
for what TensorRT does not take). The session uses as many intra-op threads as torch does (`torch.get_num_threads`),
so a table names one thread count for every runtime. Inputs are fed as host arrays, as a server fed by a network
does. A decoding step (`--latency-mode decode`) runs the LM's step graph with its KV cache as inputs and outputs
(`CompressedModel.decode_module`, the graph an ONNX Runtime LM server runs: `past_key_values.<layer>.key` in,
`present.<layer>.key` out), fed the cache of the inputs' tokens, one new token per sequence. The graph's cache keeps
every token of a sliding-window layer too (its window is the mask's): past the window it would read more than the
model's own trimmed cache, so a decode with `seq_len` at or over a sliding window is refused.

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

from toast.errors import MissingDependencyError, SettingsError, UnsupportedModelError

from ._registry import DECODE, PREFILL, Runtime, dtype_name, register_runtime

if TYPE_CHECKING:
    from toast.models import CompressedModel

__all__ = ["OnnxRuntime", "session_options"]

#: (device type, dtype) pairs whose graphs onnxruntime's provider there cannot run, and why (read off onnxruntime
#: 1.32's CPU provider: a bfloat16 graph of demo-vit fails at Conv, demo-lm's at Mul, all-MiniLM's at Add; float16
#: runs). Others (bfloat16 on CUDA's provider, where kernels exist for some operators) are tried, and refused in one
#: line when the session cannot be made (`OnnxRuntime._session`).
UNSUPPORTED_DTYPES = {("cpu", "bfloat16"): "its CPU execution provider has no bfloat16 kernels (Add, Mul, Conv)"}
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
    modes = (PREFILL, DECODE)
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

    def check(self, device: torch.device | str, mode: str = PREFILL, dtype: Any = None) -> None:
        super().check(device, mode, dtype)
        kind, name = torch.device(device).type, dtype_name(dtype)
        reason = UNSUPPORTED_DTYPES.get((kind, name))
        if reason:
            raise SettingsError(
                f"runtime {self.name} cannot run a model in {name} on {kind}: {reason}; time it in "
                f"{' or '.join(d for d in ('float32', 'float16') if (kind, d) not in UNSUPPORTED_DTYPES)} (--dtype), "
                "or in runtime eager or compile"
            )
        ort = self._ort()
        wanted = self.providers(device)
        missing = [p for p in wanted if p not in ort.get_available_providers()]
        if missing:
            raise MissingDependencyError(
                f"runtime {self.name} on {torch.device(device).type} needs onnxruntime's {', '.join(missing)}, which "
                f"this onnxruntime {ort.__version__} lacks (it has {', '.join(ort.get_available_providers())}): "
                + ("pip install onnxruntime-gpu" if "cuda" in str(device) else "reinstall onnxruntime")
            )

    def check_model(self, family: Any, config: Any, mode: str = PREFILL, seq_len: int | None = None) -> None:
        if mode != DECODE or seq_len is None:
            return
        kinds = getattr(family, "layer_types", lambda config: ())(config)
        window = getattr(config, "sliding_window", None)
        if window is not None and any(kind != "full_attention" for kind in kinds) and seq_len >= window:
            raise UnsupportedModelError(
                f"runtime {self.name} cannot time {family.name}'s decode step after {seq_len} cached tokens: its "
                f"sliding-window layers see the last {window}, and the exported step's cache keeps every token (a "
                f"graph cannot trim it), so it would read more than the model's own; time fewer than {window} cached tokens "
                "(--seq-len, or --latency-seq-len in a search), or decode in runtime eager or compile"
            )

    def _session(self, ort: Any, path: Path, param: torch.Tensor) -> Any:
        """The inference session of the graph at `path`; a graph the providers have no kernels for (an operator in
        the weights' dtype: bfloat16 on CUDA's provider) refused in one line, naming the operator."""
        providers = list(self.providers(param.device))
        try:
            return ort.InferenceSession(str(path), session_options(ort), providers=providers)
        except Exception as e:
            if type(e).__name__ not in ("NotImplemented", "InvalidGraph", "Fail"):
                raise
            said, name = " ".join(str(e).split()), dtype_name(param.dtype)
            instead = "" if name == "float32" else "in float32 (--dtype), or "
            raise UnsupportedModelError(
                f"runtime {self.name} ({', '.join(providers)}) cannot run this model in {name}: {said[:300]}; time "
                f"it {instead}in runtime eager or compile"
            ) from None

    def release(self) -> None:
        gc.collect()  # the session of the model timed last, and its thread pool

    def device_label(self, device: torch.device | str) -> str:
        return f"{super().device_label(device)} ({', '.join(self.providers(device))})"

    def prepare(self, model: CompressedModel, inputs: dict[str, Any], *, mode: str = PREFILL) -> Callable[[], Any]:
        from .._onnx import _export, export_decode_graph, step_example, trace_example

        param = next(model.parameters())
        self.check(param.device, mode)
        ort = self._ort()
        folder = Path(tempfile.mkdtemp(prefix="toast-latency-onnx-"))
        path = folder / "model.onnx"
        try:
            if mode == DECODE:
                feed = _decode_feeds(model.eval(), inputs)
                export_decode_graph(model, step_example(model), path)
            else:
                _export(model.eval(), trace_example(inputs), path, None)
                feed = None
            session = self._session(ort, path, param)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        names = [i.name for i in session.get_inputs()]
        if feed is None:
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


def _decode_feeds(model: CompressedModel, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The decoding step timed: the inputs' tokens cached by the model in PyTorch, then one new token per sequence
    (the last one) fed with that cache, as a server feeds the graph its own `present` outputs."""
    from toast.models import graph_cache

    graph = model.decode_module()
    prompt = inputs["input_ids"]
    cache = graph_cache()
    with torch.inference_mode():
        model.decode_step(prompt, cache)
    names = graph.input_names
    past = {n: t.cpu().numpy() for n, t in zip(names[1:], graph.cache_tensors(cache))}
    return {names[0]: prompt[:, -1:].cpu().numpy(), **past}


class TensorRtRuntime(OnnxRuntime):
    name = "onnxruntime-tensorrt"
    help = (
        "ONNX Runtime's TensorRT execution provider (CUDA's for the rest; where onnxruntime-gpu and TensorRT install)"
    )
    devices = ("cuda",)
    providers_by_device = {"cuda": ("TensorrtExecutionProvider", "CUDAExecutionProvider")}


ONNXRUNTIME = register_runtime(OnnxRuntime())
TENSORRT = register_runtime(TensorRtRuntime())
