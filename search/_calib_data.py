"""Translators fitted on other data (`calib_dataset`, `calib_split`): the calibration split, apart from the probe's.

The calibration samples are drawn from `calib_dataset` (its `calib_split`, by default its train split) while the
probe and the evaluation use `dataset`; with neither given, from `dataset`'s train split, as before. The
capture's cache key carries the calibration split (its fingerprint and name), `settings.json` both datasets,
and `front.json` says which data the translators were fitted on (`calibration_record`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..capture import ActivationCache, check_modality
from ..data import default_splits, load_split
from ..errors import DatasetError

if TYPE_CHECKING:
    from ..data import LabeledSplit
    from ..models import Family
    from ._settings import SearchSettings

__all__ = ["calibration_record", "load_calibration_split"]


def load_calibration_split(settings: SearchSettings, train: LabeledSplit, family: Family) -> LabeledSplit:
    """The split the translators are fitted on: `train` itself unless `calib_dataset` or `calib_split` is given.
    A dataset that cannot be read, or holds what the model does not take, fails here (before any weight is read)."""
    if settings.data.calib_dataset is None and settings.data.calib_split is None:
        return train
    name = settings.data.calib_dataset or settings.data.dataset
    split = settings.data.calib_split or default_splits(name)[0]
    same = name == settings.data.dataset
    if same and split == train.split:
        return train
    # the columns given for `dataset` hold for its own splits; another dataset's are found by their types
    columns = {"input_column": settings.data.input_column, "label_column": settings.data.label_column} if same else {}
    try:
        calib = load_split(name, split, cache_dir=ActivationCache(settings.cache_dir).root, **columns)
        check_modality(family, calib, settings.data.model)
    except DatasetError as exc:
        raise DatasetError(f"`calib_dataset` {name!r}, split {split!r}: {_without_split_hint(str(exc))}") from None
    return calib


def _without_split_hint(message: str) -> str:
    """The calibration split is chosen by `calib_split`, not by the hint's `split_train` / `split_test`."""
    return message.replace("pass `split_train` / `split_test`", "pass `calib_split`")


def calibration_record(calib: LabeledSplit | None, train: LabeledSplit, samples: int | None) -> dict:
    """What front.json says of the data the translators were fitted on."""
    calib = calib or train
    return {
        "dataset": calib.name,
        "split": calib.split,
        "fingerprint": calib.fingerprint,
        "input_column": calib.input_column,
        "samples": samples,
        "same_as_probe_data": calib.fingerprint == train.fingerprint and calib.split == train.split,
    }
