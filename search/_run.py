"""One search run, end to end: prepare once, run the trials, then choose, export and report."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toast.objectives import get_objectives, task_score
from toast.runners import get_runner
from toast.spaces import Plan

from ._context import SearchContext
from ._final import choose_plan, export_choice, rescore_front, study_front
from ._lock import run_directory_lock
from ._manual import manual_space
from ._measured import EndToEnd
from ._quiet import note, run_console
from ._report import draw_front, front_document, print_summary, write_front
from ._settings import SearchSettings
from ._study import Search, scored_records, write_trials_csv
from ._trial import SearchTrials


@dataclass
class RunResult:
    out: Path
    records: list[dict[str, Any]]
    front: list[dict[str, Any]]
    baseline: dict[str, Any]
    chosen: dict[str, Any] | None


def run_search(settings: SearchSettings) -> RunResult:
    """Run (or resume) the search described by `settings` and write every output file; one process at a time in a
    run directory (a second one is refused at once, naming the first)."""
    get_runner(settings.runner.name).check(settings.runner.options)  # an unreachable --ray-address fails here, first
    with run_console(), run_directory_lock(settings.out):  # Optuna's INFO line per trial off, warnings one line
        return _run_search(settings)


def _run_search(settings: SearchSettings) -> RunResult:
    # `preflight` first: nothing loaded for a bad path
    ctx = SearchContext.build(settings, progress=settings.show_progress)
    objectives = get_objectives(settings.scoring.objectives)
    plans: list[Plan] = []
    if settings.space.plans:
        space, plans = manual_space(settings, ctx.space)
        ctx = replace(ctx, space=space)
    search = Search(settings, space=ctx.space, costs=ctx.costs, evaluate=ctx.evaluate, stats=ctx.captured.stats)
    for line in search.notes:
        note(line)
    settings.out.mkdir(parents=True, exist_ok=True)
    settings.save(settings.out / "settings.json", used=ctx.samples_used)
    if plans:
        n = search.enqueue(plans)
    else:
        search.prepare()
        n = search.trials_to_run()
    interrupted = None
    try:
        _run_trials(settings, ctx, search, n)
    except KeyboardInterrupt as exc:
        interrupted = exc
    if search.disk_error is not None:  # a full disk stopped the trials: the run's files stay as they were
        raise search.disk_error
    result = finalize(settings, ctx, search, objectives)
    if interrupted is not None:
        raise interrupted
    return result


def _run_trials(settings: SearchSettings, ctx: SearchContext, search: Search, n: int) -> None:
    """The trials, on the runner the settings name: every runner asks through `Search.define` and scores with a
    `SearchContext` (the driver's, or a Ray worker's own), through the one factory `SearchTrials`."""
    progress = _progress(search, n, settings.show_progress)
    get_runner(settings.runner.name).run(
        search.study,
        SearchTrials.of(settings, capture=ctx.captured.directory, search=search),
        n_trials=n,
        options=settings.runner.options,
        timeout=settings.study.timeout,
        callbacks=[search.remember, progress],
        directory=settings.out,
    )


def _progress(search: Search, total: int, enabled: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled or total == 0, file=sys.stderr)
    best = [None]
    task = task_score(search.objectives) or task_score()  # the bar shows its best feasible value
    better = max if task is None or task.maximize else min

    def callback(study, trial) -> None:
        value = trial.user_attrs.get(task.name) if task is not None else None
        if value is not None and trial.user_attrs.get("feasible") and trial.user_attrs.get("scored", True):
            best[0] = value if best[0] is None else better(best[0], value)
        bar.update(1)
        if best[0] is not None:
            bar.set_postfix_str(f"best feasible {task.name} {task.display.fmt.format(best[0])}{task.display.unit}")
        if bar.n >= bar.total:
            bar.close()

    return callback


def finalize(settings: SearchSettings, ctx: SearchContext, search: Search, objectives) -> RunResult:
    """trials.csv, front.json (front re-scored with the chosen probe), pareto.png, similarity.png, chosen/.

    With a latency table (latency an objective or budgeted), the original, every front plan and the chosen one are
    measured end to end (`latency_ms`, beside the estimate `latency_ms_estimated`), and the chosen plan meets a
    latency budget as measured (`EndToEnd`)."""
    out, names = settings.out, [o.name for o in objectives]
    records = search.records()
    scored = scored_records(records, objectives, space=ctx.space)
    front = study_front(scored, objectives)
    on_front = {r.get("number") for r in front.records}  # trials.csv's `on_front`: front.json's front
    write_trials_csv(records, out / "trials.csv", front=on_front)
    final = rescore_front(settings, ctx, front, objectives)
    latency = EndToEnd.for_run(settings, ctx)
    final = final.measured(latency)
    choice = choose_plan(final, scored, search.budgets.as_dict(), objectives, latency)
    if latency.on:  # again, with the front's measured latency
        records = latency.known(records)
        write_trials_csv(records, out / "trials.csv", front=on_front)
    choice = export_choice(final, choice, out / "chosen")
    write_front(out, front_document(settings, ctx, final, choice, objectives, trials=len(records)))
    draw_front(settings, ctx, final, choice, scored, names, latency)
    print_summary(settings, final, choice, names, latency)
    return RunResult(out, records, final.front, final.baseline, choice.record)
