"""Capture: the calibration pass of the original model, and the verified activation cache it fills."""

from ._cache import ActivationCache, CapturedActivations, CaptureSpec
from ._calibration import CalibrationSettings, calibrate, capture_spec, check_modality, resolve_device
from ._span_data import CapturedSpanData

__all__ = [
    "ActivationCache",
    "CalibrationSettings",
    "CaptureSpec",
    "CapturedActivations",
    "CapturedSpanData",
    "calibrate",
    "capture_spec",
    "check_modality",
    "resolve_device",
]
