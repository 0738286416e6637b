"""Capture: the calibration pass of the original model, and the verified activation cache it fills."""

from ._cache import (
    ActivationCache,
    CapturedActivations,
    CapturePlan,
    CaptureSpec,
    decode_state,
    memory_plan_bytes,
    plan_capture,
)
from ._calibration import (
    CalibrationSettings,
    calibrate,
    capture_spec,
    check_modality,
    observe_calibration,
    resolve_device,
)
from ._estimate import (
    CaptureShape,
    ResourceEstimate,
    check_fits,
    count_params_on_meta,
    estimate_resources,
    matmul_flops_per_second,
    meta_model,
)
from ._prefix import PrefixStore, PrefixWriter, default_cap_bytes
from ._span_data import CapturedSpanData

__all__ = [
    "ActivationCache",
    "CalibrationSettings",
    "CapturePlan",
    "CaptureShape",
    "CaptureSpec",
    "CapturedActivations",
    "CapturedSpanData",
    "PrefixStore",
    "PrefixWriter",
    "ResourceEstimate",
    "calibrate",
    "capture_spec",
    "check_fits",
    "check_modality",
    "count_params_on_meta",
    "decode_state",
    "default_cap_bytes",
    "estimate_resources",
    "matmul_flops_per_second",
    "memory_plan_bytes",
    "meta_model",
    "observe_calibration",
    "plan_capture",
    "resolve_device",
]
