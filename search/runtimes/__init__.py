"""The runtimes latency is measured in, one module each, registered on import (`--runtime NAME`).

`eager` (PyTorch, module by module: the default), `compile` (`torch.compile`), `onnxruntime` (the exported graph on
the CPU or CUDA execution provider) and `onnxruntime-tensorrt`. A new runtime is one module here that calls
`register_runtime`; `toast.search.runtimes.testing.check_runtime` is the suite it must pass.
"""

# registration order: the order `--help` lists them, the default first
from . import _eager  # noqa: F401, I001
from . import _compile, _onnxruntime  # noqa: F401
from ._eager import decode_call, forward_call
from ._registry import (
    DECODE,
    PREFILL,
    RUNTIMES,
    Runtime,
    device_memory,
    device_name,
    dtype_name,
    get_runtime,
    list_runtimes,
    register_runtime,
)

__all__ = [
    "DECODE",
    "PREFILL",
    "RUNTIMES",
    "Runtime",
    "decode_call",
    "device_memory",
    "device_name",
    "dtype_name",
    "forward_call",
    "get_runtime",
    "list_runtimes",
    "register_runtime",
]
