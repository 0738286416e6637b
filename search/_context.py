"""The trial function: everything a plan is scored with, prepared once, then `evaluate(plan) -> dict`.

`SearchContext` loads the model and data, captures (or reuses) the calibration activations,
measures the cost table and preprocesses the probe and evaluation inputs once. `evaluate` then
fits the plan's translators from the statistics (cached per span), builds the compressed model,
extracts features and scores every objective. Local and Ray runners call the same function.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from toast.objectives import feature_fidelity, get_objectives, measure_latency, probe_accuracy
from toast.objectives._cost import CostTable
from toast.spaces import Plan, PlanSpace

from ._bank import TranslatorBank
from .capture import ActivationCache, CalibrationSettings, calibrate, check_modality, resolve_device
from .data import LabeledSplit, PreprocessedInputs, default_splits, load_split, sample_ids
from .models import CompressedModel, LoadedModel, load_model, measure_cost_table, resolve_model
from ._settings import SearchSettings, SettingsError

FIDELITY_UNDEFINED = ("linear CKA is undefined: the features are constant over the evaluation samples; "
                      "ranked as the worst agreement")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def samples_used(settings: SearchSettings, train: LabeledSplit, test: LabeledSplit) -> tuple[dict[str, int], list[str]]:
    """The calibration, probe and evaluation sample counts a run really uses (a split may hold fewer than
    asked), and one note per count cut short."""
    asked = {"calib_samples": (settings.calib_samples, train), "probe_samples": (settings.probe_samples, train),
             "eval_samples": (settings.eval_samples, test)}
    used, notes = {}, []
    for name, (n, split) in asked.items():
        used[name] = min(n, len(split))
        if n > len(split):
            notes.append(f"note: --{name.replace('_', '-')} {n} but split {split.split!r} of {split.name!r} holds {len(split)} samples: using {len(split)}")
    return used, notes


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

    @classmethod
    def build(cls, settings: SearchSettings, *, progress: bool = True) -> "SearchContext":
        """Load, calibrate (cached) and preprocess (cached): the work done once per run."""
        device = resolve_device(settings.device)
        get_objectives(settings.objectives)  # validate before loading anything
        default_train, default_test = default_splits(settings.dataset)
        train = load_split(settings.dataset, settings.split_train or default_train, input_column=settings.input_column, label_column=settings.label_column)
        test = load_split(settings.dataset, settings.split_test or default_test, input_column=settings.input_column, label_column=settings.label_column)
        check_modality(resolve_model(settings.model).family, train, settings.model)  # from the config, before the weights
        used, notes = samples_used(settings, train, test)
        for note in notes:
            print(note)
        loaded = load_model(settings.model, device=device, dtype=DTYPES[settings.dtype])
        cache = ActivationCache(settings.cache_dir)
        calib = CalibrationSettings(samples=settings.calib_samples, seed=settings.seed, batch_size=settings.batch_size, activation_dtype=settings.activation_dtype)
        captured = calibrate(loaded, train, calib, cache, progress=progress)
        costs = measure_cost_table(loaded)
        space = PlanSpace(num_blocks=loaded.num_blocks, kinds=settings.translators, max_removed=settings.max_removed, min_kept=settings.min_kept)
        needs_labels = "accuracy" in settings.objectives
        probe_ids = sample_ids(len(train), settings.probe_samples, settings.seed + 1)
        eval_ids = sample_ids(len(test), settings.eval_samples, settings.seed + 2)
        probe_inputs = PreprocessedInputs.get_or_build(cache.root, train, probe_ids, loaded.processor, settings.batch_size, progress=progress)
        eval_inputs = PreprocessedInputs.get_or_build(cache.root, test, eval_ids, loaded.processor, settings.batch_size, progress=progress)
        probe_labels = train.labels[list(probe_ids)] if needs_labels else np.zeros(len(probe_ids), dtype=int)
        eval_labels = test.labels[list(eval_ids)] if needs_labels else np.zeros(len(eval_ids), dtype=int)
        ctx = cls(settings, loaded, train, test, captured, costs, space, probe_inputs, eval_inputs, probe_labels, eval_labels, TranslatorBank(captured))
        ctx.samples_used = used
        if settings.head == "original":
            ctx._check_original_head()
        ctx.baseline = ctx.evaluate(Plan((), loaded.num_blocks))
        return ctx

    def _check_original_head(self) -> None:
        parts = self.loaded.parts
        if parts.head_kind not in ("cls", "cls+mean"):
            raise SettingsError(f"`head` original: model {self.settings.model!r} has no classification head; use `head` probe")
        n_model = int(getattr(self.loaded.config, "num_labels", 0))
        n_data = int(max(self.probe_labels.max(), self.eval_labels.max())) + 1
        if n_model != n_data:
            raise SettingsError(f"`head` original: the model's head has {n_model} labels but the dataset has {n_data}; use `head` probe")

    def full_evaluation(self) -> "SearchContext":
        """This context with the whole test split as evaluation set (itself when it already is)."""
        ids = tuple(range(len(self.test)))
        if len(ids) == len(self.eval_labels):
            return self
        s = self.settings
        inputs = PreprocessedInputs.get_or_build(ActivationCache(s.cache_dir).root, self.test, ids, self.loaded.processor, s.batch_size, progress=s.progress)
        labels = self.test.labels if "accuracy" in s.objectives else np.zeros(len(ids), dtype=int)
        full = replace(self, eval_inputs=inputs, eval_labels=labels, original_eval_features=None, baseline={})
        full.baseline = full.evaluate(Plan((), self.loaded.num_blocks))
        return full

    # ---- scoring -------------------------------------------------------------------------
    def model_for(self, plan: Plan) -> CompressedModel:
        return CompressedModel.from_model(self.loaded, plan, self.bank.get(plan))

    @torch.inference_mode()
    def _outputs(self, model: CompressedModel, inputs: PreprocessedInputs, logits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Pooled features of every input (and, with `logits`, the head's outputs from the same pass)."""
        device = self.loaded.device
        feats, outs = [], []
        for _, batch in inputs:
            batch = {k: v.to(device) for k, v in batch.items()}
            if logits:
                f, y = model.features_and_outputs(batch)
                outs.append(y.float().cpu().numpy())
            else:
                f = model.features(batch)
            feats.append(f.float().cpu().numpy())
        return (np.concatenate(feats), np.concatenate(outs)) if logits else np.concatenate(feats)

    def evaluate(self, plan: Plan, *, probe: str | None = None) -> dict[str, Any]:
        """Score `plan` on every objective; timings split into fit, forward, probe and overhead."""
        start = time.perf_counter()
        t = time.perf_counter()
        model = self.model_for(plan)
        fit_s = time.perf_counter() - t
        cost = self.costs.cost(plan)
        result: dict[str, Any] = {"gflops": cost.gflops, "params": cost.mparams}
        objectives = self.settings.objectives
        forward_s = probe_s = 0.0
        if "accuracy" in objectives or "fidelity" in objectives:
            t = time.perf_counter()
            original_head = "accuracy" in objectives and self.settings.head == "original"
            if original_head:
                eval_features, logits = self._outputs(model, self.eval_inputs, logits=True)
            else:
                eval_features = self._outputs(model, self.eval_inputs)
            if "accuracy" in objectives:
                if original_head:
                    forward_s += time.perf_counter() - t
                    result["accuracy"] = float((logits.argmax(1) == self.eval_labels).mean() * 100)
                else:
                    train_features = self._outputs(model, self.probe_inputs)
                    forward_s += time.perf_counter() - t
                    t = time.perf_counter()
                    res = probe_accuracy(train_features, self.probe_labels, eval_features, self.eval_labels, probe=probe or "ridge")
                    probe_s = time.perf_counter() - t
                    result["accuracy"] = res.mean
                    if len(res.per_seed) > 1:
                        result["accuracy_std"] = res.std
            else:
                forward_s += time.perf_counter() - t
            if self.original_eval_features is None and not plan.spans:
                self.original_eval_features = eval_features
            fid = feature_fidelity(self.original_eval_features, eval_features)
            result["fidelity"] = fid["cka"] if math.isfinite(fid["cka"]) else None
            if result["fidelity"] is None:
                result["fidelity_undefined"] = FIDELITY_UNDEFINED
            result["cosine"] = fid["cosine"]
        if "latency" in objectives:
            _, batch = next(iter(self.eval_inputs))
            batch = {k: v.to(self.loaded.device) for k, v in batch.items()}
            with torch.inference_mode():
                lat = measure_latency(lambda: model(**batch), warmup=2, repeats=5, device=self.loaded.device)
            result["latency"] = lat.median_ms
        total = time.perf_counter() - start
        result.update(seconds=total, seconds_fit=fit_s, seconds_forward=forward_s, seconds_probe=probe_s,
                      seconds_overhead=max(total - fit_s - forward_s - probe_s, 0.0))
        return result
