"""Trained translator kinds: a small `nn.Module` fitted with Adam on the streamed calibration activations.

The base of `mlp` and `resmlp` (TOAST appendix A.1.2). A subclass gives its architecture (`build`) and its
cost; the base owns the training loop (seeded, Adam on the mean squared error, early-stopped on the
held-out calibration samples, the best held-out state kept), `predict`, `residual`, the module and
save/load of the module's state dict. `fit(stats)` cannot fit such a kind: `fit_span(data)` streams
`data.batches(...)` on `data.device`. The search caches a fitted one on disk (`cached_on_disk`), so a
resumed or repeated study never trains it twice.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import NotFittedError
from ._span_data import SpanData
from ._stats import PairStats
from ._translators import (
    Translator,
)

STATE_PREFIX = "state."  # the module's state dict in the saved arrays


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's global generators (CPU, and `device`'s when CUDA) seeded, restored afterwards."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def cpu_threads(device: torch.device, work: int) -> Iterator[None]:
    """On CPU, train with fewer of torch's threads when a step is small (`work` multiply-adds per layer): below
    about 4M per thread, threads only add synchronisation, which costs 20-50x on a busy machine."""
    before = torch.get_num_threads()
    wanted = min(before, max(1, work >> 22))
    if device.type != "cpu" or wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TrainedTranslator(Translator):
    """A module trained with Adam on `(x, y)` token batches; early-stopped on the held-out samples.

    Hyper-parameters (keyword-only; the paper's where it gives them): `steps` (300, TOAST §4: "trained for
    300 steps with Adam"), `lr` (1e-3), `batch_tokens` (tokens per step; the paper gives none), `max_epochs`
    (passes over the training tokens; None: `steps` alone bounds training), `eval_every` (steps between
    held-out evaluations), `patience` (evaluations without improvement before stopping), `weight_decay`.

    Fitted: `state_` (the module's state dict, float32 arrays), `dim_`, `steps_`, `epochs_`,
    `stopped_early_`, `holdout_mse_` (the best held-out error, None without a held-out part) and
    `history_` (every held-out evaluation).
    """

    needs_activations: ClassVar[bool] = True
    cached_on_disk: ClassVar[bool] = True

    def __init__(
        self,
        *,
        steps: int = 300,
        lr: float = 1e-3,
        batch_tokens: int = 4096,
        max_epochs: int | None = None,
        eval_every: int = 25,
        patience: int = 4,
        weight_decay: float = 0.0,
    ) -> None:
        self.steps = steps
        self.lr = lr
        self.batch_tokens = batch_tokens
        self.max_epochs = max_epochs
        self.eval_every = eval_every
        self.patience = patience
        self.weight_decay = weight_decay

    # ---- architecture (subclasses) ------------------------------------------------------------
    def build(self, dim: int) -> nn.Module:
        """A freshly initialised module of this kind for width `dim` (initialised from torch's global generator)."""
        raise NotImplementedError

    @classmethod
    def empty_module(cls, dim: int) -> nn.Module:
        """This kind's module for width `dim` with its default settings, in eval mode, to load a state dict into."""
        return cls().build(dim).eval()

    # ---- fitting --------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "state_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit_span(data) first")

    def fit(self, stats: PairStats) -> TrainedTranslator:
        """Not possible: a trained kind learns from the activations themselves."""
        raise TypeError(
            f"the {self.kind!r} translator is trained on activations, not fitted from statistics: call fit_span(data)"
        )

    def fit_span(self, data: SpanData) -> TrainedTranslator:
        """Train on `data.batches(part="train")` with Adam on `data.device`, seeded by `data.seed`; keep the state
        with the lowest held-out error, stopping after `patience` evaluations without improvement; return self."""
        device = torch.device(data.device)
        work = self.batch_tokens * data.dim * data.dim
        with seeded(data.seed, device), cpu_threads(device, work):
            module = self.build(data.dim).to(device)
            opt = torch.optim.Adam(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best, best_state, bad, history = math.inf, None, 0, []
            step = epoch = evaluated_at = 0
            stop = False
            while not stop and step < self.steps and (self.max_epochs is None or epoch < self.max_epochs):
                seen = 0
                for x, y in data.batches(self.batch_tokens, part="train", seed=data.seed + epoch):
                    module.train()
                    loss = torch.nn.functional.mse_loss(module(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step, seen = step + 1, seen + 1
                    if step % self.eval_every == 0 or step == self.steps:
                        evaluated_at = step
                        value = _mse(module, data, "holdout", self.batch_tokens)
                        if value is not None:
                            history.append(value)
                            if value < best:
                                best, best_state, bad = value, copy.deepcopy(module.state_dict()), 0
                            else:
                                bad += 1
                                stop = bad >= self.patience
                    if stop or step >= self.steps:
                        break
                if not seen:
                    raise ValueError(f"{self.kind} translator: no training tokens (every sample is held out)")
                epoch += 1
            if evaluated_at != step:  # stopped by max_epochs between evaluations
                value = _mse(module, data, "holdout", self.batch_tokens)
                if value is not None:
                    history.append(value)
                    if value < best:
                        best, best_state = value, None
            if best_state is not None:
                module.load_state_dict(best_state)
        self.state_ = {k: v.detach().cpu().float().numpy().copy() for k, v in module.state_dict().items()}
        self.dim_ = int(data.dim)
        self.steps_, self.epochs_, self.stopped_early_ = step, epoch, bool(stop)
        self.holdout_mse_ = None if best == math.inf else float(best)
        self.history_ = [float(v) for v in history]
        return self

    # ---- using --------------------------------------------------------------------------------
    def to_module(self) -> nn.Module:
        """The trained module, float32, in eval mode (dropout off)."""
        self._require_fitted()
        module = self.build(self.dim_)
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state_.items()})
        return module.eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Apply the module to rows of `x` in float64."""
        self._require_fitted()
        module = self.to_module().double()
        with torch.no_grad():
            return module(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()

    def residual(self, data: SpanData) -> float:
        """Mean squared error per token and feature over every token of `data` (both parts)."""
        if isinstance(data, PairStats):
            raise TypeError(
                f"the {self.kind!r} translator's residual needs the activations (a SpanData), not statistics"
            )
        self._require_fitted()
        module = self.to_module().double().to(data.device)
        return float(_mse(module, data, "all", 1 << 14, dtype=torch.float64))

    # ---- save / load: the base class's, with the module's state dict as the fitted arrays --------------
    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        return {STATE_PREFIX + k: v for k, v in self.state_.items()}

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.state_ = {k.removeprefix(STATE_PREFIX): v for k, v in arrays.items()}


def _mse(
    module: nn.Module, data: SpanData, part: str, tokens_per_batch: int, dtype: torch.dtype = torch.float32
) -> float | None:
    """Mean squared error per token and feature of `module` on `part` of `data` (None when `part` is empty)."""
    module.eval()
    sse, count = 0.0, 0
    with torch.no_grad():
        for x, y in data.batches(tokens_per_batch, part=part, seed=data.seed):
            diff = module(x.to(dtype)) - y.to(dtype)
            sse += float(diff.double().square().sum())
            count += diff.numel()
    return sse / count if count else None
