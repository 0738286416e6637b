"""One preparation for the search, its dry run and `analyze`: the checks, the data, the model, the space, the
cost table and the calibration's cache key, in one order, from the cheapest check to the most expensive work.

    prepare(settings)  ->  Prepared(train, test, loaded, space, costs, calibration, spec, samples_used, notes)

A bad path fails before any data is read, a model that cannot take the dataset fails from its config before
its weights are loaded. `SearchContext.build` goes on from a `Prepared` (calibrate, preprocess, score the
original); `--dry-run` prints it; `analyze` captures from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from toast.objectives import CostTable, LatencyTable, get_objectives
from toast.spaces import (
    Plan,
    PlanError,
    PlanSpace,
    kind_parameter,
    space_branch_pairs,
    space_pairs,
    translator_class,
)

from ..capture import (
    ActivationCache,
    CalibrationSettings,
    CaptureShape,
    CaptureSpec,
    ResourceEstimate,
    capture_spec,
    check_fits,
    check_modality,
    estimate_resources,
    memory_plan_bytes,
    meta_model,
    resolve_device,
)
from ..data import (
    TOKENS,
    LabeledSplit,
    check_inputs_fit,
    check_split,
    default_splits,
    iter_batches,
    load_split,
    pack_split,
    sample_ids,
)
from ..models import (
    LoadedModel,
    ModelSource,
    load_model,
    load_processor,
    measure_cost_table,
    refused_spans,
    resolve_model,
)
from ._calib_data import load_calibration_split
from ._latency import architecture_fingerprint, describe_inputs, latency_inputs, measure_latency_table, unsteady
from ._latency_file import check_latency_file, check_table_fits, read_latency_file
from ._preflight import check_cache_dir, check_run_directory, check_writable_dir
from ._settings import DataSettings, SearchSettings, SettingsError, SpaceSettings
from ._study import resolve_budgets
from ._zero_shot import ZeroShotSpec, resolve_zero_shot
from .runtimes import get_runtime

__all__ = ["DTYPES", "Prepared", "preflight", "prepare", "samples_used", "space_kinds"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """What the search, `--dry-run` and `analyze` share. `test`, `space` and `costs` are None for a capture only
    (`prepare(..., search=False)`, as `analyze` asks)."""

    settings: SearchSettings
    train: LabeledSplit
    test: LabeledSplit | None
    loaded: LoadedModel
    space: PlanSpace | None
    costs: CostTable | None
    calibration: CalibrationSettings
    spec: CaptureSpec  # the calibration capture's cache key
    samples_used: dict[str, int]  # the sample counts really used (a split may hold fewer than asked)
    notes: tuple[str, ...]  # one line per count cut short, for the caller to print
    calib: LabeledSplit | None = None  # the split the translators are fitted on, when not `train` (`calib_dataset`)
    estimate: ResourceEstimate | None = None  # the capture's and a trial's needs (`estimate_run`; None: unknown)
    zero_shot: ZeroShotSpec | None = None  # `head` zero-shot: the class names and templates

    @property
    def calibration_split(self) -> LabeledSplit:
        """The split the calibration samples are drawn from: `calib`, else `train`."""
        return self.calib or self.train

    @property
    def cache(self) -> ActivationCache:
        return ActivationCache(self.settings.cache_dir)

    @property
    def cache_hit(self) -> bool:
        """Whether the calibration capture is already in the cache (nothing is read but its manifest)."""
        return self.cache.exists(self.spec)


def preflight(settings: SearchSettings, *, run: bool = True) -> None:
    """Everything that can be checked before loading a model: paths, the stored study, the settings it was
    made with, the objectives and the plans' syntax. Nothing is written. `run` False: `out` is a plain output
    directory (`analyze`), not a run directory; only it and the cache are checked."""
    if run:
        check_run_directory(settings)
    else:
        check_writable_dir(settings.study.out, "output directory (`out`)")
    check_cache_dir(ActivationCache(settings.cache_dir).root)
    if run:
        get_objectives(settings.scoring.objectives)
        for text in settings.space.plans:  # syntax, kinds and overlaps, before any model is loaded
            Plan.parse(text, num_blocks=10**6)


def samples_used(
    settings: SearchSettings, train: LabeledSplit, test: LabeledSplit | None, calib: LabeledSplit | None = None
) -> tuple[dict[str, int], list[str]]:
    """The calibration, probe and evaluation sample counts a run really uses (a split may hold fewer than
    asked), and one note per count cut short. A default count is an upper bound: a split holding fewer is used
    whole without a note (the demo's 1,347 train samples are not news); a count set to another value is noted.
    `test` None (a capture only): the calibration count alone."""
    asked = {"calib_samples": (settings.data.calib_samples, calib or train)}
    if test is not None:
        asked.update(
            probe_samples=(settings.data.probe_samples, train), eval_samples=(settings.data.eval_samples, test)
        )
    defaults = {f.name: f.default for f in fields(DataSettings)}
    used, notes = {}, []
    for name, (n, split) in asked.items():
        used[name] = min(n, len(split))
        if n > len(split) and n != defaults[name]:
            notes.append(
                f"note: --{name.replace('_', '-')} {n} but split {split.split!r} of {split.name!r} holds {len(split)} samples: using {len(split)}"
            )
    return used, notes


def space_kinds(settings: SearchSettings | SpaceSettings, width: int) -> tuple[str, ...]:
    """The space's kind strings: `translators`, with each bare kind that takes a rank (`lowrank`) as one
    `kind:r` per rank of `ranks` at the model's `width` (`lowrank` with ranks d/16,d/8 at 768: lowrank:48,lowrank:96)."""
    space = settings.space if isinstance(settings, SearchSettings) else settings
    kinds: list[str] = []
    for kind in space.translators:
        if ":" not in kind and kind_parameter(kind) == "rank":
            kinds += [f"{kind}:{r}" for r in space.resolved_ranks(width)]
        else:
            kinds.append(kind)
    return tuple(dict.fromkeys(kinds))


def _latency_table(
    settings: SearchSettings, loaded: LoadedModel, space: PlanSpace, notes: list[str], given: LatencyTable | None
):
    """The run's latency table (space kinds and those of `plans`): the `latency_table` file `given` (checked to fit the
    run), else from the cache or measured now in `latency_runtime` (said in a note)."""
    kinds = [*space.kinds, *(s.kind for t in settings.space.plans for s in Plan.parse(t, loaded.num_blocks).spans)]
    if given is not None:
        inputs = latency_inputs(
            loaded, batch_size=settings.scoring.latency_batch_size, seq_len=settings.scoring.latency_seq_len
        )
        check_table_fits(
            given,
            settings.scoring.latency_table,
            num_blocks=loaded.num_blocks,
            inputs=describe_inputs(inputs),
            mode=settings.scoring.latency_mode,
            kinds=dict.fromkeys(kinds),
        )
        notes.append(
            f"latency table from {settings.scoring.latency_table}: {given.describe()}, original estimated "
            f"{given.original_ms:.4g} ms per batch, margin {given.margin:.1%} (measured there: the end of the run does "
            "not time it here)"
        )
        notes += [f"latency table {settings.scoring.latency_table}: {line}" for line in [unsteady(given.drift)] if line]
        return given
    table, measured = measure_latency_table(
        loaded,
        kinds=kinds,
        batch_size=settings.scoring.latency_batch_size,
        seq_len=settings.scoring.latency_seq_len,
        cache_dir=ActivationCache(settings.cache_dir).root,
        mode=settings.scoring.latency_mode,
        runtime=settings.scoring.latency_runtime,
    )
    notes.append(
        f"latency table {'measured' if measured else 'from the cache'}: {table.describe()}, "
        f"original estimated {table.original_ms:.4g} ms per batch, margin {table.margin:.1%}"
    )
    notes += [f"latency table: {line}" for line in [unsteady(table.drift)] if line]
    return table


def _given_latency_table(settings: SearchSettings, device: torch.device) -> LatencyTable | None:
    """The `latency_table` file's table (read and checked to be one), or None; without one, a runtime that cannot
    run here (`latency_runtime`) is refused now, in one line."""
    if not settings.needs_latency:
        return None
    if settings.scoring.latency_table is not None:
        return read_latency_file(settings.scoring.latency_table)
    get_runtime(settings.scoring.latency_runtime).check(device, settings.scoring.latency_mode, settings.dtype)
    return None


def _check_splits(
    settings: SearchSettings, train: LabeledSplit, test: LabeledSplit | None, calib: LabeledSplit
) -> None:
    """The splits' defects (`check_split`), before any weight is loaded: labels where an accuracy is measured, two
    classes where a probe is fitted."""
    labels = test is not None and "accuracy" in settings.scoring.objectives
    probe = labels and settings.scoring.head == "probe"
    check_split(train, flag="split_train", labels=probe, min_classes=2 if probe else 1)
    if test is not None:
        check_split(test, flag="split_test", labels=labels)
    if calib is not train:
        check_split(calib, flag="calib_split", labels=False)


def _packed(
    settings: SearchSettings,
    source: ModelSource,
    train: LabeledSplit,
    test: LabeledSplit | None,
    calib: LabeledSplit,
) -> tuple[LabeledSplit, LabeledSplit | None, LabeledSplit]:
    """The splits' documents packed into `seq_len`-token sequences with the model's tokenizer (cached)."""
    tokenizer = load_processor(source.where, source.family)
    root = ActivationCache(settings.cache_dir).root
    config = source.config
    longest = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if longest is not None and settings.data.seq_len > int(longest):
        raise SettingsError(
            f"`seq_len` {settings.data.seq_len} is longer than model {settings.data.model!r} takes "
            f"({int(longest)} positions): lower `seq_len` to at most {int(longest)}"
        )

    def pack(split: LabeledSplit | None) -> LabeledSplit | None:
        if split is None or split.modality == TOKENS:
            return split
        return pack_split(split, tokenizer, settings.data.seq_len, root, model=settings.data.model)

    packed_train = pack(train)
    return packed_train, pack(test), packed_train if calib is train else pack(calib)


def check_objectives_fit(settings: SearchSettings, family) -> None:
    """Each objective scores what the model outputs: perplexity, KL and agreement only a causal LM's next-token
    logits; a causal LM is scored by its own LM head, so `head` and `probe` (a classifier's) stay at their defaults;
    `SettingsError` in one line otherwise."""
    from toast.objectives import check_downstream, get_objectives

    lm = family.modality == TOKENS
    if settings.scoring.latency_mode == "decode" and not lm:
        raise SettingsError(
            f"`latency_mode` decode times a causal language model's decoding step, but model {settings.data.model!r} "
            f"is a {family.modality} encoder: use `latency_mode` prefill (a forward over whole inputs)"
        )
    if lm:
        for key, value, default in (
            ("head", settings.scoring.head, "probe"),
            ("probe", settings.scoring.probe, "ridge"),
        ):
            if value != default:
                raise SettingsError(
                    f"`{key}` {value}: model {settings.data.model!r} is a causal language model, scored by its own LM "
                    f"head on running text (perplexity, kl, top1), with no classifier or probe: leave `{key}` out"
                )
    for objective in get_objectives(settings.scoring.objectives):
        needs_lm = bool({"token_scores", "downstream"} & objective.needs)
        if needs_lm and not lm:
            raise SettingsError(
                f"objective {objective.name!r} scores a causal language model's next-token predictions, but model "
                f"{settings.data.model!r} is a {family.modality} encoder: use accuracy or fidelity (`objectives`)"
            )
        if lm and "labels" in objective.inputs(head=settings.scoring.head):
            raise SettingsError(
                f"objective {objective.name!r} needs labelled samples, but model {settings.data.model!r} is a causal "
                "language model scored on running text: use perplexity, kl or top1 (`objectives`)"
            )
    if "downstream" in settings.scoring.objectives:  # lm-eval installed, its tasks known and scorable: before the model
        check_downstream(settings.scoring.lm_eval_tasks, settings.scoring.lm_eval_include)


def capture_needs(
    settings: SearchSettings, space: PlanSpace | None, num_blocks: int
) -> tuple[frozenset[tuple[int, int]] | None, frozenset[tuple[int, int]] | None, frozenset[int]]:
    """What the calibration capture must hold for this run: the pairs of states whose statistics the space's spans
    (and those of `plans`) read, with the diagonal and adjacent pairs (`space_pairs`; None without a space: a
    capture only, `analyze`, needs every pair), the MLP branch blocks its `folded` spans read
    (`space_branch_pairs`; None: every one), and the states whose activation shards are read: the sources and
    targets of the spans of a trained kind (`needs_activations`), every state for `refit` sequential (its prefix
    passes read each later state), none otherwise."""
    if space is None:
        return None, None, frozenset()
    plan_spans = [s for t in settings.space.plans for s in Plan.parse(t, num_blocks).spans]
    max_len = space.removal_limit
    pairs = space_pairs(num_blocks, max_len, extra=[(s.source, s.target) for s in plan_spans])
    folded = [s for s in plan_spans if translator_class(s.kind).needs_branches]
    sourced = any(translator_class(k).needs_branches for k in space.kinds)
    branch_pairs = space_branch_pairs(num_blocks, max_len if sourced else 0, extra=[(s.start, s.end) for s in folded])
    if settings.space.refit == "sequential":
        return pairs, branch_pairs, frozenset(range(num_blocks + 1))
    states: set[int] = set()
    if any(translator_class(k).needs_activations for k in space.kinds):
        states |= {k for pair in pairs if pair[0] != pair[1] for k in pair}
    states |= {k for s in plan_spans if translator_class(s.kind).needs_activations for k in (s.source, s.target)}
    return pairs, branch_pairs, frozenset(states)


def estimate_run(
    settings: SearchSettings,
    source: ModelSource,
    calib: LabeledSplit,
    used: dict[str, int],
    device: str,
    *,
    search: bool,
) -> ResourceEstimate | None:
    """The capture's host and device memory, disk and time and a trial's time (`toast.capture.estimate_resources`),
    from the model's config (a meta-device model: no weight is read), one batch of calibration inputs (its tokens)
    and the space the settings describe; a capture that cannot fit is refused here, in one line naming the flag
    (`check_fits`), before any weight is loaded. None where a batch of inputs does not run through the meta model's
    embeddings (`check_inputs_fit` then says why on the loaded model)."""
    family, config = source.family, source.config
    if config.model_type == "clip":  # a whole CLIP checkpoint (zero-shot): the search runs its vision tower
        config = config.vision_config
    meta = meta_model(config, family.model_class(config))
    parts = family.parts(meta)
    processor = load_processor(source.where, family)
    ids = sample_ids(len(calib), used["calib_samples"], settings.study.seed)
    try:
        _, inputs = next(iter_batches(calib, ids[: settings.batch_size], processor, settings.batch_size))
        hidden, _ = family.embed(parts.embeddings, {k: v.to("meta") for k, v in inputs.items()})
    except Exception:  # inputs the model cannot take: said by `check_inputs_fit` on the loaded model
        return None
    mask = family.token_mask(inputs, torch.device("cpu"))
    padded = int(hidden.shape[1])
    tokens = float(mask.sum()) / mask.shape[0] if mask is not None else padded
    L = len(parts.blocks)
    space = None
    if search:
        kinds = space_kinds(settings, int(config.hidden_size))
        kinds = tuple(k for k in kinds if not translator_class(k).refuse_family(family, parts.blocks[0]))
        space = PlanSpace(
            num_blocks=L, kinds=kinds, max_removed=settings.space.max_removed, min_kept=settings.space.min_kept
        )
    pairs, branch_pairs, states = capture_needs(settings, space, L)
    branches = family.mlp_branch(parts.blocks[0]) is not None and (branch_pairs is None or bool(branch_pairs))
    shape = CaptureShape.from_config(
        config,
        tokens_per_sample=tokens,
        padded_tokens=padded,
        branches=branches,
        dtype=settings.dtype,
        params=sum(p.numel() for p in meta.parameters()),
    )
    estimate = estimate_resources(
        shape,
        samples=used["calib_samples"],
        batch_size=settings.batch_size,
        pairs=pairs,
        branch_pairs=branch_pairs,
        states=states,
        memory_bytes=memory_plan_bytes(
            settings.data.stats_memory_gb,
            device,
            loading_bytes=0 if settings.device_map else shape.params * shape.param_bytes,
        ),
        activation_dtype=settings.activation_dtype,
        device=device,
        trial_samples=used.get("probe_samples", 0) + used.get("eval_samples", 0),
        spans_per_trial=max(1, space.removal_limit if space is not None else 1),
        offloaded=settings.device_map is not None,
    )
    check_fits(
        estimate, cache_root=ActivationCache(settings.cache_dir).root, device=device, batch_size=settings.batch_size
    )
    return estimate


def prepare(settings: SearchSettings, *, search: bool = True, check_paths: bool = True) -> Prepared:
    """Check, load and measure what a run needs, cheapest first: paths (`preflight`), the device, the splits,
    the dataset's modality against the model's config, the sample counts, the model, the space, the cost
    table (with the latency table when latency is an objective or budgeted: measured once, cached under
    `cache_dir`), the budgets against the cheapest plan, and the calibration's cache key. Nothing is captured;
    nothing is written but a newly measured latency table.

    `search` False: a capture only (`analyze`): the train split (`split_train`), the model and the cache key;
    no test split, space or cost table, and `out` checked as a plain output directory. `check_paths` False: no
    `preflight` (a Ray worker: its driver made it, and its node may see only the cache).
    """
    if check_paths:
        preflight(settings, run=search)
    device = resolve_device(settings.device)
    given = _given_latency_table(settings, device) if search else None  # a bad file or runtime: before any loading
    columns = {
        "input_column": settings.data.input_column,
        "label_column": settings.data.label_column,
        "cache_dir": ActivationCache(settings.cache_dir).root,
    }
    default_train, default_test = default_splits(settings.data.dataset)
    train = load_split(settings.data.dataset, settings.data.split_train or default_train, **columns)
    test = load_split(settings.data.dataset, settings.data.split_test or default_test, **columns) if search else None
    source = resolve_model(settings.data.model)
    if given is not None:  # another architecture's table: from the config, before the weights
        check_latency_file(
            given,
            settings.scoring.latency_table,
            fingerprint=architecture_fingerprint(source.config),
            model=settings.data.model,
        )
    check_modality(source.family, train, settings.data.model)  # from the config, before the weights
    if search and settings.needs_latency and settings.scoring.latency_table is None:
        scoring = settings.scoring
        get_runtime(scoring.latency_runtime).check_model(
            source.family, source.config, scoring.latency_mode, scoring.latency_seq_len
        )
    if search:
        check_objectives_fit(settings, source.family)
    calib = load_calibration_split(settings, train, source.family)
    _check_splits(settings, train, test, calib)
    if source.family.modality == TOKENS:  # an LM's documents, as packed token sequences (`toast.data._corpus`)
        train, test, calib = _packed(settings, source, train, test, calib)
    zero_shot = resolve_zero_shot(settings, source, test)
    used, notes = samples_used(settings, train, test, calib)
    estimate = estimate_run(settings, source, calib, used, device, search=search)  # refused here if it cannot fit
    loaded = load_model(
        settings.data.model,
        device=device,
        dtype=DTYPES[settings.dtype],
        text_tower=zero_shot is not None,
        device_map=settings.device_map,
    )
    check_inputs_fit(loaded, calib)  # one sample through the processor and the embeddings
    if estimate is None:  # the inputs run on the loaded model (`check_inputs_fit`): estimated from them now
        estimate = estimate_run(settings, source, calib, used, device, search=search)
    space = costs = None
    if search:
        kinds = []
        for kind in space_kinds(settings, loaded.hidden_size):
            reason = translator_class(kind).refuse_family(loaded.family, loaded.parts.blocks[0])
            if reason:  # a kind this architecture cannot take is left out of the space, said in one line
                notes.append(f"note: --translators {kind} left out of the space: {reason}")
            else:
                kinds.append(kind)
        space = PlanSpace(
            num_blocks=loaded.num_blocks,
            kinds=tuple(kinds),
            max_removed=settings.space.max_removed,
            min_kept=settings.space.min_kept,
        )
        costs = measure_cost_table(loaded, kinds=space.kinds)
        for (
            text
        ) in settings.space.plans:  # blocks and kinds this model can take (a rank above its width), before any capture
            plan = Plan.parse(text, loaded.num_blocks)
            try:
                costs.cost(plan)
                refusals = refused_spans(plan, loaded.family, loaded.parts.blocks[0])
                if refusals:
                    raise PlanError("; ".join(refusals))
            except PlanError as e:
                raise PlanError(f"`plans` {text!r}: {e}") from None
        if settings.needs_latency:  # timed once per machine and cached; budgets checked before any capture
            costs = replace(costs, latency=_latency_table(settings, loaded, space, notes, given))
        resolve_budgets(settings.study, costs, space)
    # MLP-branch statistics cost about a third more capture time and memory: gathered only when a kind needs them
    kinds = set(space.kinds if space is not None else ()) | {
        s.kind for t in settings.space.plans for s in Plan.parse(t, 10**6).spans
    }
    pairs, branch_pairs, states = capture_needs(settings, space, loaded.num_blocks)
    calibration = CalibrationSettings(
        samples=settings.data.calib_samples,
        seed=settings.study.seed,
        batch_size=settings.batch_size,
        activation_dtype=settings.activation_dtype,
        branches=any(translator_class(k).needs_branches for k in kinds),
        pairs=pairs,
        branch_pairs=branch_pairs,
        states=states,
        stats_memory_gb=settings.data.stats_memory_gb,
    )
    return Prepared(
        settings=settings,
        train=train,
        test=test,
        loaded=loaded,
        space=space,
        costs=costs,
        calibration=calibration,
        spec=capture_spec(loaded, calib, calibration),
        samples_used=used,
        notes=tuple(notes),
        calib=calib if calib is not train else None,
        zero_shot=zero_shot,
        estimate=estimate,
    )
