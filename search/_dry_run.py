"""The dry run: what a search would run (model, space size, budgets, calibration cache hit or miss, trials), from
the same preparation as the search, with nothing captured and nothing written."""

from __future__ import annotations

from ._settings import SearchSettings
from .samplers import SamplerContext, get_sampler

__all__ = ["describe_run"]


def describe_run(settings: SearchSettings) -> list[str]:
    """The lines `toast-search --dry-run` prints: the model, its cost, the data, the space, the objectives, the
    calibration cache, the preparation's notes and what would run where."""
    from toast.objectives import get_objectives
    from toast.runners import get_runner

    from ._prepare import prepare
    from ._storage import study_file
    from ._study import resolve_budgets

    get_runner(settings.runner.name).check(settings.runner.options)  # an unreachable --ray-address fails first
    prepared = prepare(settings)
    objectives = get_objectives(settings.scoring.objectives)
    loaded, train, space, costs = prepared.loaded, prepared.train, prepared.space, prepared.costs
    _, notes = resolve_budgets(settings.study, costs, space)
    resumed = study_file(settings.out) is not None
    lines = [
        f"model      {loaded.model_id} ({loaded.family.name}, {loaded.num_blocks} blocks, width {loaded.hidden_size})",
        f"original   {costs.original.gflops:.4g} GFLOPs, {costs.original.mparams:.4g} M params at "
        f"{costs.input_description}",
        f"dataset    {train.name} ({len(train)} train samples, input column {train.input_column!r}, labels "
        f"{train.label_column!r})",
        f"space      {space.size():,} plans ({', '.join(space.kinds)}; max removed {space.removal_limit})",
        f"objectives {', '.join(f'{o.name} ({o.direction})' for o in objectives)}",
        f"calibration cache {'hit' if prepared.cache_hit else 'miss'}: {settings.data.calib_samples} samples -> "
        f"{prepared.cache.path(prepared.spec)}",
    ]
    if prepared.calib is not None:  # --calib-dataset / --calib-split
        lines.append(f"calibration from {prepared.calib.name} (split {prepared.calib.split!r}), not the probe's data")
    if prepared.zero_shot is not None:
        lines.append(f"zero-shot  {prepared.zero_shot.describe()}")
    estimate = prepared.estimate.lines() if prepared.estimate is not None else []
    lines += [*estimate, *prepared.notes, *notes]
    study = settings.study
    plans = settings.space.plans
    trials, spec = study.trials, get_sampler(study.sampler)
    if spec.planned is not None:  # a peer's rule proposes so many plans and no more
        trials = min(trials, spec.planned(SamplerContext(space=space, seed=study.seed, trials=study.trials)))
    what = f"score {len(plans)} given plan(s)" if plans else f"{study.sampler} sampler, up to {trials} trials"
    lines.append(f"would run  {what}; out {settings.out}" + (" (resuming its study)" if resumed else ""))
    return lines
