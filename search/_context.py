"""The trial function: everything a plan is scored with, prepared once, then `evaluate(plan) -> dict`.

`SearchContext` loads the model and data, captures (or reuses) the calibration activations,
measures the cost table and preprocesses the probe and evaluation inputs once. `evaluate` then
fits the plan's translators from the statistics (cached per span), builds the compressed model,
extracts features and scores every objective. Local and Ray runners call the same function.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from toast.objectives import (
    CostTable,
    LatencyResult,
    SampledSimilarity,
    SimilarityReport,
    TrialOutputs,
    compute_objectives,
    downstream_scores,
    get_objectives,
    measure_latency,
    reference_rows,
    token_scores,
)
from toast.spaces import Plan, PlanSpace

from ..capture import ActivationCache, CapturedActivations, PrefixStore, calibrate, capture_spec, default_cap_bytes
from ..data import TOKENS, LabeledSplit, PreprocessedInputs, iter_batches, sample_ids
from ..models import CompressedModel, LoadedModel
from ._bank import TranslatorBank
from ._forward import ForwardCount, plan_forward
from ._prepare import prepare
from ._quiet import note
from ._settings import SearchSettings, SettingsError
from ._similarity_file import write_similarity
from ._stages import FULL, MIN_SUBSET, SCORED_ON, SUBSET, fidelity_rows, subset_fields
from ._zero_shot import ZeroShotHead, build_zero_shot_head, text_tower_cost, zero_shot_note

DOWNSTREAM_KEY = "downstream"  # a trial's lm-eval scores in `PlanOutputs`' `done` (beside its groups' outputs)
PREFIX_FORMAT = 4  # the prefix store's layout (`toast.capture._prefix`); 2: a translator's kind in its step's name; 3: row checksums; 4: a block a span folds into named apart


class _OriginalFeatures:
    """A context's cache of the original model's evaluation features (`SearchContext.original_features`), and for a
    causal LM its next-token distributions kept as top-k (`SearchContext.token_reference`) and the evaluation
    sequences' token ids."""

    __slots__ = ("features", "reference", "token_ids")

    def __init__(self) -> None:
        self.features: np.ndarray | None = None
        self.reference: tuple[np.ndarray, np.ndarray] | None = None  # (top ids, top log-probs), (n, T-1, k) each
        self.token_ids: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class SearchContext:
    """What every trial shares: model, statistics, cost table, inputs, labels, the original's scores and features.

    Every field is set when the context is built (`build`; `full_evaluation` and `dataclasses.replace` make changed
    copies): nothing is assigned to it afterwards. The original model's evaluation features are computed once, on
    first use, behind `original_features`."""

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
    baseline: dict[str, Any] = field(default_factory=dict)  # the original model's scores (`build` scores it first)
    samples_used: dict[str, int] = field(default_factory=dict)
    calib: LabeledSplit | None = None  # the split the translators were fitted on (`calib_dataset`, else `train`)
    zero_shot: ZeroShotHead | None = None  # `head` zero-shot: CLIP's class embeddings and visual projection
    zero_shot_cost: dict[str, float] | None = None  # the text tower's, paid once per run (not in the plans' costs)
    groups: dict[str, tuple[tuple[str, np.ndarray], ...]] = field(default_factory=dict)  # the fidelity stages' rows
    prefix_store: PrefixStore | None = None  # the states of shared prefixes (None: every trial runs all its blocks)
    _original: _OriginalFeatures = field(default_factory=_OriginalFeatures, repr=False)  # shared by copies of it

    @classmethod
    def build(
        cls, settings: SearchSettings, *, progress: bool = True, check_paths: bool = True, notes: bool = True
    ) -> SearchContext:
        """`prepare` (checks, data, model, space, cost table), then calibrate (cached), preprocess the probe and
        evaluation inputs (cached) and score the original model: the work done once per run. `check_paths` False:
        no `preflight` (a Ray worker: its driver made it). `notes` False: the preparation's notes are not said (a Ray
        worker: its driver said them)."""
        prepared = prepare(settings, check_paths=check_paths)
        estimate = prepared.estimate.lines() if prepared.estimate is not None else []
        for line in [*estimate, *prepared.notes] if notes else ():
            note(line)
        loaded, train, test, cache = prepared.loaded, prepared.train, prepared.test, prepared.cache
        calib = prepared.calibration_split
        sampled = None  # the similarity map's token sample, taken during a new capture's pass (`_similarity_file`)
        if prepared.calibration.pairs is not None and not prepared.cache_hit:
            cls_index = loaded.family.layout(loaded.config).cls_index
            sampled = SampledSimilarity(loaded.num_blocks + 1, seed=settings.study.seed, cls_index=cls_index)
        observers = () if sampled is None else (sampled,)
        captured = calibrate(loaded, calib, prepared.calibration, cache, progress=progress, observers=observers)
        if sampled is not None and sampled.num_samples and not captured.stats.all_pairs:
            write_similarity(captured, settings.study.seed, SimilarityReport.from_sample(sampled))
        needs_labels = _needs_labels(settings)
        probe_ids = sample_ids(len(train), settings.data.probe_samples, settings.study.seed + 1)
        eval_ids = sample_ids(len(test), settings.data.eval_samples, settings.study.seed + 2)
        probe_inputs = PreprocessedInputs.get_or_build(
            cache.root, train, probe_ids, loaded.processor, settings.batch_size, progress=progress
        )
        eval_inputs = PreprocessedInputs.get_or_build(
            cache.root, test, eval_ids, loaded.processor, settings.batch_size, progress=progress
        )
        probe_labels = train.labels[list(probe_ids)] if needs_labels else np.zeros(len(probe_ids), dtype=int)
        eval_labels = test.labels[list(eval_ids)] if needs_labels else np.zeros(len(eval_ids), dtype=int)
        bank = TranslatorBank(
            captured,
            device=loaded.device,
            seed=settings.study.seed,
            cache_root=cache.root,
            refit=settings.space.refit,
            prefix_states=_prefix_states(
                loaded, calib, capture_spec(loaded, calib, prepared.calibration).sample_ids, settings.batch_size
            )
            if settings.space.refit == "sequential"
            else None,
        )
        groups = {
            "probe": _groups("probe", len(probe_ids), settings.scoring.fidelity_fraction, settings.study.seed + 3),
            "eval": _groups("eval", len(eval_ids), settings.scoring.fidelity_fraction, settings.study.seed + 4),
        }
        prefix_store = None
        if settings.prefix_cache_gb != 0:  # one cap over every run's stores under prefix/
            root = cache.root / "prefix"
            cap = default_cap_bytes(root) if settings.prefix_cache_gb is None else settings.prefix_cache_gb * 1024**3
            key = _prefix_key(settings, captured, probe_inputs, eval_inputs, loaded.device)
            prefix_store = PrefixStore(root / key, int(cap))
        zero_shot = zero_shot_cost = None
        if settings.scoring.head == "zero-shot":  # the class embeddings, once per run (cached)
            zero_shot = build_zero_shot_head(loaded, prepared.zero_shot, cache.root)
            zero_shot_cost = text_tower_cost(loaded, prepared.zero_shot)
            if notes:
                note(zero_shot_note(zero_shot, zero_shot_cost))
        ctx = cls(
            settings=settings,
            loaded=loaded,
            train=train,
            test=test,
            captured=captured,
            costs=prepared.costs,
            space=prepared.space,
            probe_inputs=probe_inputs,
            eval_inputs=eval_inputs,
            probe_labels=probe_labels,
            eval_labels=eval_labels,
            bank=bank,
            samples_used=prepared.samples_used,
            calib=calib,
            zero_shot=zero_shot,
            zero_shot_cost=zero_shot_cost,
            groups=groups,
            prefix_store=prefix_store,
        )
        if settings.scoring.head == "original" and needs_labels:  # the head scores only what reads the labels
            ctx._check_original_head()
        return ctx._scored()

    def _scored(self) -> SearchContext:
        """This context with the original model's scores (`baseline`): the empty plan, scored before any other (its
        pass gives the original features every plan's fidelity compares with)."""
        return replace(self, baseline=self.evaluate(Plan((), self.loaded.num_blocks)))

    def _check_original_head(self) -> None:
        parts = self.loaded.parts
        if parts.head_kind not in ("cls", "cls+mean"):
            raise SettingsError(
                f"`head` original: model {self.settings.data.model!r} has no classification head; use `head` probe"
            )
        n_model = int(getattr(self.loaded.config, "num_labels", 0))
        n_data = int(max(self.probe_labels.max(), self.eval_labels.max())) + 1
        if n_model != n_data:
            raise SettingsError(
                f"`head` original: the model's head has {n_model} labels but the dataset has {n_data}; use `head` probe"
            )

    @property
    def staged(self) -> bool:
        """Whether trials are scored on a subset first (the evaluation subset large enough to tell plans apart)."""
        first = self.groups.get("eval", ())
        return len(first) > 1 and len(first[0][1]) >= MIN_SUBSET

    def full_evaluation(self) -> SearchContext:
        """This context with the whole test split as evaluation set (itself when it already is)."""
        ids = tuple(range(len(self.test)))
        if len(ids) == len(self.eval_labels):
            return self
        s = self.settings
        inputs = PreprocessedInputs.get_or_build(
            ActivationCache(s.cache_dir).root,
            self.test,
            ids,
            self.loaded.processor,
            s.batch_size,
            progress=s.show_progress,
        )
        labels = self.test.labels if _needs_labels(s) else np.zeros(len(ids), dtype=int)
        groups = {**self.groups, "eval": (("eval-all", np.arange(len(ids))),)}  # every test sample, one stage
        full = replace(
            self,
            eval_inputs=inputs,
            eval_labels=labels,
            baseline={},
            groups=groups,
            prefix_store=None,
            _original=_OriginalFeatures(),  # other inputs: the original's features of these
        )
        return full._scored()

    # ---- scoring -------------------------------------------------------------------------
    def model_for(self, plan: Plan) -> CompressedModel:
        return CompressedModel.from_model(self.loaded, plan, self.bank.get(plan))

    @property
    def causal_lm(self) -> bool:
        """Whether the model is a causal LM (its evaluation scores its next-token predictions: `token_scores`)."""
        return self.loaded.family.modality == TOKENS

    def token_ids(self) -> torch.Tensor:
        """The evaluation sequences' token ids `(n_eval, T)`, in the stored order (read once)."""
        cache = self._original
        if cache.token_ids is None:
            cache.token_ids = self.eval_inputs.as_tensors()["input_ids"]
        return cache.token_ids

    def token_reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The original model's next-token distributions on the evaluation sequences, as its top-k token ids and
        log-probabilities `(n_eval, T-1, k)` (`toast.objectives.reference_rows`): from the baseline's own pass (the
        empty plan, scored first), else from a pass of the original now."""
        cache = self._original
        if cache.reference is None:
            empty = Plan((), self.loaded.num_blocks)
            n = len(self.eval_labels)
            self.group_outputs(self.model_for(empty), "eval", ("eval-reference", np.arange(n)), tokens=True)
        return cache.reference

    def _keep_reference(self, pos: np.ndarray, top_ids: np.ndarray, top_logprobs: np.ndarray) -> None:
        """Store the original's top-k rows of the evaluation sequences at positions `pos` (the empty plan's pass)."""
        cache = self._original
        n = len(self.eval_labels)
        if cache.reference is None or cache.reference[0].shape[1:] != top_ids.shape[1:]:
            cache.reference = (
                np.zeros((n, *top_ids.shape[1:]), dtype=top_ids.dtype),
                np.zeros((n, *top_logprobs.shape[1:]), dtype=top_logprobs.dtype),
            )
        cache.reference[0][pos] = top_ids
        cache.reference[1][pos] = top_logprobs

    @torch.inference_mode()
    def group_outputs(
        self,
        model: CompressedModel,
        which: str,
        group: tuple[str, np.ndarray],
        logits: bool = False,
        *,
        tokens: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ForwardCount, np.ndarray | None]:
        """The pooled features of one input group (`which` probe or eval; and, with `logits`, the head's outputs
        from the same pass; with `tokens`, a causal LM's per-sequence next-token scores, `token_scores`), their row
        positions, and the block forwards spent. The empty plan's token pass keeps the original's top-k as the
        reference every other plan's KL and agreement compare with."""
        inputs = self.probe_inputs if which == "probe" else self.eval_inputs
        original = tokens and not model.plan.spans
        ids = self.token_ids() if tokens else None
        reference = None if not tokens or original else self.token_reference()

        def outputs(h: torch.Tensor, mask: torch.Tensor | None, pos: np.ndarray) -> tuple[torch.Tensor, ...]:
            f = model.pooled(h, mask)
            out: list[torch.Tensor | np.ndarray] = [f]
            if logits:  # CLIP's zero-shot classes in place of the tower's own output
                out.append(self.zero_shot.logits(f) if self.zero_shot is not None else model.tail(h, mask))
            if tokens:
                y = model.tail(h, mask)
                if original:
                    self._keep_reference(pos, *reference_rows(y))
                rows = None if original else (reference[0][pos], reference[1][pos])
                out.append(token_scores(y, ids[pos].to(y.device), rows))
            return tuple(out)

        name, rows = group
        positions, results, count = plan_forward(
            model, inputs, rows, name, self.prefix_store, device=self.loaded.device, outputs=outputs
        )
        feats = np.concatenate([r[0] for r in results])
        outs = np.concatenate([r[1] for r in results]) if logits else None
        scores = np.concatenate([r[-1] for r in results]) if tokens else None
        return positions, feats, outs, count, scores

    def outputs(
        self, model: CompressedModel, which: str = "eval", *, logits: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The pooled features of every probe or evaluation input (`which`), in the stored order, and with `logits`
        the head's outputs from the same pass."""
        n = len(self.probe_labels if which == "probe" else self.eval_labels)
        positions, feats, outs, _, _ = self.group_outputs(model, which, (f"{which}-all", np.arange(n)), logits=logits)
        order = np.argsort(positions, kind="stable")
        return (feats[order], outs[order]) if logits else feats[order]

    def original_features(self, own: Callable[[], np.ndarray] | None = None) -> np.ndarray:
        """The original model's pooled features of every evaluation input, in the stored order (what a plan's fidelity
        compares with): computed once per context, on first use. `own`: the empty plan's features from its own pass on
        the full sets, which the first to ask (the baseline, scored when the context is built) gives in place of a
        second pass over the original model."""
        cache = self._original
        if cache.features is None:
            cache.features = own() if own is not None else self._original_pass()
        return cache.features

    def _original_pass(self) -> np.ndarray:
        """The original model's evaluation features from a pass of its own, as the baseline's full-set pass makes it
        (for a copy of a context that none of its plans gave them to)."""
        empty = Plan((), self.loaded.num_blocks)
        return PlanOutputs(self, empty, self.model_for(empty), probe="ridge", stage=FULL).eval_features

    def evaluate(
        self,
        plan: Plan,
        *,
        probe: str | None = None,
        promote: Callable[[dict, int], Any] | None = None,
        subset_scores: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Score `plan` on every objective; timings split into fit, forward, probe and overhead.

        With `promote` (and a subset stage): scored on the subset first; `promote(subset scores, evaluation
        samples)` returns what stops it there (a dominating trial's number), else None, and the plan is scored on
        the full sets reusing the subset's forward. Without it: on the full sets. `subset_scores`: the subset stage's
        scores from before (an interrupted trial's), not computed again: the plan goes on to the full sets."""
        start = time.perf_counter()
        t = time.perf_counter()
        model = self.model_for(plan)
        fit_s = time.perf_counter() - t
        objectives = get_objectives(self.settings.scoring.objectives)
        done: dict[str, Any] = {}  # one trial's group outputs, shared by its stages
        stages = []
        result: dict[str, Any] = {}
        if subset_scores is not None and self.staged:
            result.update(subset_scores)
        elif promote is not None and self.staged:
            subset = PlanOutputs(self, plan, model, probe=probe or "ridge", stage=SUBSET, done=done)
            sub = compute_objectives(subset, objectives)
            stages.append(subset)
            n_sub = len(self.groups["eval"][0][1])
            result.update(subset_fields(sub, objectives, n_sub))
            stopped = promote(sub, n_sub)
            if stopped is not None:
                result.update(sub, dominated_by=stopped)
                result[SCORED_ON] = SUBSET
        if SCORED_ON not in result:
            full = PlanOutputs(self, plan, model, probe=probe or "ridge", stage=FULL, done=done)
            result.update(compute_objectives(full, objectives))
            result[SCORED_ON] = FULL
            stages.append(full)
        count = ForwardCount()
        for stage in stages:
            count.add(stage.count)
        forward_s = sum(o.seconds.get("forward", 0.0) for o in stages)
        probe_s = sum(o.seconds.get("probe", 0.0) for o in stages)
        total = time.perf_counter() - start
        result.update(
            forward_blocks=count.run,
            forward_blocks_reused=count.reused,
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


def _prefix_key(
    settings: SearchSettings,
    captured: CapturedActivations,
    probe_inputs: PreprocessedInputs,
    eval_inputs: PreprocessedInputs,
    device: torch.device,
) -> str:
    """Names the prefix store's folder: everything a stored state depends on (the model, the inputs and
    their batches, the translators' fits)."""
    doc = {
        "identity": settings.identity(),
        "capture": captured.directory.name,
        "probe": probe_inputs.path.parent.name,
        "eval": eval_inputs.path.parent.name,
        "batch_size": settings.batch_size,
        "device": str(device),
        "version": PREFIX_FORMAT,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _needs_labels(settings: SearchSettings) -> bool:
    """Whether an objective of the search reads the dataset's labels (else they are not loaded)."""
    return any("labels" in o.inputs(head=settings.scoring.head) for o in get_objectives(settings.scoring.objectives))


class PlanOutputs(TrialOutputs):
    """One plan's outputs on the context's inputs at one fidelity (`stage` subset: the first group of rows; full:
    all), for the objectives: each model pass run on first use, the evaluation features and logits in one pass
    when both are expected; a group's outputs kept in `done` for the trial's next stage."""

    def __init__(
        self, ctx: SearchContext, plan: Plan, model: CompressedModel, *, probe: str, stage: str = FULL, done=None
    ) -> None:
        super().__init__(plan=plan, cost=ctx.costs.cost(plan), head=ctx.settings.scoring.head, probe=probe)
        self._ctx = ctx
        self._model = model
        self._stage = stage
        self._done = {} if done is None else done
        self.count = ForwardCount()

    def _groups(self, which: str) -> tuple[tuple[str, np.ndarray], ...]:
        groups = self._ctx.groups.get(which) or ((which, np.arange(len(self._all_labels(which)))),)
        return groups[:1] if self._stage == SUBSET else groups

    def _all_labels(self, which: str) -> np.ndarray:
        return self._ctx.probe_labels if which == "probe" else self._ctx.eval_labels

    def _rows(self, which: str) -> np.ndarray | None:
        """The positions this stage scores (None: all, in the stored order)."""
        return self._groups(which)[0][1] if self._stage == SUBSET else None

    def _labels(self, which: str) -> np.ndarray:
        rows, labels = self._rows(which), self._all_labels(which)
        return labels if rows is None else labels[rows]

    @property
    def eval_labels(self) -> np.ndarray:
        return self._labels("eval")

    @property
    def probe_labels(self) -> np.ndarray:
        return self._labels("probe")

    @property
    def has_labels(self) -> bool:
        return _needs_labels(self._ctx.settings)

    @property
    def original_features(self) -> np.ndarray:
        """The original model's evaluation features at this stage's rows (the context's, computed once): the empty
        plan's own pass on the full sets gives them when it is the first to ask (the baseline, scored first)."""
        own = (lambda: self.eval_features) if not self.plan.spans and self._stage == FULL else None
        original = self._ctx.original_features(own)
        rows = self._rows("eval")
        return original if rows is None else original[rows]

    def _gather(
        self, which: str, logits: bool, tokens: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """This stage's outputs of `which` (probe or eval), in row order: each group run once per trial."""
        ctx = self._ctx
        positions, feats, outs, scores = [], [], [], []
        for group in self._groups(which):
            got = self._done.get(group[0])
            if got is None or (logits and got[2] is None) or (tokens and got[3] is None):
                pos, f, y, count, s = ctx.group_outputs(self._model, which, group, logits=logits, tokens=tokens)
                got = self._done[group[0]] = (pos, f, y, s)
                self.count.add(count)
            positions.append(got[0])
            feats.append(got[1])
            outs.append(got[2])
            scores.append(got[3])
        order = np.argsort(np.concatenate(positions), kind="stable")  # back to the inputs' stored order
        return (
            np.concatenate(feats)[order],
            np.concatenate(outs)[order] if logits else None,
            np.concatenate(scores)[order] if tokens else None,
        )

    def _compute(self, name: str) -> Mapping[str, Any]:
        if name == "downstream":
            return {name: self._downstream()}
        if name == "probe_features":
            return {name: self._gather("probe", False)[0]}
        if name == "token_scores":
            features, _, scores = self._gather("eval", False, tokens=True)
            return {"eval_features": features, "token_scores": scores}
        if name == "eval_logits" or "eval_logits" in self.expected:
            features, logits, _ = self._gather("eval", True)
            out = {"eval_features": features, "eval_logits": logits}
        else:
            out = {"eval_features": self._gather("eval", False)[0]}
        return out

    def _downstream(self) -> dict[str, float]:
        """The plan's lm-eval task scores (`downstream_scores` on the compressed model, `lm_eval_*` settings): run
        once per trial, its subset and full stages sharing them (lm-eval reads its own documents, not the stage's)."""
        scores = self._done.get(DOWNSTREAM_KEY)
        if scores is None:
            ctx, model = self._ctx, self._model
            scoring = ctx.settings.scoring

            def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return model(input_ids=input_ids, attention_mask=attention_mask)

            with torch.inference_mode():
                scores = downstream_scores(
                    logits,
                    ctx.loaded.processor,
                    scoring.lm_eval_tasks,
                    include_path=scoring.lm_eval_include,
                    limit=scoring.lm_eval_limit,
                    batch_size=ctx.settings.batch_size,
                    config=ctx.loaded.config,
                    device=ctx.loaded.device,
                    progress=ctx.settings.show_progress,
                )
            self._done[DOWNSTREAM_KEY] = scores
        return scores

    def time_batch(self, *, warmup: int, repeats: int) -> LatencyResult:
        device = self._ctx.loaded.device
        _, batch = next(iter(self._ctx.eval_inputs))
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            return measure_latency(lambda: self._model(**batch), warmup=warmup, repeats=repeats, device=device)


def _groups(which: str, n: int, fraction: float, seed: int) -> tuple[tuple[str, np.ndarray], ...]:
    """The rows of each fidelity stage of `n` inputs: the subset and the rest, or all of them in one group."""
    split = fidelity_rows(n, fraction, seed)
    if split is None:
        return ((f"{which}-all", np.arange(n)),)
    return (f"{which}-subset", split[0]), (f"{which}-rest", split[1])
