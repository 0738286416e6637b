"""The conformance suite every registered runtime passes (`check_runtime`).

    from toast.search.runtimes.testing import check_runtime
    check_runtime("onnxruntime", loaded)   # a tiny model of any family (`toast.models.testing`)

It checks that the runtime names its versions, refuses in one line a device type or mode it does not run, and that
a prepared call runs the model: the same outputs as PyTorch eager (within `tolerance`), for the original and a plan
with a translator (a causal LM's decoding step too, where the runtime runs one: its logits as eager's), and that `time_models` times it (a positive time). A runtime that cannot run here (its package
or provider is missing, or the model's device is none it runs on) must say so in one line from `check`
(`MissingDependencyError`, `SettingsError`): the suite then checks that line and returns it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from toast.data import TOKENS
from toast.errors import MissingDependencyError, SettingsError

from ._registry import DECODE, PREFILL, get_runtime

__all__ = ["check_runtime"]


def _arrays(out: Any) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().float().cpu().numpy()]
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _arrays(o)]
    return [np.asarray(out, dtype=np.float32)]


def check_runtime(name: str, loaded: Any, *, tolerance: float = 1e-3, plan_text: str = "0→1:linear") -> str | None:
    """Run the suite on runtime `name` with model `loaded` (see the module); the reason when it cannot run here
    (after checking that `check` says so in one line), else None."""
    from toast.spaces import Plan

    from .._latency import latency_inputs, time_models, timing_model

    runtime = get_runtime(name)
    assert runtime.name == name and runtime.help and runtime.devices and PREFILL in runtime.modes
    try:  # with the model's own dtype: a runtime takes it, and says in one line when it cannot run it
        runtime.check(loaded.device, PREFILL, next(loaded.model.parameters()).dtype)
    except (MissingDependencyError, SettingsError) as exc:  # a package, a provider, the device or dtype it needs
        assert "\n" not in str(exc) and name in str(exc)
        return str(exc)
    versions = runtime.versions()
    assert versions and all(isinstance(k, str) and isinstance(v, str) and v for k, v in versions.items())
    try:
        runtime.check("meta", PREFILL)
    except SettingsError as exc:
        assert "\n" not in str(exc) and "meta" in str(exc)
    else:
        raise AssertionError(f"runtime {name} accepted device type meta")
    if DECODE not in runtime.modes:
        try:
            runtime.check(loaded.device, DECODE)
        except SettingsError as exc:
            assert "\n" not in str(exc) and "decode" in str(exc)
        else:
            raise AssertionError(f"runtime {name} accepted mode decode it does not run")
    inputs = latency_inputs(loaded, batch_size=3, seq_len=8)
    for plan in (Plan((), loaded.num_blocks), Plan.parse(plan_text, loaded.num_blocks)):
        model = timing_model(loaded, plan)
        with torch.inference_mode():
            expected = _arrays(model.export_module()(**inputs))
        got = _arrays(runtime.prepare(model, inputs)())
        runtime.release()
        assert len(got) == len(expected), f"{name}: {len(got)} outputs, eager {len(expected)}"
        for g, e in zip(got, expected):
            assert g.shape == e.shape, f"{name}: output shape {g.shape}, eager {e.shape}"
            assert np.allclose(g, e, atol=tolerance, rtol=tolerance), f"{name} {plan}: {np.abs(g - e).max()}"
        decodes = DECODE in runtime.modes and loaded.family.modality == TOKENS and name != "eager"
        if decodes and plan.spans:  # a causal LM's decoding step too, on the plan with a translator
            expected = _arrays(get_runtime("eager").prepare(model, inputs, mode=DECODE)())[0]
            got = _arrays(runtime.prepare(model, inputs, mode=DECODE)())[0]
            runtime.release()
            assert got.shape == expected.shape, f"{name} decode: logits {got.shape}, eager {expected.shape}"
            assert np.allclose(got, expected, atol=tolerance, rtol=tolerance), f"{name} decode {plan}"
    ms = time_models(runtime, {"m": lambda: timing_model(loaded, plan)}, inputs, warmup=1, repeats=2)
    assert ms["m"] > 0
    return None
