"""The fitted translators of a run, one per (span, kind), fitted on first use; trained kinds cached on disk.

Each kind fits through `Translator.fit_span(data)` on a `CapturedSpanData` of the span: closed-form kinds
read its statistics, trained kinds (`mlp`, `resmlp`) stream its token batches from the memory-mapped shards
on the run's device. A kind marked `cached_on_disk` is stored once fitted, per (capture key, span, kind,
hyper-parameters, seed, held-out fraction), as a verified artifact under `<cache root>/translators/`, so
resuming or re-running a study loads it instead of training it again (a damaged entry is refitted).

`refit="sequential"` fits every span after a plan's first on the states the compressed model itself produces
at its source (the calibration samples run through the plan's earlier spans, fitted the same way), paired
token by token with the capture's target `h_{e+1}`: one pass of that prefix model per (prefix, source), shared
by every plan with that prefix (`passes` counts them). The pass gathers what the span's kind fits from: the
pair statistics (closed-form kinds), the statistics of the prefix's MLP branch of block s against the target
(`folded`), and, for trained kinds, the prefix's source states themselves, written to a memory-mapped Arrow
file aligned record by record with the capture (only the latest such file is kept). A trained kind refitted
this way is cached on disk under a key that adds the prefix's spans, so a resumed study never retrains it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from toast.spaces import (
    HOLDOUT_FRACTION,
    PairStats,
    Plan,
    PlanError,
    Span,
    Translator,
    create_translator,
    load_translator,
    translator_class,
)

from .._artifacts import read_artifact, read_or_discard, spec_key, write_artifact
from ..capture import CapturedActivations, CapturedSpanData, decode_state
from ..errors import CacheError
from ._settings import REFITS  # the one list of refit modes (`--refit`'s choices)

FORMAT_VERSION = 1
#: `(plan, its fitted translators, branch block or None) -> (sample ids, hidden states, token mask, branch)`
#: batches: the calibration samples, in the capture's order, run through the compressed model of `plan`
#: (`CompressedModel.hidden_states`), with the MLP branch output of the given kept block (else None).
PrefixStates = Callable[
    [Plan, dict, int | None],
    Iterable[tuple[list[int], list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]],
]


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
    prefix: tuple[tuple[int, int, str], ...] = ()  # `refit` sequential: the spans it was refitted after

    @property
    def key(self) -> str:
        if self.prefix:
            return spec_key(self)
        return spec_key(_Independent(**{k: v for k, v in asdict(self).items() if k != "prefix"}))


@dataclass(frozen=True)
class _Independent:
    """The spec of an independently fitted translator as it was keyed before `prefix` existed (same keys)."""

    capture: str
    span: tuple[int, int]
    kind: str
    params: str
    seed: int
    holdout: float
    version: int


@dataclass
class _PrefixPass:
    """What one pass of a compressed prefix over the calibration samples gathered, per target state `h_t`."""

    stats: dict[int, PairStats]
    branch: dict[int, PairStats] | None = None  # (m_s, h_t - r_s) of the prefix's block s = source - 1
    states: Path | None = None  # the prefix's source states, one record per capture record (trained kinds)


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
        self._passes: dict[tuple[tuple[Span, ...], int], _PrefixPass] = {}
        self._states_dir: Path | None = None  # where the prefix source states of trained kinds are written

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
                    self._refitted[prefix.spans, span] = self._fit(span, prefix)
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
        before = tuple(s for s in plan.spans if s.end <= span.start)
        return Plan(before, plan.num_blocks) if before else None

    def prefix_pair(self, prefix: Plan, span: Span) -> PairStats:
        """The statistics of (the compressed `prefix` model's state at `span`'s source, the capture's target)."""
        return self.prefix_data(prefix, span).stats

    def prefix_data(self, prefix: Plan, span: Span) -> CapturedSpanData:
        """What a translator of `span` is refitted from after the compressed `prefix`: the pass's statistics of its
        source state (and, for `folded`, of block s's MLP branch) against the capture's targets, and, for trained
        kinds, token batches of its source states paired with the capture's targets."""
        kind = translator_class(span.kind)
        key = (prefix.spans, span.source)
        done = self._passes.get(key)
        branch, store = kind.needs_branches, kind.needs_activations
        if done is None or (branch and done.branch is None) or (store and done.states is None):
            branch |= done is not None and done.branch is not None
            self._passes[key] = self._prefix_pass(prefix, span.source, branch=branch, store=store)
        return _PrefixSpanData(
            self.captured, span, self._passes[key], device=self.device, seed=self.seed, holdout=self.holdout
        )

    def _prefix_pass(self, prefix: Plan, source: int, *, branch: bool, store: bool) -> _PrefixPass:
        """One pass of the compressed `prefix` over the calibration samples: the statistics of its state that
        stands for `h_source` against every later captured state `h_t` (t > source); with `branch`, those of block
        `source - 1`'s MLP branch output `m` against `h_t - r` (r = that state minus m); with `store`, the source
        states written to disk (the previous pass's states file is dropped)."""
        model_translators = self.get(prefix)
        step = _step_of(prefix, source)
        self.passes += 1
        targets = list(range(source + 1, int(self.captured.manifest["num_states"])))
        acc = _PairAccumulator(len(targets))
        branch_acc = _PairAccumulator(len(targets), own_scatter=True) if branch else None
        stream = _CapturedTokens(self.captured, targets)
        writer = self._states_writer() if store else None
        for ids, states, mask, m in self.prefix_states(prefix, model_translators, source - 1 if branch else None):
            h = states[step]
            x = _real_tokens(h, mask)
            samples, ys = stream.take(len(x))
            expected = np.repeat(np.asarray(ids), _tokens_per_sample(h, mask))
            if not np.array_equal(samples, expected):
                raise CacheError("the prefix pass's tokens do not line up with the capture's (sample order differs)")
            ys = [torch.from_numpy(y).to(x.device) for y in ys]
            acc.update(x, ys)
            if branch_acc is not None:
                if m is None:
                    raise CacheError(f"the MLP branch of block {source - 1} did not run in the prefix pass")
                m = _real_tokens(m, mask).to(torch.float64)
                r = x.to(torch.float64) - m
                branch_acc.update(m, [y.to(torch.float64) - r for y in ys])
            if writer is not None:
                writer.write(x)
        if stream.left():
            raise CacheError("the prefix pass covered fewer tokens than the capture holds")
        syy = [self.captured.stats.scatter(t, t) for t in targets]
        out = _PrefixPass(dict(zip(targets, acc.result(syy), strict=True)))
        if branch_acc is not None:
            out.branch = dict(zip(targets, branch_acc.result(), strict=True))
        if writer is not None:
            out.states = writer.close()
        return out

    def _states_writer(self) -> _RecordWriter:
        """A writer of the next prefix source states file; the previous one (and its pass's reference) is dropped."""
        for done in self._passes.values():
            done.states = None
        if self._states_dir is None:
            root = self.cache_root / "tmp"
            root.mkdir(parents=True, exist_ok=True)
            self._states_dir = Path(tempfile.mkdtemp(prefix="prefix-states-", dir=root))
            weakref.finalize(self, shutil.rmtree, self._states_dir, True)
        for old in self._states_dir.glob("*.arrow"):
            old.unlink()
        self._written = getattr(self, "_written", 0) + 1
        sizes = [n for _, n in _record_sizes(self.captured)]
        return _RecordWriter(self._states_dir / f"{self._written}.arrow", sizes, int(self.captured.manifest["dim"]))

    def data(self, span: Span) -> CapturedSpanData:
        """What a translator of `span` is fitted from."""
        return CapturedSpanData(self.captured, span, device=self.device, seed=self.seed, holdout=self.holdout)

    def path(self, span: Span, translator: Translator, prefix: Plan | None = None) -> tuple[Path, FittedTranslatorSpec]:
        """Where a fitted `translator` of `span` (refitted after `prefix`, if given) is cached, and its spec."""
        spec = FittedTranslatorSpec(
            capture=str(self.captured.manifest["key"]),
            span=(span.start, span.end),
            kind=span.kind,
            params=json.dumps(translator.get_params(), sort_keys=True, default=list),
            seed=self.seed,
            holdout=self.holdout,
            prefix=tuple((s.start, s.end, s.kind) for s in prefix.spans) if prefix is not None else (),
        )
        return self.cache_root / "translators" / spec.key, spec

    def _fit(self, span: Span, prefix: Plan | None = None) -> Translator:
        translator = create_translator(span.kind)

        def data() -> CapturedSpanData:
            return self.data(span) if prefix is None else self.prefix_data(prefix, span)

        if not translator.cached_on_disk:
            self.fits += 1
            return translator.fit_span(data())
        directory, spec = self.path(span, translator, prefix)
        what = f"fitted translator {directory}"

        def verified(d: Path) -> Translator:
            read_artifact(d, spec.key, what)
            return load_translator(d)

        found = read_or_discard(directory, verified, redo="refitting")
        if found is not None:
            return found
        start = time.perf_counter()
        self.fits += 1
        translator.fit_span(data())
        with write_artifact(directory, spec.key, what) as out:
            translator.save(out.directory)
            out.manifest.update(
                {
                    "spec": {**asdict(spec), "span": list(spec.span), "prefix": [list(p) for p in spec.prefix]},
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
        return translator


class _PrefixSpanData(CapturedSpanData):
    """A span's data after a compressed prefix (`refit` sequential): the pass's statistics, and token batches of
    the prefix's source states (read from the pass's states file, record by record) with the capture's targets."""

    def __init__(self, captured: CapturedActivations, span: Span, done: _PrefixPass, **kwargs) -> None:
        super().__init__(captured, span, **kwargs)
        self._done = done

    @property
    def stats(self) -> PairStats:
        return self._done.stats[self.span.target]

    @property
    def branch_stats(self) -> PairStats:
        if self._done.branch is None:
            return super().branch_stats
        return self._done.branch[self.span.target]

    def _source_rows(self, stack):
        if self._done.states is None:
            raise CacheError("the prefix pass kept no source states (only the latest pass's are kept)")
        reader = pa.ipc.open_file(stack.enter_context(pa.memory_map(str(self._done.states))))
        dim = self.dim
        return lambda r, _batch: reader.get_batch(r).column("x").values.to_numpy(zero_copy_only=True).reshape(-1, dim)


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


def _real_tokens(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of `h` (batch, tokens, d) that are real tokens, stacked (padding dropped), in capture order."""
    return h[mask.to(device=h.device, dtype=torch.bool)] if mask is not None else h.reshape(-1, h.shape[-1])


def _record_sizes(captured: CapturedActivations) -> list[tuple[Path, int]]:
    """(shard, rows) of every record batch of the capture, in stored order."""
    out = []
    for path in captured.files:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            out += [(path, reader.get_batch(i).num_rows) for i in range(reader.num_record_batches)]
    return out


class _RecordWriter:
    """Writes float32 token rows to an Arrow IPC file as record batches of the given `sizes` (the capture's)."""

    def __init__(self, path: Path, sizes: list[int], dim: int) -> None:
        self.path, self.sizes, self.dim = path, list(sizes), dim
        self._schema = pa.schema([("x", pa.list_(pa.float32(), dim))])
        self._writer = pa.ipc.new_file(str(path), self._schema)
        self._pending: list[np.ndarray] = []
        self._held = 0

    def write(self, x: torch.Tensor) -> None:
        self._pending.append(x.detach().float().cpu().numpy())
        self._held += len(x)
        while self.sizes and self._held >= self.sizes[0]:
            rows = np.concatenate(self._pending)
            n = self.sizes.pop(0)
            flat = pa.array(np.ascontiguousarray(rows[:n]).reshape(-1))
            self._writer.write_batch(pa.record_batch([pa.FixedSizeListArray.from_arrays(flat, self.dim)], self._schema))
            self._pending, self._held = [rows[n:]], len(rows) - n

    def close(self) -> Path:
        self._writer.close()
        if self.sizes or self._held:
            raise CacheError("the prefix pass's tokens do not fill the capture's record batches")
        return self.path


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

    def __init__(self, num_targets: int, *, own_scatter: bool = False) -> None:
        self.k, self.n, self.own_scatter = num_targets, 0, own_scatter
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
            self._syy = [torch.zeros_like(self._sxx) for _ in ys] if self.own_scatter else None
        xc = x - self._shift[0]
        self._sx += xc.sum(0)
        self._sxx += xc.T @ xc
        for j, y in enumerate(ys):
            yc = y - self._shift[j + 1]
            self._sy[j] += yc.sum(0)
            self._sxy[j] += xc.T @ yc
            if self._syy is not None:
                self._syy[j] += yc.T @ yc
        self.n += len(x)

    def result(self, syy: list[np.ndarray] | None = None) -> list[PairStats]:
        """The statistics per target; each target's own scatter is `syy` (the capture's: it needs no prefix pass),
        or the one accumulated here (`own_scatter`)."""
        n = self.n
        if not n:
            raise CacheError("the prefix pass saw no tokens")
        mx = self._sx / n
        sxx = self._sxx - n * torch.outer(mx, mx)
        out = []
        for j in range(self.k):
            my = self._sy[j] / n
            own = None if self._syy is None else (self._syy[j] - n * torch.outer(my, my)).cpu().numpy()
            out.append(
                PairStats(
                    n,
                    (self._shift[0] + mx).cpu().numpy(),
                    (self._shift[j + 1] + my).cpu().numpy(),
                    sxx.cpu().numpy(),
                    (self._sxy[j] - n * torch.outer(mx, my)).cpu().numpy(),
                    own if own is not None else syy[j],
                )
            )
        return out
