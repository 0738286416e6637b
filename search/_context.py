"""The trial function: everything a plan is scored with, prepared once, then `evaluate(plan) -> dict`.

`SearchContext` loads the model and data, captures (or reuses) the calibration activations,
measures the cost table and preprocesses the probe and evaluation inputs once. `evaluate` then
fits the plan's translators from the statistics (cached per span), builds the compressed model,
extracts features and scores every objective. Local and Ray runners call the same function.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from toast.objectives import LatencyResult, TrialOutputs, compute_objectives, get_objectives, measure_latency
from toast.objectives._cost import CostTable
from toast.spaces import Plan, PlanSpace

from ._bank import TranslatorBank
from ._prepare import prepare
from ._settings import SearchSettings, SettingsError
from ._zero_shot import ZeroShotHead, build_zero_shot_head, text_tower_cost, zero_shot_note
from .capture import ActivationCache, CapturedActivations, calibrate
from .capture._calibration import capture_spec
from .data import LabeledSplit, PreprocessedInputs, iter_batches, sample_ids
from .models import CompressedModel, LoadedModel


@dataclass
class SearchContext:
    """What every trial shares: model, statistics, cost table, inputs, labels, original features."""

    settings: SearchSettings
    loaded: LoadedModel
    train: LabeledSplit
    test: LabeledSplit
    captured: CapturedActivations
    costs: CostTable
    space: PlanSpace
    probe_inputs: PreprocessedInputs
    eval_inputs: PreprocessedInputs
    probe_labels: np.ndarray
    eval_labels: np.ndarray
    bank: TranslatorBank
    original_eval_features: np.ndarray = field(repr=False, default=None)
    baseline: dict[str, Any] = field(default_factory=dict)
    samples_used: dict[str, int] = field(default_factory=dict)
    calib: LabeledSplit | None = None  # the split the translators were fitted on (`calib_dataset`, else `train`)
    zero_shot: ZeroShotHead | None = None  # `head` zero-shot: CLIP's class embeddings and visual projection
    zero_shot_cost: dict[str, float] | None = None  # the text tower's, paid once per run (not in the plans' costs)

    @classmethod
    def build(cls, settings: SearchSettings, *, progress: bool = True, check_paths: bool = True) -> SearchContext:
        """`prepare` (checks, data, model, space, cost table), then calibrate (cached), preprocess the probe and
        evaluation inputs (cached) and score the original model: the work done once per run. `check_paths` False:
        no `preflight` (a Ray worker: its driver made it)."""
        prepared = prepare(settings, check_paths=check_paths)
        for note in prepared.notes:
            print(note)
        loaded, train, test, cache = prepared.loaded, prepared.train, prepared.test, prepared.cache
        calib = prepared.calibration_split
        captured = calibrate(loaded, calib, prepared.calibration, cache, progress=progress)
        needs_labels = _needs_labels(settings)
        probe_ids = sample_ids(len(train), settings.probe_samples, settings.seed + 1)
        eval_ids = sample_ids(len(test), settings.eval_samples, settings.seed + 2)
        probe_inputs = PreprocessedInputs.get_or_build(
            cache.root, train, probe_ids, loaded.processor, settings.batch_size, progress=progress
        )
        eval_inputs = PreprocessedInputs.get_or_build(
            cache.root, test, eval_ids, loaded.processor, settings.batch_size, progress=progress
        )
        probe_labels = train.labels[list(probe_ids)] if needs_labels else np.zeros(len(probe_ids), dtype=int)
        eval_labels = test.labels[list(eval_ids)] if needs_labels else np.zeros(len(eval_ids), dtype=int)
        ctx = cls(
            settings,
            loaded,
            train,
            test,
            captured,
            prepared.costs,
            prepared.space,
            probe_inputs,
            eval_inputs,
            probe_labels,
            eval_labels,
            TranslatorBank(
                captured,
                device=loaded.device,
                seed=settings.seed,
                cache_root=cache.root,
                refit=settings.refit,
                prefix_states=_prefix_states(
                    loaded, calib, capture_spec(loaded, calib, prepared.calibration).sample_ids, settings.batch_size
                )
                if settings.refit == "sequential"
                else None,
            ),
        )
        ctx.samples_used = prepared.samples_used
        ctx.calib = calib
        if settings.head == "zero-shot":  # the class embeddings, once per run (cached)
            ctx.zero_shot = build_zero_shot_head(loaded, prepared.zero_shot, cache.root)
            ctx.zero_shot_cost = text_tower_cost(loaded, prepared.zero_shot)
            print(zero_shot_note(ctx.zero_shot, ctx.zero_shot_cost))
        if settings.head == "original" and needs_labels:  # the head scores only what reads the labels
            ctx._check_original_head()
        ctx.baseline = ctx.evaluate(Plan((), loaded.num_blocks))
        return ctx

    def _check_original_head(self) -> None:
        parts = self.loaded.parts
        if parts.head_kind not in ("cls", "cls+mean"):
            raise SettingsError(
                f"`head` original: model {self.settings.model!r} has no classification head; use `head` probe"
            )
        n_model = int(getattr(self.loaded.config, "num_labels", 0))
        n_data = int(max(self.probe_labels.max(), self.eval_labels.max())) + 1
        if n_model != n_data:
            raise SettingsError(
                f"`head` original: the model's head has {n_model} labels but the dataset has {n_data}; use `head` probe"
            )

    def full_evaluation(self) -> SearchContext:
        """This context with the whole test split as evaluation set (itself when it already is)."""
        ids = tuple(range(len(self.test)))
        if len(ids) == len(self.eval_labels):
            return self
        s = self.settings
        inputs = PreprocessedInputs.get_or_build(
            ActivationCache(s.cache_dir).root, self.test, ids, self.loaded.processor, s.batch_size, progress=s.progress
        )
        labels = self.test.labels if _needs_labels(s) else np.zeros(len(ids), dtype=int)
        full = replace(self, eval_inputs=inputs, eval_labels=labels, original_eval_features=None, baseline={})
        full.baseline = full.evaluate(Plan((), self.loaded.num_blocks))
        return full

    # ---- scoring -------------------------------------------------------------------------
    def model_for(self, plan: Plan) -> CompressedModel:
        return CompressedModel.from_model(self.loaded, plan, self.bank.get(plan))

    @torch.inference_mode()
    def _outputs(
        self, model: CompressedModel, inputs: PreprocessedInputs, logits: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Pooled features of every input (and, with `logits`, the head's outputs from the same pass)."""
        device = self.loaded.device
        feats, outs, positions = [], [], []
        for rows, batch in inputs.length_batches():  # texts by length: little padding
            batch = {k: v.to(device) for k, v in batch.items()}
            if logits:
                f, y = model.features_and_outputs(batch)
                if self.zero_shot is not None:  # CLIP's zero-shot classes in place of the tower's own output
                    y = self.zero_shot.logits(f)
                outs.append(y.float().cpu().numpy())
            else:
                f = model.features(batch)
            feats.append(f.float().cpu().numpy())
            positions.append(rows)
        order = np.argsort(np.concatenate(positions), kind="stable")  # back to the inputs' stored order
        if logits:
            return np.concatenate(feats)[order], np.concatenate(outs)[order]
        return np.concatenate(feats)[order]

    def evaluate(self, plan: Plan, *, probe: str | None = None) -> dict[str, Any]:
        """Score `plan` on every objective; timings split into fit, forward, probe and overhead."""
        start = time.perf_counter()
        t = time.perf_counter()
        model = self.model_for(plan)
        fit_s = time.perf_counter() - t
        outputs = PlanOutputs(self, plan, model, probe=probe or "ridge")
        result = compute_objectives(outputs, get_objectives(self.settings.objectives))
        forward_s, probe_s = outputs.seconds.get("forward", 0.0), outputs.seconds.get("probe", 0.0)
        total = time.perf_counter() - start
        result.update(
            seconds=total,
            seconds_fit=fit_s,
            seconds_forward=forward_s,
            seconds_probe=probe_s,
            seconds_overhead=max(total - fit_s - forward_s - probe_s, 0.0),
        )
        return result


def _prefix_states(loaded: LoadedModel, split: LabeledSplit, ids: tuple[int, ...], batch_size: int):
    """How the bank runs a compressed prefix over the calibration samples (`refit` sequential), in capture order."""

    @torch.inference_mode()
    def run(plan: Plan, translators: dict, branch_block: int | None = None):
        model = CompressedModel.from_model(loaded, plan, translators)
        seen: list[torch.Tensor] = []
        handle = None
        if branch_block is not None:  # `folded` refitted: the MLP branch output of the kept block it folds into
            branch = model.family.mlp_branch(model.blocks[str(branch_block)])
            handle = branch.register_forward_hook(
                lambda _module, _args, out: seen.append(out[0] if isinstance(out, tuple) else out)
            )
        try:
            for chunk, inputs in iter_batches(split, ids, loaded.processor, batch_size):
                states, mask = model.hidden_states({k: v.to(loaded.device) for k, v in inputs.items()})
                yield chunk, states, mask, (seen.pop() if seen else None)
        finally:
            if handle is not None:
                handle.remove()

    return run


def _needs_labels(settings: SearchSettings) -> bool:
    """Whether an objective of the search reads the dataset's labels (else they are not loaded)."""
    return any("labels" in o.inputs(head=settings.head) for o in get_objectives(settings.objectives))


class PlanOutputs(TrialOutputs):
    """One plan's outputs on the context's inputs, for the objectives: each model pass run on first use, the
    evaluation features and logits in one pass when both are expected."""

    def __init__(self, ctx: SearchContext, plan: Plan, model: CompressedModel, *, probe: str) -> None:
        super().__init__(plan=plan, cost=ctx.costs.cost(plan), head=ctx.settings.head, probe=probe)
        self._ctx = ctx
        self._model = model

    @property
    def eval_labels(self) -> np.ndarray:
        return self._ctx.eval_labels

    @property
    def probe_labels(self) -> np.ndarray:
        return self._ctx.probe_labels

    @property
    def has_labels(self) -> bool:
        return _needs_labels(self._ctx.settings)

    @property
    def original_features(self) -> np.ndarray:
        """The original model's evaluation features: the empty plan's own, for the baseline evaluated first."""
        if self._ctx.original_eval_features is None and not self.plan.spans:
            return self.eval_features
        return self._ctx.original_eval_features

    def _compute(self, name: str) -> Mapping[str, np.ndarray]:
        ctx = self._ctx
        if name == "probe_features":
            return {name: ctx._outputs(self._model, ctx.probe_inputs)}
        if name == "eval_logits" or "eval_logits" in self.expected:
            features, logits = ctx._outputs(self._model, ctx.eval_inputs, logits=True)
            out = {"eval_features": features, "eval_logits": logits}
        else:
            out = {"eval_features": ctx._outputs(self._model, ctx.eval_inputs)}
        if ctx.original_eval_features is None and not self.plan.spans:
            ctx.original_eval_features = out["eval_features"]
        return out

    def time_batch(self, *, warmup: int, repeats: int) -> LatencyResult:
        device = self._ctx.loaded.device
        _, batch = next(iter(self._ctx.eval_inputs))
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            return measure_latency(lambda: self._model(**batch), warmup=warmup, repeats=repeats, device=device)
