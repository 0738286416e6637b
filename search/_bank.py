"""The fitted translators of a run, one per (span, kind), fitted on first use; trained kinds cached on disk.

Each kind fits through `Translator.fit_span(data)` on a `CapturedSpanData` of the span: closed-form kinds
read its statistics, trained kinds (`mlp`, `resmlp`) stream its token batches from the memory-mapped shards
on the run's device. A kind marked `cached_on_disk` is stored once fitted, per (capture key, span, kind,
hyper-parameters, seed, held-out fraction), as a verified artifact under `<cache root>/translators/`, so
resuming or re-running a study loads it instead of training it again (a damaged entry is refitted).

`refit="sequential"` fits a closed-form span after a plan's first on the states the compressed model itself
produces at its source (the calibration samples run through the plan's earlier spans, fitted the same way),
paired token by token with the capture's target `h_{e+1}`: one pass of that prefix model per (prefix, source),
cached in memory (`passes` counts them), shared by every plan with that prefix. Trained kinds and `folded` are
still fitted on the original model's states (their results, and disk cache entries, are the independent ones).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from toast.spaces import (
    PairStats,
    Plan,
    PlanError,
    Span,
    Translator,
    create_translator,
    load_translator,
    translator_class,
)
from toast.spaces._span_data import HOLDOUT_FRACTION

from ._artifacts import read_artifact, spec_key, write_artifact
from ._errors import CacheError
from .capture import CapturedActivations, CapturedSpanData
from .capture._cache import decode_state

FORMAT_VERSION = 1
REFITS = ("independent", "sequential")
#: `(plan, its fitted translators) -> (sample ids, hidden states, token mask)` batches: the calibration samples,
#: in the capture's order, run through the compressed model of `plan` (`CompressedModel.hidden_states`).
PrefixStates = Callable[[Plan, dict], Iterable[tuple[list[int], list[torch.Tensor], torch.Tensor | None]]]


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
        refit: str = "independent",
        prefix_states: PrefixStates | None = None,
    ) -> None:
        if refit not in REFITS:
            raise ValueError(f"refit must be one of {', '.join(REFITS)}, got {refit!r}")
        if refit == "sequential" and prefix_states is None:
            raise ValueError("refit sequential needs `prefix_states` (how to run a compressed prefix)")
        self.captured = captured
        self.refit, self.prefix_states = refit, prefix_states
        self.device, self.seed, self.holdout = torch.device(device), seed, holdout
        # an activation entry lives at <root>/activations/<key>
        self.cache_root = Path(cache_root) if cache_root is not None else Path(captured.directory).parent.parent
        self.fits = 0
        self.passes = 0  # prefix model passes run (refit sequential)
        self._fitted: dict[Span, Translator] = {}
        self._refitted: dict[tuple[tuple[Span, ...], Span], Translator] = {}
        self._prefix_stats: dict[tuple[tuple[Span, ...], int], dict[int, PairStats]] = {}

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
            prefix = self._prefix(plan, span)
            if prefix is not None:
                if (prefix.spans, span) not in self._refitted:
                    self.fits += 1
                    self._refitted[prefix.spans, span] = create_translator(span.kind).fit(
                        self.prefix_pair(prefix, span)
                    )
                out[span] = self._refitted[prefix.spans, span]
                continue
            if span not in self._fitted:
                self._fitted[span] = self._fit(span)
            out[span] = self._fitted[span]
        return out

    def _prefix(self, plan: Plan, span: Span) -> Plan | None:
        """The plan's spans before `span` (as a plan) where `span` is refitted on them; None: fitted independently."""
        if self.refit != "sequential":
            return None
        kind = translator_class(span.kind)
        if getattr(kind, "needs_activations", False) or kind.fit_span is not Translator.fit_span:
            return None  # trained kinds and `folded` (MLP-branch statistics): fitted on the original's states
        before = tuple(s for s in plan.spans if s.end <= span.start)
        return Plan(before, plan.num_blocks) if before else None

    def prefix_pair(self, prefix: Plan, span: Span) -> PairStats:
        """The statistics of (the compressed `prefix` model's state at `span`'s source, the capture's target)."""
        key = (prefix.spans, span.source)
        if key not in self._prefix_stats:
            self._prefix_stats[key] = self._prefix_pass(prefix, span.source)
        return self._prefix_stats[key][span.target]

    def _prefix_pass(self, prefix: Plan, source: int) -> dict[int, PairStats]:
        """One pass of the compressed `prefix` over the calibration samples: the statistics of its state that
        stands for `h_source` against every later captured state `h_t` (t > source), per t."""
        model_translators = self.get(prefix)
        step = _step_of(prefix, source)
        self.passes += 1
        targets = list(range(source + 1, int(self.captured.manifest["num_states"])))
        acc = _PairAccumulator(len(targets))
        stream = _CapturedTokens(self.captured, targets)
        for ids, states, mask in self.prefix_states(prefix, model_translators):
            h = states[step]
            x = h[mask.to(device=h.device, dtype=torch.bool)] if mask is not None else h.reshape(-1, h.shape[-1])
            samples, ys = stream.take(len(x))
            expected = np.repeat(np.asarray(ids), _tokens_per_sample(h, mask))
            if not np.array_equal(samples, expected):
                raise CacheError("the prefix pass's tokens do not line up with the capture's (sample order differs)")
            acc.update(x, [torch.from_numpy(y).to(x.device) for y in ys])
        if stream.left():
            raise CacheError("the prefix pass covered fewer tokens than the capture holds")
        syy = [self.captured.stats.scatter(t, t) for t in targets]
        return dict(zip(targets, acc.result(syy), strict=True))

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


def _step_of(plan: Plan, state: int) -> int:
    """The index in `CompressedModel.hidden_states` of the state standing for `h_state` (0: the embeddings)."""
    if state == 0:
        return 0
    at = 0
    for i, (kind, x) in enumerate(plan.steps(), start=1):
        at = x + 1 if kind == "block" else x.end + 1
        if at == state:
            return i
    raise PlanError(f"no state of plan {plan} stands for h_{state}")


def _tokens_per_sample(h: torch.Tensor, mask: torch.Tensor | None) -> np.ndarray:
    if mask is None:
        return np.full(h.shape[0], h.shape[1])
    return mask.bool().sum(1).cpu().numpy()


class _CapturedTokens:
    """The capture's tokens in stored order, taken a batch at a time: sample ids and the `states` asked for."""

    def __init__(self, captured: CapturedActivations, states: list[int]) -> None:
        self.captured, self.states = captured, states
        self._batches = self._records()
        self._buffer: list[tuple[np.ndarray, list[np.ndarray]]] = []
        self._held = 0

    def _records(self):
        dim, dtype = self.captured.manifest["dim"], self.captured.manifest["dtype"]
        for path in self.captured.files:
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    yield (
                        batch.column("sample").to_numpy(),
                        [np.asarray(decode_state(batch.column(f"h_{k}"), dim, dtype), np.float32) for k in self.states],
                    )

    def take(self, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        while self._held < n:
            record = next(self._batches, None)
            if record is None:
                raise CacheError("the prefix pass covered more tokens than the capture holds")
            self._buffer.append(record)
            self._held += len(record[0])
        samples = np.concatenate([b[0] for b in self._buffer])
        ys = [np.concatenate([b[1][k] for b in self._buffer]) for k in range(len(self.states))]
        self._buffer = [(samples[n:], [y[n:] for y in ys])] if len(samples) > n else []
        self._held = len(samples) - n
        return samples[:n], [y[:n] for y in ys]

    def left(self) -> bool:
        return self._held > 0 or next(self._batches, None) is not None


class _PairAccumulator:
    """`PairStats` of one source `x` against several targets (the cross-scatters; each target's own scatter is
    given), shifted by the first batch's means, in float64."""

    def __init__(self, num_targets: int) -> None:
        self.k, self.n = num_targets, 0
        self._shift: list[torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, x: torch.Tensor, ys: list[torch.Tensor]) -> None:
        x = x.to(torch.float64)
        ys = [y.to(torch.float64) for y in ys]
        if self._shift is None:
            self._shift = [x.mean(0)] + [y.mean(0) for y in ys]
            d = x.shape[1]
            self._sx = torch.zeros(d, dtype=torch.float64, device=x.device)
            self._sxx = torch.zeros(d, d, dtype=torch.float64, device=x.device)
            self._sy = [torch.zeros_like(self._sx) for _ in ys]
            self._sxy = [torch.zeros_like(self._sxx) for _ in ys]
        xc = x - self._shift[0]
        self._sx += xc.sum(0)
        self._sxx += xc.T @ xc
        for j, y in enumerate(ys):
            yc = y - self._shift[j + 1]
            self._sy[j] += yc.sum(0)
            self._sxy[j] += xc.T @ yc
        self.n += len(x)

    def result(self, syy: list[np.ndarray]) -> list[PairStats]:
        """The statistics per target; each target's own scatter `syy` is the capture's (it needs no prefix pass)."""
        n = self.n
        if not n:
            raise CacheError("the prefix pass saw no tokens")
        mx = self._sx / n
        sxx = self._sxx - n * torch.outer(mx, mx)
        out = []
        for j in range(self.k):
            my = self._sy[j] / n
            out.append(
                PairStats(
                    n,
                    (self._shift[0] + mx).cpu().numpy(),
                    (self._shift[j + 1] + my).cpu().numpy(),
                    sxx.cpu().numpy(),
                    (self._sxy[j] - n * torch.outer(mx, my)).cpu().numpy(),
                    syy[j],
                )
            )
        return out
