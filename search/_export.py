"""Exporting one plan: its compressed model with the head the run scored it with, scored through that very head.

What a run reports is what it ships. With `head` probe, the probe the front was scored with (fitted on the plan's
own features of the probe samples) is folded into the model's classifier (`toast.models._head`): the task's
Transformers class where one reads the probe's features (ViT, DeiT, DINOv2; `pipeline("image-classification")`
and `AutoModelForImageClassification` load it), else a classifier on the pooled features beside the checkpoint
(CLIP, text encoders: `CompressedModel.from_pretrained` applies it; Transformers loads the encoder alone). With
`head` original, the model's own classifier; with `head` zero-shot, CLIP's classes folded into such a classifier
(the argmax of the cosine similarities). The reported accuracy is then the exported model's: the argmax of its float32 logits on the evaluation samples (the
whole test split at the end of a run), which equals the probe's float64 number up to near-ties. Adam's protocol
averages three seeds; one model carries one probe: seed 0's, and its accuracy is the one reported.

`export_plan` is shared by the end of a run (`chosen/`) and `toast-search export RUN --plan` (`export_run_plan`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toast.objectives import OBJECTIVES, PROBES, AdamProbe, compute_objectives, get_objectives, task_score
from toast.spaces import Plan, PlanError

from .._faults import fault_point
from ..models import CompressedModel, LinearHead, describe_checkpoint, head_placement, with_head
from ._card import ordinary_modes, source_fields, write_run_card
from ._context import PlanOutputs, SearchContext
from ._settings import SearchSettings, SettingsError
from ._stages import FULL
from ._study import reported, undefined_key

__all__ = [
    "EXPORTED_SEED",
    "Export",
    "ExportedModel",
    "build_export",
    "check_new_folder",
    "class_names",
    "describe_head",
    "export_hint",
    "export_plan",
    "export_run_plan",
    "exported_accuracy",
    "exported_token_scores",
    "head_record",
    "load_run_settings",
    "plan_slug",
    "run_plan",
    "scored_head",
]

#: The seed of the Adam probe an exported model carries (the protocol's first; the front reports the mean of three).
EXPORTED_SEED = 0


def scored_head(settings: SearchSettings) -> str | None:
    """What scored the run's accuracy (`head`: probe, original, zero-shot), or None when the study's task score reads
    no labels (none at all, or a causal LM's perplexity: the model's own LM head scores it, exported as it is)."""
    task = task_score(get_objectives(settings.scoring.objectives))
    return settings.scoring.head if task is not None and "labels" in task.inputs(head=settings.scoring.head) else None


def class_names(ctx: SearchContext) -> tuple[str, ...] | None:
    """The dataset's class names (its labels' `ClassLabel` names), or None (the labels name themselves)."""
    split = ctx.train
    feature = getattr(split.dataset, "features", {}).get(split.label_column) if split.label_column else None
    names = getattr(feature, "names", None)
    return tuple(str(n) for n in names) if names else None


@dataclass(frozen=True)
class ExportedModel:
    """A plan's model as it is exported: with the head the run scored it with. `labels[i]`: the dataset label of
    logit `i` (None: no classification head); `probe`: the fitted probe (`head` probe)."""

    model: CompressedModel
    labels: np.ndarray | None
    probe: Any | None = None


def _probe(settings: SearchSettings):
    """An unfitted probe of the run's protocol; Adam's at the exported seed."""
    probe = PROBES[settings.scoring.probe]()
    if isinstance(probe, AdamProbe):
        probe = type(probe)(**{**probe.get_params(), "seed": EXPORTED_SEED})
    return probe


def _fresh(ctx: SearchContext) -> SearchContext:
    """`ctx` without its prefix store: the exported model's own forward, every state computed anew."""
    return replace(ctx, prefix_store=None) if ctx.prefix_store is not None else ctx


def build_export(ctx: SearchContext, plan: Plan) -> ExportedModel:
    """`plan`'s model with the head the run scored it with: `head` probe, a probe of the run's protocol fitted on the
    plan's features of the probe samples (what the accuracy objective fits), folded into its classifier; `head`
    original, the model's own classifier; `head` zero-shot, the visual projection and the class embeddings folded
    into one classifier on the pooled features (`zero_shot_head`); otherwise (no accuracy) the model as it is."""
    ctx = _fresh(ctx)
    model = ctx.model_for(plan).eval()
    head = scored_head(ctx.settings)
    if head == "probe":
        outputs = PlanOutputs(ctx, plan, model, probe=ctx.settings.scoring.probe, stage=FULL)
        probe = _probe(ctx.settings).fit(outputs.probe_features, outputs.probe_labels)
        linear = LinearHead.from_probe(probe, class_names(ctx))
        return ExportedModel(with_head(model, linear).eval(), np.asarray(linear.labels), probe)
    if head == "original":
        return ExportedModel(model, np.arange(int(ctx.loaded.config.num_labels)))
    if head == "zero-shot" and ctx.zero_shot is not None:
        linear = zero_shot_head(ctx.zero_shot)
        return ExportedModel(with_head(model, linear).eval(), np.asarray(linear.labels))
    return ExportedModel(model, None)


def zero_shot_head(zero_shot: Any) -> LinearHead:
    """CLIP's zero-shot classes as one linear map of the pooled features: `E @ P` (the class embeddings times the
    visual projection). Its logits are the cosine similarities times the positive `|P f|`, the same for every class:
    the same argmax, the same accuracy, not the same values (a softmax over them is not CLIP's)."""
    projection = next(zero_shot.projection.parameters()).detach().to("cpu", torch.float64)  # (proj, d), no bias
    weight = torch.as_tensor(zero_shot.embeddings, dtype=torch.float64).cpu() @ projection
    names = tuple(zero_shot.spec.class_names)
    return LinearHead(weight.numpy(), np.zeros(len(names)), tuple(range(len(names))), names)


def exported_accuracy(ctx: SearchContext, plan: Plan, exported: ExportedModel) -> tuple[float, float | None]:
    """The exported model's accuracy (%) on `ctx`'s evaluation samples, from the argmax of its own logits (float32
    for a float32 model), and the fitted probe's own float64 accuracy on the same features (None: no probe)."""
    ctx = replace(_fresh(ctx), zero_shot=None)  # the logits of the exported model's own head
    outputs = PlanOutputs(ctx, plan, exported.model, probe=ctx.settings.scoring.probe, stage=FULL)
    outputs.expect({"eval_features", "eval_logits"})
    logits, labels = np.asarray(outputs.eval_logits), outputs.eval_labels
    accuracy = float(np.mean(exported.labels[logits.argmax(1)] == labels) * 100)
    probe = None
    if exported.probe is not None:
        probe = float(exported.probe.score(outputs.eval_features, labels))
    return accuracy, probe


def exported_token_scores(ctx: SearchContext, plan: Plan, exported: ExportedModel) -> dict[str, Any]:
    """A causal LM's exported model scored on `ctx`'s evaluation sequences (the whole test split at the end of a run):
    the fields of the objectives a run measures again at the end (`Objective.rescored`: perplexity, kl, top1,
    fidelity), its LM head's own. A front plan's are the numbers the front was rescored with; a plan chosen from
    outside the front (search-time scores, maybe on a subset) gets its numbers on the whole split, as the card says."""
    head = ctx.settings.scoring.head
    rescored = [o for o in OBJECTIVES.values() if o.rescored and not {"labels", "probe"} & o.inputs(head=head)]
    outputs = PlanOutputs(_fresh(ctx), plan, exported.model, probe=ctx.settings.scoring.probe, stage=FULL)
    values = compute_objectives(outputs, rescored)  # one pass over the sequences; no lm-eval, no timing
    return {
        key: values.get(key)
        for o in OBJECTIVES.values()
        if o.rescored
        for key in o.columns
        if key in values or key == undefined_key(o.name)
    }


def head_record(settings: SearchSettings, ctx: SearchContext, *, exported: bool, model: Any = None) -> dict | None:
    """front.json's `head`: which head the accuracies belong to, what it was fitted and scored on, and whether the
    exported model carries it (`model`: the exported `CompressedModel`, naming where the head went)."""
    kind = scored_head(settings)
    if kind is None:
        return None
    dataset = settings.data.dataset
    record: dict[str, Any] = {"kind": kind}
    if kind == "probe":
        record["probe"] = settings.scoring.probe
        record["fitted_on"] = f"{len(ctx.probe_labels)} {ctx.train.split} samples of {dataset}"
        if settings.scoring.probe == "adam":
            record["seed"] = EXPORTED_SEED
    elif kind == "original":
        record["fitted_on"] = f"the source model's own classifier ({settings.data.model})"
    elif kind == "zero-shot":
        record["fitted_on"] = "CLIP's text tower: the class names in prompt templates"
    record["scored_on"] = f"{len(ctx.eval_labels)} {ctx.test.split} samples of {dataset}"
    record["exported"] = exported
    if model is not None and record["exported"]:
        record["as"] = (
            f"its {model.model_class} classifier"
            if model.classifier is None
            else "a classifier on the pooled features that CompressedModel.from_pretrained applies"
        )
    if kind == "zero-shot" and record["exported"]:
        record["note"] = (
            "the visual projection times the class embeddings: the argmax of CLIP's cosine similarities, not their values"
        )
    elif kind == "probe" and model is not None and model.classifier is not None:
        record["note"] = head_placement(model.family, model.config, model.model_class).note
    return record


@dataclass(frozen=True)
class Export:
    """One exported plan: where, its scores as toast.json holds them (accuracy: the exported head's), front.json's
    `head` record, the probe's own number where it differs from the exported head's, and how the folder loads."""

    path: Path
    record: dict[str, Any]
    head: dict | None
    probe_accuracy: float | None
    described: str

    def lines(self) -> list[str]:
        """What the console says about the head: which one the accuracy belongs to, and a tie broken otherwise."""
        out = [line for line in (describe_head(self.head, folder=self.path.name),) if line]
        accuracy = self.record.get("accuracy")
        if self.probe_accuracy is not None and accuracy is not None and self.probe_accuracy != accuracy:
            out.append(
                f"the exported head scores {accuracy:.2f}% with its float32 logits, the probe {self.probe_accuracy:.2f}% "
                "in float64 (near-ties between classes broken the other way): the exported head's number is reported"
            )
        return out


def describe_head(head: dict | None, *, folder: str | None = None) -> str | None:
    """One console line: which head the run's accuracies belong to, and whether `folder` carries it."""
    if head is None:
        return None
    what = {
        "probe": f"a {head.get('probe')} probe fitted on {head.get('fitted_on')}",
        "original": "the source model's own classifier",
        "zero-shot": "zero-shot CLIP classes",
    }[head["kind"]]
    line = f"accuracy: {what}, scored on {head['scored_on']}"
    if head.get("exported") and folder:
        line += f"; {folder}/ carries it as {head['as']}"
        if head.get("seed") is not None:
            line += f" (seed {head['seed']}'s probe, and its accuracy; the front reports the mean over seeds)"
    if head.get("note"):
        line += f" ({head['note']})"
    return line


def export_hint(run: Path, front: list[dict[str, Any]]) -> str:
    """The command that exports a front plan of `run` afterwards (the most accurate one that removes a block)."""
    plans = [r.get("plan") for r in front if r.get("spans")]
    example = plans[0] if plans else "s→e:kind"
    return f"toast-search export {shlex.quote(str(run))} --plan {shlex.quote(str(example))}"


def export_plan(
    ctx: SearchContext,
    plan: Plan,
    directory: Path,
    *,
    record: dict[str, Any],
    budgets: dict | None = None,
    replace_existing: bool = False,
    baseline: dict[str, Any] | None = None,
) -> Export:
    """Write `plan`'s model with the head the run scored it with to `directory`, scored through that head on `ctx`'s
    evaluation samples. `record`: the plan's scores; its accuracy becomes the exported model's (Adam: the exported
    seed's, without the seeds' std). `replace_existing`: a run's own `chosen/` is replaced as a whole (no stale file
    of an earlier choice is left); otherwise an existing file or non-empty folder is refused. The folder gets a model
    card (README.md, `_card.write_run_card`; `baseline`: the original's record it compares with, default `ctx`'s) and
    files of the ordinary mode (`_card.ordinary_modes`)."""
    settings = ctx.settings
    directory = Path(directory)
    if not replace_existing:
        check_new_folder(directory)
    exported = build_export(ctx, plan)
    probe_accuracy = None
    record = dict(record)
    if exported.labels is not None:
        accuracy, probe_accuracy = exported_accuracy(ctx, plan, exported)
        if settings.scoring.probe == "adam" and settings.scoring.head == "probe":
            record.pop("accuracy_std", None)  # one seed's probe is exported and scored
        record["accuracy"] = accuracy
    elif ctx.causal_lm:
        record.update(exported_token_scores(ctx, plan, exported))
    head = head_record(settings, ctx, exported=True, model=exported.model)
    if head is not None and probe_accuracy is not None and probe_accuracy != record.get("accuracy"):
        head["probe_accuracy"] = probe_accuracy  # the probe's float64 number, a near-tie broken the other way
    scores = reported(record)
    extra = {**source_fields(settings, ctx), "scores": scores, "budgets": budgets or {}}
    if head is not None:
        extra["head"] = head
    card_baseline = baseline if baseline is not None else ctx.baseline

    def write(staging: Path) -> None:
        exported.model.save_pretrained(staging, processor=ctx.loaded.processor, extra=extra)
        write_run_card(
            staging, settings=settings, ctx=ctx, chosen=record, baseline=card_baseline, budgets=budgets, head=head
        )
        ordinary_modes(staging)

    _written_beside(directory, write)
    return Export(directory, record, head, probe_accuracy, describe_checkpoint(directory))


def check_new_folder(path: Path) -> None:
    """Refuse to write a model over an existing file or a non-empty folder (one line)."""
    if path.is_file() or path.is_symlink():
        raise SettingsError(f"{path} is a file: nothing was written; give a new folder with --out")
    if path.is_dir() and any(path.iterdir()):
        raise SettingsError(f"{path} exists and is not empty: nothing was written; give a new folder with --out")


def _written_beside(directory: Path, write: Callable[[Path], None]) -> None:
    """`write(staging)` fills a new folder beside `directory` (model, card, modes), which then takes its place: the
    previous folder is renamed aside and removed only once the new one is in place, so a kill or a full disk at any
    point leaves a whole folder, the old or the new (between the two renames, the old one under `.<name>.old-*`)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    _recover(directory)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.new-", dir=directory.parent))
    old = None
    try:
        write(staging)
        fault_point("chosen")
        if directory.exists() or directory.is_symlink():
            old = directory.with_name(f".{directory.name}.old-{staging.name.rsplit('-', 1)[-1]}")
            os.replace(directory, old)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not directory.exists():
            os.replace(old, directory)  # the new folder did not take its place: the old one goes back
            old = None
        raise
    finally:
        if old is not None:
            _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _recover(directory: Path) -> None:
    """What a killed `_written_beside` left (the run directory's lock makes any of it another process's leftover):
    a half-written `.<name>.new-*` is removed; a `.<name>.old-*` goes back in place when `directory` is gone (killed
    between the two renames), else it is removed."""
    for leftover in sorted(directory.parent.glob(f".{directory.name}.new-*")):
        _remove(leftover)
    for leftover in sorted(directory.parent.glob(f".{directory.name}.old-*")):
        if not directory.exists():
            os.replace(leftover, directory)
        else:
            _remove(leftover)


# ---- toast-search export RUN --plan ------------------------------------------------------------------------------
def load_run_settings(run: Path) -> SearchSettings:
    """The settings a run directory was made with (its settings.json), with `out` the directory as given now."""
    path = Path(run) / "settings.json"
    if not path.is_file():
        raise SettingsError(f"{run} is not a run directory (no settings.json): give the --out of a toast-search run")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SettingsError(f"cannot read {path}: {why}") from None
    return SearchSettings.from_json({**doc, "out": str(Path(run))})


def plan_slug(plan: Plan) -> str:
    """A folder name for a plan: `2-4-identity` for `2→4:identity`, spans joined by `_`, `emb` for -1."""
    if not plan.spans:
        return "original"
    return "_".join(f"{'emb' if s.start < 0 else s.start}-{s.end}-{s.kind.replace(':', '')}" for s in plan.spans)


def run_plan(ctx: SearchContext, text: str) -> Plan:
    """`text` as a plan of the run: its syntax, its space's kinds and genome (a `--plan` run's kinds too), and its
    limits (`max_removed`, `min_kept`; a plan the run was given is allowed), as one-line errors."""
    from ._manual import manual_space

    plan = Plan.parse(text, ctx.loaded.num_blocks)
    given = manual_space(ctx.settings, ctx.space) if ctx.settings.space.plans else (ctx.space, [])
    try:
        given[0].encode(plan)
    except PlanError as exc:
        raise PlanError(f"{exc}: it is not in the run's search space") from None
    space = ctx.space  # the run's limits
    if not space.feasible(plan) and plan not in given[1]:
        limits = ", ".join(
            f"`{k}` {v}" for k, v in (("max_removed", space.max_removed), ("min_kept", space.min_kept)) if v is not None
        )
        raise PlanError(
            f"plan {plan} removes {len(plan.removed)} of {plan.num_blocks} blocks, outside the run's limits ({limits})"
        )
    return plan


def export_run_plan(run: Path, text: str, out: Path | None = None) -> Export:
    """`toast-search export RUN --plan TEXT [--out DIR]`: rebuild the run, fit the head it scored with on `plan`, score
    the plan on the whole test split and write it (default RUN/export/<plan slug>/), with its scores in toast.json."""
    settings = load_run_settings(run)
    if out is not None:
        check_new_folder(Path(out))
    ctx = SearchContext.build(settings, progress=settings.show_progress)
    plan = run_plan(ctx, text)
    directory = Path(out) if out is not None else Path(run) / "export" / plan_slug(plan)
    check_new_folder(directory)
    full = ctx.full_evaluation()
    record = {"spans": plan.to_json(), "plan": str(plan), **full.evaluate(plan, probe=settings.scoring.probe)}
    return export_plan(full, plan, directory, record=record)
