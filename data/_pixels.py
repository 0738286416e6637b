"""Compact storage of preprocessed pixels: the uint8 crop and a table of its levels, else float16, else float32.

A processor's float32 `pixel_values` are, in both Transformers backends, a per-channel function of the uint8
crop: `(crop * rescale_factor - image_mean) / image_std`, in the PIL backend's arithmetic (rescaled in float64,
normalised in float32) or the torchvision backend's (mean and std divided by the factor, one float32 pass).
`levels(processor)` computes both tables, 256 values per channel, from the processor's own fields; `choose`
keeps the one that reproduces the first batch (exactly, for either backend) and stores each value as the uint8
index of its level, 4x smaller than float32. Every batch is checked on encoding, so a value no level reproduces
is never stored as one. Where no table fits (a crop that is not integer-valued, processor options we do not
know), the values are stored as float16 when that is exact enough, else as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: uint8 storage: the largest |decoded - processor output| accepted (float32 rounding of values near 1 is 6e-8).
UINT8_TOLERANCE = 1e-5
#: float16 storage: the largest error accepted, relative to the largest |value| (float16 rounds to 4.9e-4 of it).
FLOAT16_TOLERANCE = 1e-3


class NotRepresentable(Exception):
    """A batch the storage chosen on the first batch cannot hold within its tolerance."""


def levels(processor: Any, channels: int) -> list[np.ndarray]:
    """Candidate `(channels, 256)` float32 tables: the processor's output for each uint8 value of each channel,
    in the PIL backend's arithmetic and in the torchvision backend's. Empty when the processor has no such fields."""
    import torch

    try:
        do_rescale, do_normalize = bool(processor.do_rescale), bool(processor.do_normalize)
        scale = float(processor.rescale_factor) if do_rescale else 1.0
        mean = (
            np.broadcast_to(np.asarray(processor.image_mean, dtype=np.float64), (channels,)) if do_normalize else None
        )
        std = np.broadcast_to(np.asarray(processor.image_std, dtype=np.float64), (channels,)) if do_normalize else None
    except (AttributeError, TypeError, ValueError):
        return []
    v = np.arange(256)
    # PIL backend: image_transforms.rescale (float64, then float32) and normalize (float32)
    pil = np.tile((v * scale if do_rescale else v).astype(np.float32), (channels, 1))
    if do_normalize:
        pil = (pil - mean.astype(np.float32)[:, None]) / std.astype(np.float32)[:, None]
    # torchvision backend: rescale folded into mean and std, then tvF.normalize in float32
    t = torch.arange(256).expand(channels, 256)
    if do_normalize:
        m, s = torch.tensor(mean.tolist()), torch.tensor(std.tolist())
        if do_rescale:
            m, s = m * (1.0 / scale), s * (1.0 / scale)
        tv = (t.float() - m[:, None]) / s[:, None]
    else:
        tv = t * scale if do_rescale else t.float()
    return [pil.astype(np.float32), tv.float().numpy()]


@dataclass(frozen=True)
class Storage:
    """How one input is stored: `form` (`uint8` with its `table`, `float16`, or the values' own dtype)."""

    form: str
    table: np.ndarray | None = None  # uint8 only: (channels, 256) float32

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, float]:
        """The stored array and its largest absolute error; `NotRepresentable` beyond the tolerance."""
        if self.form == "uint8":
            return self._to_levels(values)
        if self.form == "float16":
            with np.errstate(over="ignore"):
                stored = values.astype(np.float16)
            err = _error(stored, values)
            if not err <= FLOAT16_TOLERANCE * max(float(np.abs(values).max(initial=0.0)), 1.0):
                raise NotRepresentable(f"float16 is {err:.2g} off")
            return stored, err
        return values, 0.0

    def _to_levels(self, values: np.ndarray) -> tuple[np.ndarray, float]:
        if values.ndim != 4 or values.shape[1] != self.table.shape[0]:
            raise NotRepresentable(f"shape {values.shape} is not (n, {self.table.shape[0]}, h, w)")
        out = np.empty(values.shape, dtype=np.uint8)
        err = 0.0
        for c, table in enumerate(self.table):
            order = np.argsort(table, kind="stable")
            ranked = table[order]
            x = values[:, c]
            hi = np.clip(np.searchsorted(ranked, x), 1, 255)  # nearest level: ranked[hi - 1] or ranked[hi]
            pick = np.where(np.abs(ranked[hi] - x) < np.abs(ranked[hi - 1] - x), hi, hi - 1)
            out[:, c] = order[pick]
            err = max(err, float(np.abs(ranked[pick] - x).max(initial=0.0)))
        if not err <= UINT8_TOLERANCE:  # also refuses NaN
            raise NotRepresentable(f"the uint8 levels are {err:.2g} off")
        return out, err

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, stored: np.ndarray, dtype: str) -> np.ndarray:
        """The values readers return (in `dtype`) from the stored array."""
        if self.form == "uint8":
            out = np.empty(stored.shape, dtype=np.float32)
            for c, table in enumerate(self.table):
                np.take(table, stored[:, c], out=out[:, c])
            return out
        if self.form == "float16":
            return stored.astype(dtype)
        return stored

    # -- the manifest's record --------------------------------------------------------------------

    def to_json(self) -> dict:
        out: dict = {"storage": self.form}
        if self.table is not None:
            out["levels"] = self.table.tolist()  # float32 values as doubles: exact round trip
        return out

    @classmethod
    def from_json(cls, info: dict) -> Storage:
        """From an input's manifest record; entries written before compact storage hold their dtype as is."""
        form = info.get("storage", info["dtype"])
        table = np.asarray(info["levels"], dtype=np.float32) if form == "uint8" else None
        return cls(form, table)


def _error(stored: np.ndarray, values: np.ndarray) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.abs(stored.astype(np.float64) - values).max(initial=0.0)
    return float(err) if np.isfinite(err) else float("inf")


def choose(name: str, first: np.ndarray, processor: Any, *, forms: tuple[str, ...] = ("uint8", "float16")) -> Storage:
    """The storage for input `name`, decided on its first batch `first`: pixels as uint8 levels when a table of
    the processor's fields reproduces them (the closest table: exact for either backend), else float16 when
    within tolerance, else as they are. `forms`: the compact forms allowed."""
    if name != "pixel_values" or first.dtype != np.float32:
        return Storage(str(first.dtype))
    if "uint8" in forms and first.ndim == 4:
        fits = []
        for table in levels(processor, first.shape[1]):
            try:
                fits.append((Storage("uint8", table).encode(first)[1], len(fits), table))
            except NotRepresentable:
                continue
        if fits:
            return Storage("uint8", min(fits)[2])
    if "float16" in forms:
        try:
            Storage("float16").encode(first)
            return Storage("float16")
        except NotRepresentable:
            pass
    return Storage(str(first.dtype))
