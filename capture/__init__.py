"""Capture: the calibration pass of the original model, and the verified activation cache it fills."""

from ._cache import ActivationCache, CapturedActivations, CaptureSpec, decode_state, memory_plan_bytes
from ._calibration import (
    CalibrationSettings,
    calibrate,
    capture_spec,
    check_modality,
    observe_calibration,
    resolve_device,
)
from ._prefix import PrefixStore, PrefixWriter, default_cap_bytes
from ._span_data import CapturedSpanData

__all__ = [
    "ActivationCache",
    "CalibrationSettings",
    "CaptureSpec",
    "CapturedActivations",
    "CapturedSpanData",
    "PrefixStore",
    "PrefixWriter",
    "calibrate",
    "capture_spec",
    "check_modality",
    "decode_state",
    "default_cap_bytes",
    "memory_plan_bytes",
    "observe_calibration",
    "resolve_device",
]
