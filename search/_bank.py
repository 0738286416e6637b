"""The fitted translators of a run, one per (span, kind), fitted on first use; trained kinds cached on disk.

Each kind fits through `Translator.fit_span(data)` on a `CapturedSpanData` of the span: closed-form kinds
read its statistics, trained kinds (`mlp`, `resmlp`) stream its token batches from the memory-mapped shards
on the run's device. A kind marked `cached_on_disk` is stored once fitted, per (capture key, span, kind,
hyper-parameters, seed, held-out fraction), as a verified artifact under `<cache root>/translators/`, so
resuming or re-running a study loads it instead of training it again (a damaged entry is refitted).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from toast.spaces import Plan, PlanError, Span, Translator, create_translator, load_translator, translator_class
from toast.spaces._span_data import HOLDOUT_FRACTION

from ._artifacts import read_artifact, spec_key, write_artifact
from ._errors import CacheError
from .capture import CapturedActivations, CapturedSpanData

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FittedTranslatorSpec:
    """Everything that determines a cached fitted translator; its hash is the entry's key."""

    capture: str  # the activation cache entry's key
    span: tuple[int, int]
    kind: str
    params: str  # the hyper-parameters, as canonical JSON
    seed: int
    holdout: float
    version: int = FORMAT_VERSION

    @property
    def key(self) -> str:
        return spec_key(self)


class TranslatorBank:
    """Fitted translators, one per (span, kind), from the calibration activations; fitted on first use.

    `device` and `seed` are those trained kinds train with; `cache_root` (default: the activation cache's
    root) holds the fitted translators of `cached_on_disk` kinds. `fits` counts the fits this bank ran.
    """

    def __init__(
        self,
        captured: CapturedActivations,
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
        cache_root: str | Path | None = None,
        holdout: float = HOLDOUT_FRACTION,
    ) -> None:
        self.captured = captured
        self.device, self.seed, self.holdout = torch.device(device), seed, holdout
        # an activation entry lives at <root>/activations/<key>
        self.cache_root = Path(cache_root) if cache_root is not None else Path(captured.directory).parent.parent
        self.fits = 0
        self._fitted: dict[Span, Translator] = {}

    def get(self, plan: Plan) -> dict[Span, Translator]:
        """The fitted translators of `plan`'s spans; kinds that need no fit are left to the compressed model."""
        out = {}
        for span in plan.spans:
            kind = translator_class(span.kind)
            reason = kind.refuse_span(span, plan)
            if reason:  # before any fit: a refused span has no data to fit on
                raise PlanError(f"invalid plan: {reason}")
            if not kind.needs_fit:
                continue
            if span not in self._fitted:
                self._fitted[span] = self._fit(span)
            out[span] = self._fitted[span]
        return out

    def data(self, span: Span) -> CapturedSpanData:
        """What a translator of `span` is fitted from."""
        return CapturedSpanData(self.captured, span, device=self.device, seed=self.seed, holdout=self.holdout)

    def path(self, span: Span, translator: Translator) -> tuple[Path, FittedTranslatorSpec]:
        """Where a fitted `translator` of `span` is cached, and its spec."""
        spec = FittedTranslatorSpec(
            capture=str(self.captured.manifest["key"]),
            span=(span.start, span.end),
            kind=span.kind,
            params=json.dumps(translator.get_params(), sort_keys=True, default=list),
            seed=self.seed,
            holdout=self.holdout,
        )
        return self.cache_root / "translators" / spec.key, spec

    def _fit(self, span: Span) -> Translator:
        translator = create_translator(span.kind)
        if not translator.cached_on_disk:
            self.fits += 1
            return translator.fit_span(self.data(span))
        directory, spec = self.path(span, translator)
        what = f"fitted translator {directory}"
        if directory.exists():
            try:
                read_artifact(directory, spec.key, what)
                return load_translator(directory)
            except (CacheError, ValueError, OSError) as exc:
                warnings.warn(f"{exc}; refitting", stacklevel=3)
                shutil.rmtree(directory, ignore_errors=True)
        start = time.perf_counter()
        self.fits += 1
        translator.fit_span(self.data(span))
        with write_artifact(directory, spec.key, what) as out:
            translator.save(out.directory)
            out.manifest.update(
                {
                    "spec": {**asdict(spec), "span": list(spec.span)},
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
        return translator
