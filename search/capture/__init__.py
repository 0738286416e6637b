"""Capture: the calibration pass of the original model, and the verified activation cache it fills."""

from ._cache import ActivationCache, CapturedActivations, CaptureSpec
from ._calibration import CalibrationSettings, calibrate, capture_spec, check_modality, resolve_device

__all__ = [
    "ActivationCache",
    "CalibrationSettings",
    "CaptureSpec",
    "CapturedActivations",
    "calibrate",
    "capture_spec",
    "check_modality",
    "resolve_device",
]
