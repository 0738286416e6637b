"""The model card of an exported model (`chosen/README.md`): what it is, how good, how costly, how to load it.

`save_pretrained` + `push_to_hub` and sentence-transformers' `save` each write a README.md the Hub shows as the
model's page; a run's `chosen/` gets one too. The card is rendered with `huggingface_hub.ModelCard`, so its YAML
front matter (`base_model`, `library_name`, `tags`, `pipeline_tag`, `datasets`) is what the Hub reads, and it says
in words: the source model and revision, which blocks were removed and what stands in for them, the task score
(accuracy with the head and data it was measured on; a causal LM's perplexity on its held-out sequences), GFLOPs,
parameters, latency where it was measured, the loading snippet for the folder's layout, and the `toast-search`
command that produced it.

`write_model_card` takes plain data; `write_run_card` gathers it from a finished run (`finalize`).
`ordinary_modes` gives the folder's files the mode a plain `open()` would (safetensors writes 0600).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toast.objectives import MEASURED_FIELD, OBJECTIVES, Display, Role, get_objectives, task_score
from toast.spaces import Plan, translator_class

from ..data import TOKENS

if TYPE_CHECKING:
    from ._context import SearchContext
    from ._settings import SearchSettings

__all__ = [
    "CARD_NAME",
    "Latency",
    "command_line",
    "ordinary_modes",
    "pipeline_tag_for",
    "write_model_card",
    "write_run_card",
]

CARD_NAME = "README.md"
PLAIN, TOAST, SENTENCE = "plain", "toast", "sentence-transformers"
#: The library that loads each layout of `chosen/`: the Hub's `library_name`.
LIBRARY_OF_LAYOUT = {PLAIN: "transformers", TOAST: "toast-search", SENTENCE: "sentence-transformers"}
TAGS = ("toast-search", "depth-compression")
#: The fields of the card's results table, in order; each is shown when the chosen plan has a value.
CARD_FIELDS = (
    "accuracy",
    "perplexity",
    "kl",
    "top1",
    "fidelity",
    "cosine",
    "gflops",
    "params",
    "latency",
    MEASURED_FIELD,
)


@dataclass(frozen=True, kw_only=True)
class Latency:
    """A latency measured end to end: milliseconds per batch of `batch_size` inputs on `device` with `runtime`."""

    ms: float
    baseline_ms: float | None
    batch_size: int
    device: str
    runtime: str


# ---------------------------------------------------------------- plain data to text


def pipeline_tag_for(modality: str, layout: str, model_class: str | None) -> str:
    """The Hub's `pipeline_tag`: what the saved model computes, read from its modality, layout and class.

    A causal LM generates text (`text-generation`, whatever its layout); a class with a classification head
    classifies (`image-classification`, `text-classification`); a sentence-transformers folder embeds sentences
    (`sentence-similarity`); anything else gives features."""
    name = model_class or ""
    if modality == TOKENS:
        return "text-generation"
    if modality == "text":
        if layout == SENTENCE:
            return "sentence-similarity"
        return "text-classification" if name.endswith("ForSequenceClassification") else "feature-extraction"
    return "image-classification" if name.endswith("ForImageClassification") else "image-feature-extraction"


def _removed_text(blocks: Sequence[int]) -> str:
    """`[2, 3, 4]` as "blocks 2–4", `[5]` as "block 5"."""
    blocks = list(blocks)
    if len(blocks) == 1:
        return f"block {blocks[0]}"
    contiguous = blocks == list(range(blocks[0], blocks[-1] + 1))
    return f"blocks {blocks[0]}–{blocks[-1]}" if contiguous else "blocks " + ", ".join(map(str, blocks))


def _kind_text(kind: str) -> str:
    """What a translator kind is, from its class's docstring (its first line)."""
    doc = (translator_class(kind).__doc__ or "").strip().splitlines()
    return f"`{kind}`" + (f": {doc[0].rstrip('.')}" if doc else "")


def plan_in_words(plan: Plan) -> list[str]:
    """One line per span: the blocks it removes, the translator that stands in for them and what it reads."""
    lines = []
    for span in sorted(plan.spans):
        source = "the embeddings' output" if span.start < 0 else f"block {span.start}'s output"
        lines.append(
            f"| `{span}:{span.kind}` | {_removed_text(span.removed)} | {_kind_text(span.kind)} | {source} "
            f"→ block {span.end}'s output |"
        )
    return lines


def _display(name: str) -> Display:
    """How a field is shown in the card: its objective's display, else four decimals (cosine) or three digits (ms)."""
    if name in OBJECTIVES:
        return OBJECTIVES[name].display
    if name == MEASURED_FIELD:
        return Display(title="latency ms (measured)", axis=name, name=name, unit="ms", fmt="{:.3g}")
    return Display(title=name, axis=name, name=name, fmt="{:.4f}")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _results_table(scores: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    """The original against this model, a row each, on the fields of `CARD_FIELDS` the chosen plan has."""
    names = [k for k in CARD_FIELDS if _number(scores.get(k)) is not None]
    if not names:
        return []
    header = ["model", *(_display(k).title for k in names)]
    rows = [header, ["---"] * len(header)]
    for label, record in (("original", baseline), ("this model", scores)):
        if record is None:
            continue
        cells = [label]
        for k in names:
            value, base = _number(record.get(k)), _number((baseline or {}).get(k))
            text = "-" if value is None else _display(k).format(value)
            if record is scores and value is not None and base:
                if k == "accuracy":
                    text += f" ({_display(k).format_delta(value, base)} pts)"
                elif k in OBJECTIVES and OBJECTIVES[k].role is Role.ACCURACY:  # perplexity: its own delta
                    text += f" ({_display(k).format_delta(value, base)})"
                elif k == MEASURED_FIELD or (k in OBJECTIVES and OBJECTIVES[k].role is Role.COST):
                    text += f" ({value / base:.0%})"
            cells.append(text)
        rows.append(cells)
    return ["| " + " | ".join(row) + " |" for row in rows]


def _glossary(scores: Mapping[str, Any]) -> list[str]:
    """What each reported measure is, from the objectives' own descriptions."""
    out = []
    for k in CARD_FIELDS:
        if _number(scores.get(k)) is None:
            continue
        text = next((d for o in OBJECTIVES.values() if (d := o.describe(k)) is not None), None)
        if text:
            out.append(f"- **{_display(k).title}**: {text}.")
    return out


def load_snippet(layout: str, modality: str, model_class: str | None, pipeline_tag: str) -> str:
    """The Python that loads the folder in its layout and runs it on a batch (`path`: this folder, or its Hub repo id
    once pushed; the processor is saved beside the weights)."""
    path = 'path = "."  # this folder, or its Hub repo id once pushed\n'
    if modality == TOKENS:
        return _causal_lm_snippet(layout, path)
    if layout == SENTENCE:
        return (
            "from sentence_transformers import SentenceTransformer\n\n"
            f"{path}model = SentenceTransformer(path)\n"
            'embeddings = model.encode(["The first sentence.", "Another one."])\n'
        )
    text = modality == "text"
    processor = "AutoTokenizer" if text else "AutoImageProcessor"
    batch = (
        'inputs = processor(["The first sentence.", "Another one."], padding=True, return_tensors="pt")\n'
        if text
        else 'inputs = processor(images=images, return_tensors="pt")  # images: a list of PIL images\n'
    )
    if layout == PLAIN:
        cls = model_class or "AutoModel"
        classifies = pipeline_tag in ("image-classification", "text-classification")
        code = (
            f"from transformers import {processor}, {cls}{', pipeline' if classifies else ''}\n\n"
            f"{path}model = {cls}.from_pretrained(path)\n"
            f"processor = {processor}.from_pretrained(path)\n"
            f"{batch}outputs = model(**inputs)\n"
        )
        if classifies:
            code += f'\nclassify = pipeline("{pipeline_tag}", model=path)  # or as a pipeline\n'
        return code
    return (
        f"from transformers import {processor}\n\n"
        "from toast.models import CompressedModel  # pip install toast-search\n\n"
        f"{path}model = CompressedModel.from_pretrained(path)  # no original checkpoint needed\n"
        f"processor = {processor}.from_pretrained(path)\n"
        f"{batch}"
        "features = model.features(inputs)  # the pooled features\n"
        "outputs = model(**inputs)  # the head's output (logits) when the model has one, else the pooled features\n"
    )


def _causal_lm_snippet(layout: str, path: str) -> str:
    """A causal LM's loading code: a plain checkpoint generates with Transformers alone (its KV cache included);
    the toast format gives next-token logits through `CompressedModel` (no `generate()`: greedy steps by hand)."""
    prompt = 'inputs = tokenizer("def fibonacci(n):", return_tensors="pt")\n'
    if layout == PLAIN:
        return (
            "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline\n\n"
            f"{path}model = AutoModelForCausalLM.from_pretrained(path)\n"
            "tokenizer = AutoTokenizer.from_pretrained(path)\n"
            f"{prompt}"
            "tokens = model.generate(**inputs, max_new_tokens=20, do_sample=False)\n"
            "print(tokenizer.decode(tokens[0]))\n\n"
            'generate = pipeline("text-generation", model=path)  # or as a pipeline\n'
        )
    return (
        "import torch\n"
        "from transformers import AutoTokenizer\n\n"
        "from toast.models import CompressedModel  # pip install toast-search\n\n"
        f"{path}model = CompressedModel.from_pretrained(path)  # no original checkpoint needed\n"
        "tokenizer = AutoTokenizer.from_pretrained(path)\n"
        f"{prompt}"
        'ids = inputs["input_ids"]\n'
        "with torch.no_grad():\n"
        "    for _ in range(20):  # greedy, every token recomputed (no KV cache, no generate())\n"
        "        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids))  # (batch, tokens, vocabulary)\n"
        "        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)\n"
        "print(tokenizer.decode(ids[0]))\n"
    )


def command_line(settings: Mapping[str, Any]) -> str:
    """The `toast-search` command that runs with `settings` (settings.json's fields): the model and dataset (always),
    then every option whose value differs from its command-line default, in `--help`'s order. What only changes
    the console (progress bars, `--quiet`, `--verbose`) and `--dry-run` is left out: it changes nothing computed."""
    from ._settings import search_options

    words = ["toast-search"]
    for key, o in search_options().items():
        if key == "progress" or key not in settings:  # changes nothing computed
            continue
        # an option whose command-line default is None stands for the settings' own default (`--prompts`: full)
        value, default = _plain(settings[key]), _plain(o.cli_default)
        if default is None and key not in ("model", "dataset"):
            default = _plain(o.default)
        if (value == default and key not in ("model", "dataset")) or value is None or value == []:
            continue
        if key == "plans":  # `--plan` repeated; glued to a value that starts like an option (`-1→3:linear`)
            for text in map(str, value):
                words += [f"{o.flag}={text}"] if text.lstrip().startswith("-") else [o.flag, text]
        else:
            words += [o.flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return shlex.join(words)


def _plain(value: Any) -> Any:
    """A setting's value as settings.json holds it (tuples as lists, paths as strings)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------- the card


def write_model_card(
    directory: str | os.PathLike[str],
    *,
    source: str,
    revision: str | None,
    base_model: str | None,
    source_path: str | None,
    plan: Plan,
    scores: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    head: str,
    data: str,
    calibration: str | None = None,
    layout: str,
    modality: str,
    model_class: str | None,
    family: str | None,
    command: str,
    datasets: Sequence[str] = (),
    latency: Latency | None = None,
    budgets: Mapping[str, float] | None = None,
    task: str = "accuracy",
) -> Path:
    """Write `directory/README.md`, the model card of a compressed model, and return its path.

    `source`: the model as the user named it (alias, Hub id or path), `base_model` its Hub id when it has one (the
    Hub links the card to it), `source_path` its folder when it was loaded from disk; `revision`: the Hub commit or
    the local weights' sha256. `plan`: what was removed; `scores` and `baseline`: the chosen plan's and the original's
    record (front.json's fields); `head` and `data`: what accuracy was measured with and on, `calibration`: what the
    translators were fitted on; `layout`: `plain`, `toast` or `sentence-transformers` (what loads it: the card's
    `library_name` and loading snippet); `command`: the `toast-search` command that produced it; `latency`: the
    chosen plan's measured latency, when the run measured it; `budgets`: the budgets it was chosen within; `task`:
    the task score the search optimised and `head` and `data` describe (`accuracy`, a causal LM's `perplexity`).
    """
    from huggingface_hub import ModelCard, ModelCardData

    directory = Path(directory)
    tag = pipeline_tag_for(modality, layout, model_class)
    tags = [*TAGS, *([family] if family else []), *(["sentence-transformers"] if layout == SENTENCE else [])]
    meta = ModelCardData(
        base_model=base_model,
        library_name=LIBRARY_OF_LAYOUT.get(layout, "toast-search"),
        tags=tags,
        pipeline_tag=tag,
        datasets=list(datasets) or None,
    )
    kept, n = plan.kept, plan.num_blocks
    best = _best(task)
    name = Path(source).name or source
    revision_text = f" at revision `{revision}`" if revision else ""
    lines = [
        f"# {name}, {len(kept)} of {n} blocks kept (toast-search)",
        "",
        f"`{source}`{revision_text} with {len(plan.removed)} of its {n} transformer blocks removed and replaced by "
        "cheap translators fitted on a few calibration samples, without retraining, by toast-search (which searched "
        f"the plans of spans × translator kinds for {best} at each cost).",
        "",
        "## Source model",
        "",
        f"- model: `{source}`"
        + (f" (Hub: [`{base_model}`](https://huggingface.co/{base_model}))" if base_model else ""),
        *([f"- loaded from: `{source_path}`"] if source_path else []),
        f"- revision: `{revision}`" if revision else "- revision: unknown",
        "",
        "## What was removed",
        "",
        f"Plan `{plan}`: block{'s' if len(plan.removed) > 1 else ''} {', '.join(map(str, sorted(plan.removed)))} removed, "
        f"{', '.join(map(str, kept)) or 'none'} kept (numbered 0…{n - 1} as in the source; a span `s→e` removes "
        "blocks s+1 … e and maps block s's output, -1 the embeddings', to block e's).",
        "",
        "| span | removes | replaced by | maps |",
        "| --- | --- | --- | --- |",
        *plan_in_words(plan),
        "",
        "## Results",
        "",
        *_results_table(scores, baseline),
        "",
        f"- {_display(task).name} measured with: {head}",
        f"- on: {data}",
        *([f"- translators fitted on: {calibration}"] if calibration else []),
        *(
            [
                "",
                f"Latency: {latency.ms:.3g} ms per batch of {latency.batch_size} on {latency.device} "
                f"({latency.runtime}), measured end to end (the fastest of repeated rounds)"
                + (f"; the original: {latency.baseline_ms:.3g} ms." if latency.baseline_ms else "."),
            ]
            if latency is not None
            else ["", "Latency was not measured (run with `--objectives …,latency` or `--budget-latency-ms`)."]
        ),
        *(
            [
                "",
                f"Chosen as the plan with {best} within "
                + ", ".join(f"{_display(k).name} <= {v:.4g}" for k, v in budgets.items())
                + ".",
            ]
            if budgets
            else []
        ),
        "",
        "What the columns measure:",
        "",
        *_glossary(scores),
        "",
        "## How to load it",
        "",
        f"```python\n{load_snippet(layout, modality, model_class, tag)}```",
        "",
        "`toast.json` beside the weights holds the plan, the source model and these scores.",
        "",
        "## How it was made",
        "",
        f"```bash\n{command}\n```",
        "",
    ]
    card = ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = directory / CARD_NAME
    card.save(path)
    return path


def _best(task: str) -> str:
    """The task score at its best, in words: "the best accuracy", "the lowest perplexity"."""
    objective = OBJECTIVES.get(task)
    name = _display(task).name
    return f"the lowest {name}" if objective is not None and objective.direction == "minimize" else f"the best {name}"


def ordinary_modes(directory: str | os.PathLike[str]) -> None:
    """Give `directory`, its folders and its files the modes `mkdir()` and `open()` would: `0o777` and `0o666` less
    the umask.

    safetensors (0.8) writes through a temporary file it renames into place, and the temporary file is created
    0600 whatever the umask (safetensors/safetensors#782), so `model.safetensors` would be readable by its owner
    only, unlike every other file of the folder; a folder staged with `tempfile.mkdtemp` is 0700 likewise."""
    mask = os.umask(0)
    os.umask(mask)
    root = Path(directory)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = (0o777 if path.is_dir() else 0o666) & ~mask
        if (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)


# ---------------------------------------------------------------- a run's card


def _hub_model_id(name: str, local: bool) -> str | None:
    """The Hub id of the model the user named: an alias's, the name itself when it was read from the Hub."""
    from ..models import MINILM_ALIAS, MINILM_HUB_ID, MODEL_ALIASES

    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    if name == MINILM_ALIAS:
        return MINILM_HUB_ID
    return None if local else name


def _hub_dataset_id(name: str) -> str | None:
    """The Hub id of the dataset the user named, or None for a local or built-in one."""
    from ..data import DATASET_ALIASES, DIGITS, DOCSTRINGS, looks_like_path

    if name in DATASET_ALIASES:
        return DATASET_ALIASES[name].hub_id
    if name in (DIGITS, DOCSTRINGS) or looks_like_path(name) or Path(name).expanduser().exists():
        return None
    return name


def source_fields(settings: SearchSettings, ctx: SearchContext) -> dict[str, str]:
    """What toast.json records of the source model: its name as the user gave it, its revision, and its folder
    only when it was loaded from disk."""
    where = Path(ctx.loaded.model_id)
    local = where.is_absolute() and where.is_dir()
    return {
        "source_model": settings.data.model,
        "source_revision": ctx.loaded.revision,
        **({"source_path": str(where)} if local else {}),
    }


def _head_text(settings: SearchSettings, ctx: SearchContext, head: Mapping[str, Any] | None) -> str:
    """What accuracy was measured with, in words; `head`: front.json's `head` record, when the export made one. A
    causal LM's perplexity: its own LM head, exported as it is."""
    if ctx.loaded.family.modality == TOKENS:
        return (
            "the model's own LM head (exported as it is): the next-token log-likelihood of every token of a sequence "
            "after its first"
        )
    pooled = (
        "the mean of the final hidden states over real tokens"
        if ctx.loaded.family.modality == "text"
        else "the [CLS] token after the final norm"
    )
    kind = head.get("kind") if head else settings.scoring.head
    if kind == "original":
        text = "the source model's own classification head"
    elif kind == "zero-shot":
        text = f"CLIP zero-shot ({ctx.zero_shot.spec.describe()})" if ctx.zero_shot is not None else "CLIP zero-shot"
    else:
        how = "closed-form ridge" if settings.scoring.probe == "ridge" else "Adam: lr 1e-3, 5 epochs, batch 256"
        fitted = head.get("fitted_on") if head else f"{len(ctx.probe_labels):,} samples"
        text = f"a linear probe ({how}) on the pooled features ({pooled}), fitted on {fitted}"
        if head and head.get("seed") is not None:
            text += f", seed {head['seed']}"
    if head and head.get("exported") and head.get("as"):
        text += f"; this folder carries it as its head ({head['as']}), and the accuracy is that head's"
    if head and head.get("note"):
        text += f" ({head['note']})"
    return text


def _data_text(
    settings: SearchSettings, ctx: SearchContext, scores: Mapping[str, Any], head: Mapping[str, Any] | None
) -> str:
    """Which samples accuracy was measured on, in words; a causal LM's: the packed sequences it was scored on."""
    if ctx.loaded.family.modality == TOKENS:
        n = len(ctx.eval_labels)
        return f"{_sequences(n, settings, ctx.test)}, {n * (settings.data.seq_len - 1):,} predicted tokens"
    if head and head.get("scored_on"):
        return f"top-1 on {head['scored_on']}"
    rescored = any(o.search_field in scores for o in OBJECTIVES.values() if o.search_field)
    n_eval = len(ctx.test) if rescored or len(ctx.eval_labels) == len(ctx.test) else len(ctx.eval_labels)
    return f"top-1 on {n_eval:,} {ctx.test.split} samples of {settings.data.dataset}"


def _calibration_text(settings: SearchSettings, ctx: SearchContext) -> str:
    """Which samples the translators were fitted on, in words."""
    calib = ctx.calib or ctx.train
    samples = ctx.samples_used.get("calib_samples", settings.data.calib_samples)
    if ctx.loaded.family.modality == TOKENS:
        return _sequences(samples, settings, calib, settings.data.calib_dataset or settings.data.dataset)
    return f"{samples:,} {calib.split} samples of {settings.data.calib_dataset or settings.data.dataset}"


def _sequences(n: int, settings: SearchSettings, split: Any, dataset: str | None = None) -> str:
    """A causal LM's samples in words: "341 sequences of 256 tokens packed from the test split of python-docs"."""
    return (
        f"{n:,} sequences of {settings.data.seq_len} tokens packed from the {split.split} split of "
        f"{dataset or settings.data.dataset}"
    )


def write_run_card(
    directory: Path,
    *,
    settings: SearchSettings,
    ctx: SearchContext,
    chosen: Mapping[str, Any],
    baseline: Mapping[str, Any],
    budgets: Mapping[str, float] | None = None,
    head: Mapping[str, Any] | None = None,
) -> Path:
    """The model card of an exported plan (`chosen/`, already written): `write_model_card` on what the run knows.
    `chosen`: the plan's record as exported; `head`: front.json's `head` record (what scored the accuracy)."""
    import json

    import torch

    meta = json.loads((directory / "toast.json").read_text()) if (directory / "toast.json").is_file() else {}
    layout = SENTENCE if (directory / "modules.json").is_file() else meta.get("layout", TOAST)
    source = source_fields(settings, ctx)
    latency = None
    if _number(chosen.get(MEASURED_FIELD)) is not None:
        device = ctx.loaded.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}"
        latency = Latency(
            ms=float(chosen[MEASURED_FIELD]),
            baseline_ms=_number(baseline.get(MEASURED_FIELD)),
            batch_size=settings.scoring.latency_batch_size,
            device=name,
            runtime=f"PyTorch {torch.__version__}, {settings.dtype}",
        )
    dataset = _hub_dataset_id(settings.data.dataset)
    return write_model_card(
        directory,
        source=settings.data.model,
        revision=ctx.loaded.revision,
        base_model=_hub_model_id(settings.data.model, "source_path" in source),
        source_path=source.get("source_path"),
        plan=Plan.of(chosen["spans"], ctx.loaded.num_blocks),
        scores=chosen,
        baseline=baseline,
        head=_head_text(settings, ctx, head),
        data=_data_text(settings, ctx, chosen, head),
        calibration=_calibration_text(settings, ctx),
        layout=layout,
        modality=ctx.loaded.family.modality,
        model_class=meta.get("model_class"),
        family=ctx.loaded.family.name,
        command=command_line(settings.to_json()),
        datasets=[dataset] if dataset else (),
        latency=latency,
        budgets=budgets,
        task=task.name if (task := task_score(get_objectives(settings.scoring.objectives))) is not None else "accuracy",
    )
