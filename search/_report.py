"""The end of a run, reporting: front.json, the figures and the summary on stdout, from what `toast.search._final`
computed (`Final`, `Choice`); each writes or says, none computes a score.

`front_document` is front.json's content and `write_front` writes it; `draw_front` writes pareto.png and
similarity.png; `print_summary` prints the front's caption and table, then what was chosen and exported (or how to
export a plan), then what was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toast.objectives import Objective, SampledSimilarity, SimilarityReport, plot_cka

from .._artifacts import atomic_write_text
from .._faults import fault_point
from ..capture import observe_calibration
from ..data import sample_ids
from ..models import checkpoint_layout, describe_checkpoint
from ._calib_data import calibration_record
from ._context import SearchContext
from ._export import describe_head, export_hint, head_record
from ._final import Choice, Final
from ._measured import EndToEnd
from ._pareto import on_task_plane, pareto_axes
from ._plot import plot_pareto
from ._settings import SearchSettings
from ._similarity_file import read_similarity, write_similarity
from ._study import reported
from ._summary import field_glossary, format_front_table, front_caption
from ._zero_shot import zero_shot_record

__all__ = ["draw_front", "front_document", "print_summary", "write_front"]


def front_document(
    settings: SearchSettings,
    ctx: SearchContext,
    final: Final,
    choice: Choice,
    objectives: list[Objective],
    trials: int,
) -> dict[str, Any]:
    """front.json's content: the run's model, data, objectives, budgets, head and calibration, the original's and the
    front's final scores, the chosen plan and where it is, and a glossary of every field shown."""
    out, chosen, exported = settings.out, choice.record, choice.export
    doc = {
        "model": settings.data.model,
        "dataset": settings.data.dataset,
        "objectives": [{"name": o.name, "direction": o.direction, "unit": o.unit} for o in objectives],
        "budgets": choice.budgets,
        "probe": _probe_field(settings, ctx),
        "head": exported.head if exported is not None else head_record(settings, final.context, exported=False),
        "calibration": calibration_record(ctx.calib, ctx.train, ctx.samples_used.get("calib_samples")),
        **({"zero_shot": zero_shot_record(ctx.zero_shot, ctx.zero_shot_cost)} if ctx.zero_shot else {}),
        "baseline": reported({"spans": [], "plan": "original", **final.baseline}),
        "front": [reported(r) for r in final.front],
        "chosen": reported(chosen) if chosen else None,
        "chosen_dir": "chosen" if chosen else None,  # relative to this file's folder
        "chosen_format": _chosen_format(out / "chosen") if chosen else None,
        "trials": trials,
    }
    doc["glossary"] = field_glossary(
        list(dict.fromkeys(k for r in (doc["baseline"], *doc["front"], doc["chosen"] or {}) for k in r))
    )
    return doc


def _probe_field(settings: SearchSettings, ctx: SearchContext) -> str | None:
    """front.json's `probe`: the probe protocol, `<head>-head` for another head, None for a causal LM (scored by its
    own LM head)."""
    if ctx.causal_lm:
        return None
    return settings.scoring.probe if settings.scoring.head == "probe" else f"{settings.scoring.head}-head"


def _chosen_format(directory: Path) -> str:
    """front.json's `chosen_format`: what loads `chosen/`: `plain` (Transformers), `toast`
    (`CompressedModel.from_pretrained`) or `sentence-transformers`."""
    if (directory / "modules.json").is_file():
        return "sentence-transformers"
    return checkpoint_layout(directory)


def write_front(out: Path, doc: dict[str, Any]) -> None:
    """Write front.json (whole or not at all)."""
    fault_point("finalize")
    atomic_write_text(out / "front.json", json.dumps(doc, indent=2, ensure_ascii=False))


def draw_front(
    settings: SearchSettings,
    ctx: SearchContext,
    final: Final,
    choice: Choice,
    scored: list[dict[str, Any]],
    names: list[str],
    latency: EndToEnd,
) -> None:
    """pareto.png (every scored trial, the study's front, the original, the chosen plan and the budget; the task score
    (accuracy, perplexity) against the primary cost with latency beside it when measured, else the second objective
    against the first) and similarity.png (the original's blocks' linear CKA)."""
    out, budgets, chosen = settings.out, choice.budgets, choice.record
    x, y = pareto_axes(names)
    title = f"{settings.data.model} on {settings.data.dataset}"
    scored = latency.known(scored)  # the front plans' measured latency, drawn beside their estimates
    if on_task_plane(names):  # the task score against the primary cost: with its budget line (and latency beside it)
        plot_pareto(
            scored,
            out / "pareto.png",
            y=y,
            front=final.study,
            baseline=final.baseline,
            chosen=chosen,
            panels=latency.panels(x, budgets),
            measured=EndToEnd.PLOTTED,
            title=title,
        )
    elif len(names) >= 2:
        plot_pareto(
            scored,
            out / "pareto.png",
            x=x,
            y=y,
            front=final.study,
            baseline=final.baseline,
            budget=budgets.get(x),
            chosen=chosen,
            measured=EndToEnd.PLOTTED,
            title=title,
        )
    plot_cka(similarity_report(settings, ctx).cka, out / "similarity.png", title=f"linear CKA, {settings.data.model}")


def similarity_report(settings: SearchSettings, ctx: SearchContext) -> SimilarityReport:
    """The block-by-block similarity of the original model: exact (every token) from the capture's statistics when
    they hold every pair of states; else from a seeded token sample of a second streaming pass over the same
    calibration samples (`SampledSimilarity`: the capture then holds only the pairs the space uses), kept for the
    entry; a new capture's own pass already took that sample (`SearchContext.build`)."""
    stats = ctx.captured.stats
    if stats.all_pairs:
        return SimilarityReport.from_stats(stats)
    kept = read_similarity(ctx.captured, settings.study.seed)  # sampled during the capture's pass
    if kept is not None:
        return kept
    split = ctx.calib if ctx.calib is not None else ctx.train
    cls_index = ctx.loaded.family.layout(ctx.loaded.config).cls_index
    sampled = SampledSimilarity(stats.num_states, seed=settings.study.seed, cls_index=cls_index)
    ids = sample_ids(len(split), settings.data.calib_samples, settings.study.seed)
    observe_calibration(ctx.loaded, split, ids, settings.batch_size, (sampled,))
    report = SimilarityReport.from_sample(sampled)
    write_similarity(ctx.captured, settings.study.seed, report)
    return report


def print_summary(settings: SearchSettings, final: Final, choice: Choice, names: list[str], latency: EndToEnd) -> None:
    """The run's summary on stdout: the front's caption and table (with the measured latency), then the chosen plan
    and its export, or why nothing was exported and how to export a front plan, then the files written."""
    out, budgets, chosen = settings.out, choice.budgets, choice.record
    x, y = pareto_axes(names)
    print(front_caption(final.study, x, y))
    print(format_front_table(final.front, final.baseline, latency.columns(names)))
    if chosen is not None:
        print(
            f"chosen within budget ({', '.join(f'{k} <= {v:.4g}' for k, v in budgets.items())}): {chosen['plan']} -> {out / 'chosen'}"
        )
        print(f"chosen/ is {describe_checkpoint(out / 'chosen')}")
        for line in choice.export.lines():
            print(line)
    else:
        line = describe_head(head_record(settings, final.context, exported=False))
        if line:
            print(line)
        if budgets:
            hint = export_hint(out, final.front)
            print(f"no scored plan fits the budget yet: run more trials, or export a front plan with {hint}")
        else:
            print(
                f"no budget given, so nothing was exported: export any front plan with {export_hint(out, final.front)}"
            )
    print(f"wrote {out}/trials.csv, front.json, pareto.png, similarity.png" + (", chosen/" if chosen else ""))
