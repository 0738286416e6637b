"""Translator kinds: the base estimator, the registry's typed API (its table is `_kinds`), and a fitted
translator's save and load.

Each kind is an estimator (`fit(stats) -> self`, learned `weight_` and `bias_`, `y = x @ weight_ + bias_`)
in its own module that registers itself (`_identity`, `_linear`, `_ridge`). A kind owns its fit,
whether it needs one (`needs_fit`), its `nn.Module` (`empty_module`, `to_module`), its cost (`cost`)
and its save/load (`save`, `load`); nothing outside a kind's module tests for a kind's name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch
from torch import nn

from ..errors import NotFittedError, PlanError
from ._kinds import add_kind, kind_class, kind_names, registered_kind
from ._stats import PairStats

if TYPE_CHECKING:
    from ._plan import Plan, Span
    from ._span_data import SpanData
    from ._stats import ActivationStats

log = logging.getLogger("toast")
_reported: set[str] = set()
T = TypeVar("T", bound=type["Translator"])


def report_once(key: str, message: str) -> None:
    """Say an expected condition once per process, as one plain line: logger ``"toast"``, level WARNING.

    Not a Python warning (no source lines). With logging left unconfigured, Python's last-resort
    handler writes the bare message to stderr; an application that configures logging routes it.
    """
    if key not in _reported:
        _reported.add(key)
        log.warning(message)


SAVE_FORMAT_VERSION = 1
CONFIG_NAME = "translator.json"  # kind, hyper-parameters and fitted scalars
ARRAYS_NAME = "translator.safetensors"  # fitted arrays (float64, as fitted)


def register_translator(name: str) -> Callable[[T], T]:
    """Class decorator: make a translator kind available under `name`."""

    def wrap(cls: T) -> T:
        add_kind(name, cls)
        return cls

    return wrap


def list_translators() -> list[str]:
    """Names of the registered translator kinds (a parametrized one bare: `lowrank`, written `lowrank:r`)."""
    return kind_names()


def kind_parameter(kind: str) -> str | None:
    """What the `:param` of a kind string of `kind`'s name stands for (`"rank"` for `lowrank`), None if it takes none."""
    return registered_kind(kind)[0].parameter


def translator_class(kind: str) -> type[Translator]:
    """The class of kind string `kind` (`name`, or `name:param` as `lowrank:96`): ask it for its module, cost
    or whether it needs a fit. A parametrized kind's class carries its parameter (`translator_class("lowrank:96")`
    is the `lowrank` class bound to rank 96, one class per kind string)."""
    return kind_class(kind)


def create_translator(kind: str, **params) -> Translator:
    """A new, unfitted translator of `kind`."""
    return translator_class(kind)(**params)


class TranslatorCost(NamedTuple):
    """FLOPs (fvcore convention, as the papers: one multiply-add = one FLOP) and parameters of one translator."""

    flops: int
    params: int


class Translator:
    """Base class: an affine map fitted in closed form from `PairStats`, run as an `nn.Linear`.

    A kind overrides `fit`, and whatever of `needs_fit`, `empty_module`, `to_module`, `cost`,
    `save` and `load` differs from this affine default.
    """

    kind: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = True  # False: `empty_module(dim)` already computes the map, nothing is fitted
    needs_activations: ClassVar[bool] = False  # True: trained on `fit_span(data)`'s token batches; no `fit(stats)`
    cached_on_disk: ClassVar[bool] = False  # True: a costly fit, which the search keeps under its cache root
    needs_branches: ClassVar[bool] = False  # True: fitted from MLP-branch statistics (captured only when a kind asks)
    needs_source_block: ClassVar[bool] = False  # True: a span s→e needs block s kept (s >= 0, no span ends at s)
    parameter: ClassVar[str | None] = (
        None  # what a kind string's `:param` stands for (`lowrank:96`: "rank"); None: none
    )
    weight_: np.ndarray
    bias_: np.ndarray

    @classmethod
    def from_spec(cls, param: str | None) -> type[Translator]:
        """The class of kind string `name:param` (`param` None for a bare `name`); this default takes no parameter."""
        if param is not None:
            raise PlanError(
                f"translator kind {cls.kind!r} takes no parameter, got {cls.kind + ':' + param!r} "
                f"(a kind string is `name`, or `name:param` for a parametrized kind such as lowrank:96)"
            )
        return cls

    def fit(self, stats: PairStats) -> Translator:
        """Learn the map from the statistics of a (source, target) pair; return self."""
        raise NotImplementedError

    # ---- where a kind applies, and how it enters a compressed model (defaults: anywhere, as its own module) ----
    @classmethod
    def refuse_span(cls, span: Span, plan: Plan | None = None) -> str | None:
        """Why this kind cannot take `span` (in `plan`, when given), as one line naming the rule; None if it can."""
        return None

    @classmethod
    def refuse_family(cls, family: Any, block: Any) -> str | None:
        """Why this kind cannot apply to a model of `family` (a `toast.models.Family`, one of its blocks
        given), as one line; None if it can."""
        return None

    @classmethod
    def span_stats(cls, stats: ActivationStats, span: Span) -> PairStats:
        """The pair statistics of `stats` that `fit` reads for `span` (a ranking of spans fits from them)."""
        return stats.pair(span.source, span.target)

    def fold_into(self, block: Any, family: Any) -> Any:
        """A replacement for the span's source block `span.start` (a copy; `block` is left as it is), or None:
        the kind runs as its own module only (the default)."""
        return None

    def fit_span(self, data: SpanData) -> Translator:
        """Learn the map for one span from `data` (a `toast.spaces.SpanData`); return self.

        The default is `fit(data.stats)`: a closed-form kind reads the statistics only. A trained kind
        (`needs_activations`) overrides it to stream `data.batches(...)`.
        """
        return self.fit(data.stats)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "weight_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(stats) first")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Apply the map to rows of `x` (float64)."""
        self._require_fitted()
        return np.asarray(x, dtype=np.float64) @ self.weight_ + self.bias_

    def residual(self, stats: PairStats) -> float:
        """Mean squared error per token and feature on the statistics' own samples."""
        self._require_fitted()
        w, b = self.weight_, self.bias_
        # Σ||y - xW - b||² with centered terms: tr(Syy) - 2tr(WᵀSxy) + tr(WᵀSxxW) + n||ȳ - x̄W - b||²
        offset = stats.mean_y - stats.mean_x @ w - b
        sse = np.trace(stats.syy) - 2 * np.sum(w * stats.sxy) + np.sum(w * (stats.sxx @ w)) + stats.n * offset @ offset
        return float(max(sse, 0.0) / (stats.n * len(b)))

    def to_module(self) -> nn.Module:
        """The fitted map as a float32 `nn.Module` (move it with `.to(device, dtype)`)."""
        self._require_fitted()
        return affine_module(self.weight_, self.bias_)

    @classmethod
    def empty_module(cls, dim: int) -> nn.Module:
        """A module of this kind's shape for width `dim`, to load saved weights into (a compressed model's checkpoint)."""
        return nn.Linear(dim, dim)

    @classmethod
    def cost(cls, dim: int, tokens: int) -> TranslatorCost:
        """FLOPs and params of this kind's module over `tokens` tokens of width `dim` (fvcore's count of `nn.Linear`)."""
        return TranslatorCost(flops=tokens * dim * dim, params=dim * dim + dim)

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters given to `__init__` (attributes not ending in `_`)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def save(self, directory: str | Path) -> Path:
        """Write the fitted translator to `directory`: arrays as safetensors, kind and the rest as JSON."""
        from safetensors.numpy import save_file

        self._require_fitted()
        arrays = {k: np.ascontiguousarray(v) for k, v in self._fitted_arrays().items()}
        fitted = {
            name: _json_value(value, f"{type(self).__name__}.{name}")
            for name, value in vars(self).items()
            if name.endswith("_") and not isinstance(value, (np.ndarray, dict))
        }
        params = {k: _json_value(v, f"{type(self).__name__}({k}=...)") for k, v in self.get_params().items()}
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": SAVE_FORMAT_VERSION, "kind": self.kind, "params": params, "fitted": fitted}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        save_file(arrays, str(directory / ARRAYS_NAME))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Translator:
        """Restore a translator of this kind written by `save` (use `load_translator` for any kind)."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        meta = _read_config(directory)
        if meta["kind"] != cls.kind:
            raise ValueError(f"{directory} holds a {meta['kind']!r} translator, not {cls.kind!r}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
        translator = cls(**params)
        for name, value in meta["fitted"].items():
            setattr(translator, name, value)
        translator._restore_arrays(load_file(str(directory / ARRAYS_NAME)))
        return translator

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays `save` writes as safetensors: every array attribute ending in `_` (a kind with
        other learned state overrides this and `_restore_arrays`)."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and isinstance(v, np.ndarray)}

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Set what `_fitted_arrays` gave back on a translator being loaded."""
        for name, value in arrays.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def _json_value(value: Any, what: str) -> Any:
    """`value` as JSON (tuples as lists, numpy scalars as Python ones), or a TypeError naming `what`."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (tuple, list)):
        return [_json_value(v, what) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{what} is a {type(value).__name__}, which the default save cannot write: override save and load")


def _read_config(directory: Path) -> dict[str, Any]:
    """The JSON that `Translator.save` wrote in `directory`, checked for its format version."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} holds no saved translator (no {CONFIG_NAME})")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != SAVE_FORMAT_VERSION:
        raise ValueError(
            f"{path}: translator format version {meta.get('format_version')!r}, this version reads {SAVE_FORMAT_VERSION}"
        )
    return meta


def load_translator(directory: str | Path) -> Translator:
    """Restore a fitted translator of any registered kind from a directory written by `Translator.save`."""
    return translator_class(_read_config(Path(directory))["kind"]).load(directory)


class NoModule:
    """Mixin of kinds that add no module to the compressed model (the span's step passes its input on):
    `nn.Identity` fitted or empty, no parameters, no FLOPs."""

    def to_module(self) -> nn.Module:
        """`nn.Identity`."""
        self._require_fitted()
        return nn.Identity()

    @classmethod
    def empty_module(cls, dim: int) -> nn.Module:
        """`nn.Identity` (no weights to load)."""
        return nn.Identity()

    @classmethod
    def cost(cls, dim: int, tokens: int) -> TranslatorCost:
        """Nothing: no parameters, no FLOPs."""
        return TranslatorCost(flops=0, params=0)


def affine_module(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    """`nn.Linear` computing `x @ weight + bias`."""
    d_in, d_out = weight.shape
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer


def fit_span(stats, span, **params) -> Translator:
    """Fit a translator of `span.kind` for `span` from `ActivationStats` (no activation is re-read)."""
    return create_translator(span.kind, **params).fit(stats.pair(span.source, span.target))
