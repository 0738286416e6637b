"""The settings of one search, in sections, validated before any work starts (every problem listed at once).

    SearchSettings(data=DataSettings(...), space=SpaceSettings(...), scoring=ScoringSettings(...),
                   study=StudySettings(...), runner=RunnerSettings(...), device=..., dtype=..., ...)

Each section is a frozen dataclass that checks its own fields (`problems()`); `SearchSettings` gathers them all
(and checks the run-wide fields) and raises one `SettingsError`. Every field that is a command-line option carries
its help, choices and flag in its metadata (`toast.search._options`): the CLI is generated from these classes.
`settings.json` keeps the flat keys it always had (`to_json` / `from_json`, `from_flat(**keys)` builds settings
from them), and `identity()` / `run_key()` the values they always had.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from toast.errors import SettingsError
from toast.objectives import DEFAULT_OBJECTIVES, HEADS, Role, get_objective, list_objectives
from toast.objectives import PROBES as PROBE_CLASSES

from ._demo import (
    DEFAULT_DATASET,
    DEFAULT_LM_DATASET,
    DEFAULT_LM_OBJECTIVES,
    DEFAULT_MODEL,
    DEMO_BUDGET_FRACTION,
    DEMO_BUDGETS,
)
from ._options import Option, option, options_of
from .runtimes import list_runtimes
from .samplers import SAMPLERS as SAMPLER_SPECS
from .samplers import list_samplers

__all__ = [
    "DataSettings",
    "RunnerSettings",
    "ScoringSettings",
    "SearchSettings",
    "SettingsError",
    "SpaceSettings",
    "StudySettings",
    "budget_key",
    "default_run_dir",
    "search_options",
]

RUNTIMES = list_runtimes()  # what latency is measured in (`toast.search.runtimes`): `latency_runtime`'s choices
SAMPLERS = list_samplers()  # the strategies registered with toast (`toast.search.samplers`): the option's choices
PROBES = tuple(PROBE_CLASSES)  # ("ridge", "adam")
PROMPTS = ("full", "short")  # `head` zero-shot: the 80 CLIP ImageNet templates, or 7 of them
REFITS = ("independent", "sequential")
LATENCY_MODES = ("prefill", "decode")  # causal LMs: a forward over whole sequences, or one decoding step
DTYPES = ("float32", "bfloat16", "float16")
ACTIVATION_DTYPES = ("float16", "bfloat16", "float32")
DEVICE_MAPS = ("auto",)  # `toast.models.load_model`'s (None: the whole model on `device`)
DEFAULT_RANKS = ("d/16", "d/8", "d/4")
#: A rank: an integer, `d` (the model's width) or `d/k` (the width over k, rounded down, at least 1).
RANK = re.compile(r"[1-9]\d*|d(?:/[1-9]\d*)?")
#: The settings that change what a trial computes: a run directory is bound to their values.
IDENTITY_KEYS = (
    "model",
    "dataset",
    "split_train",
    "split_test",
    "input_column",
    "label_column",
    "translators",
    "ranks",
    "max_removed",
    "min_kept",
    "objectives",
    "probe_samples",
    "eval_samples",
    "calib_samples",
    "seed",
    "head",
    "dtype",
    "activation_dtype",
    "refit",
    "latency_batch_size",  # with latency an objective, these two define its values: a study mixing two would be wrong
    "latency_seq_len",
    "class_names",
    "prompts",
    "calib_dataset",
    "calib_split",
    "fidelity_fraction",  # which plans reach the full sets: a study mixing two rules would not be one search
    "fidelity_z",
)
#: Identity keys added after run directories were named by `run_key`: part of the identity only when set away from
#: their default, so a run made before them keeps its key (`seq_len`: an LM's packed sequences).
LATER_IDENTITY_KEYS = (
    "seq_len",
    "latency_mode",
    "latency_runtime",
    "latency_table",
    "lm_eval_tasks",
    "lm_eval_include",
    "lm_eval_limit",
    "latency_runtime",  # with latency an objective, the runtime and the table define its values
    "latency_table",
)
#: upper bounds that catch a typo before minutes of work (a latency batch of 100,000 inputs is timed for minutes)
UPPER_LIMITS = {"latency_batch_size": 4096, "latency_seq_len": 32768, "seq_len": 1048576}
SEED_MAX = 2**32 - 1
DOWNSTREAM = "downstream"  # the objective `lm_eval_*` configure (`toast.objectives._downstream`)
LM_EVAL_LIMIT = 100  # `lm_eval_limit`'s default


def _finite(section: Any, names: tuple[str, ...]) -> list[str]:
    """The float settings, each of which must be a finite number where given (NaN compares false with every bound)."""
    problems = []
    for name in names:
        value = getattr(section, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            problems.append(f"`{name}` must be a finite number, got {value!r}")
    return problems


def _at_least_one(section: Any, names: tuple[str, ...]) -> list[str]:
    return [f"`{n}` must be at least 1, got {getattr(section, n)}" for n in names if getattr(section, n) < 1]


def _upper_limits(section: Any) -> list[str]:
    return [
        f"`{name}` must be at most {limit}, got {getattr(section, name)}"
        for name, limit in UPPER_LIMITS.items()
        if hasattr(section, name) and getattr(section, name) > limit
    ]


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> list[str]:
    return [] if value in choices else [f"`{name}` must be one of {', '.join(choices)}, got {value!r}"]


# ---- the sections --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """What the model is and what it is scored on: the model, the dataset, its splits and columns, the calibration
    data and how many samples each part draws."""

    model: str = option(
        help="alias (vit-tiny … vit-large, deit-small, deit-base, dinov2-small/base/large, clip-vit-b16, demo-vit, "
        "demo-lm, all-minilm-l6-v2), Hugging Face id, or local model directory (default: {default})",
        cli_default=DEFAULT_MODEL,
    )
    dataset: str = option(
        help="alias (mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse, imagenet-1k; digits and docstrings "
        "offline; python-docs, the offline text of a causal LM), Hugging Face id, or local path: save_to_disk folder, "
        "image folder, parquet, text file or folder (default: digits; python-docs for a causal LM)",
        cli_default=None,
    )
    split_train: str | None = option(
        None, help="split for calibration and the probe's training (default: the dataset's train split)"
    )
    split_test: str | None = option(None, help="split accuracy is measured on (default: the dataset's test split)")
    input_column: str | None = option(None, help="column holding images or text (default: guessed)")
    label_column: str | None = option(None, help="column holding labels (default: guessed, e.g. label / fine_label)")
    calib_dataset: str | None = option(
        None,  # the translators fitted on this dataset (default: `dataset`)
        help="fit the translators on this dataset's samples, the probe and evaluation still on --dataset "
        "(default: --dataset)",
    )
    calib_split: str | None = option(
        None,  # its split the calibration samples come from (default: its train split)
        help="split the calibration samples come from (default: the calibration dataset's train split)",
    )
    probe_samples: int = option(
        5000, help="train samples the probe is fitted on (default: {default}, or the whole split when it holds fewer)"
    )
    eval_samples: int = option(
        2000,
        help="test samples accuracy and fidelity are measured on (default: {default}, or the whole split when it "
        "holds fewer)",
    )
    calib_samples: int = option(
        500,
        help="calibration samples drawn (seeded) from the train split (default: {default}, or the whole split when "
        "it holds fewer)",
    )
    seq_len: int = option(
        256,
        help="a causal LM's samples: its text packed into sequences of this many tokens (calibration, probe and "
        "evaluation alike) (default: {default})",
    )
    # the capture's statistics accumulators held at once (`toast.capture.memory_plan_bytes`); not an identity key:
    # the statistics are the same whatever the plan, only the number of passes over the calibration data changes
    stats_memory_gb: float | None = option(
        None,
        help="memory (GB) the capture's statistics may hold at once: every pair of states as one Gram when it fits "
        "(small models), else only the pairs the search space reads, grouped into several passes over the "
        "calibration samples when they do not fit at once (default: a quarter of the host's RAM; on a GPU, at most half "
        "of its memory left free by the model)",
    )

    def problems(self) -> list[str]:
        problems = _at_least_one(self, ("probe_samples", "eval_samples", "calib_samples"))
        if self.seq_len < 2:
            problems.append(f"`seq_len` must be at least 2 (a token and the next one to predict), got {self.seq_len}")
        problems += _upper_limits(self)
        if self.calib_samples < 2:
            problems.append(f"`calib_samples` must be at least 2, got {self.calib_samples}")
        problems += _finite(self, ("stats_memory_gb",))
        memory = self.stats_memory_gb
        if isinstance(memory, (int, float)) and math.isfinite(memory) and memory <= 0:
            problems.append(
                f"`stats_memory_gb` must be > 0 (or unset: a quarter of the RAM), got {self.stats_memory_gb}"
            )
        return problems


@dataclass(frozen=True, kw_only=True)
class SpaceSettings:
    """Which plans the search may try: the translator kinds, their ranks, the limits on removed and kept blocks,
    how spans are fitted, and the plans given instead of a search."""

    translators: tuple[str, ...] = option(
        ("identity", "linear"),
        help="translator kinds to search over, comma-separated: identity, linear, ridge, lowrank:r (the best rank-r "
        "map; a bare lowrank is one lowrank:r per --ranks) (default: {default})",
    )
    ranks: tuple[str, ...] = option(
        DEFAULT_RANKS,  # a bare `lowrank` in `translators` is one `lowrank:r` per rank
        help="ranks a bare lowrank in --translators expands to, comma-separated: integers, or fractions of the "
        "model's width d (d/16 at width 768 is 48) (default: {default})",
    )
    refit: str = option(
        "independent",  # sequential: a plan's later spans fitted on the compressed prefix's own states
        help="fit each span on the original model's states, or (sequential) each span after a plan's first on the "
        "states the compressed model produces at its source, its earlier spans fitted first (default: {default})",
        choices=REFITS,
    )
    max_removed: int | None = option(None, help="at most this many blocks removed (default: no limit)")
    min_kept: int | None = option(None, help="at least this many blocks kept (default: no limit)")
    plans: tuple[str, ...] = option(
        (),
        help='score this plan instead of searching, e.g. "9→11:linear,3→4:identity" or "-1->0:linear" (ASCII -> '
        "works; -1 is the embeddings); repeat for several (default: none, search)",
        flag="--plan",
        action="append",
        cli_default=[],
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", tuple(str(r).strip() for r in self.ranks))  # 48 and "48" are one rank
        object.__setattr__(self, "translators", tuple(self.translators))
        object.__setattr__(self, "plans", tuple(self.plans))

    def problems(self) -> list[str]:
        problems = []
        bad = [r for r in self.ranks if not RANK.fullmatch(r)]
        if bad or not self.ranks:
            problems.append(
                f"`ranks` must be positive integers or fractions of the model's width such as d/16, got "
                f"{', '.join(map(repr, bad)) or 'none'}"
            )
        problems += _one_of("refit", self.refit, REFITS)
        if not self.translators:
            problems.append("`translators` must name at least one translator kind (e.g. identity,linear)")
        if self.max_removed is not None and self.max_removed < 0:
            problems.append(f"`max_removed` must be >= 0, got {self.max_removed}")
        if self.min_kept is not None and self.min_kept < 0:
            problems.append(f"`min_kept` must be >= 0, got {self.min_kept}")
        return problems

    def resolved_ranks(self, width: int) -> tuple[int, ...]:
        """`ranks` at a model's `width`, ascending, each once (`d/16` at 768 is 48); a rank outside 1 … width is refused."""
        out = []
        for text in self.ranks:
            if text.startswith("d"):
                out.append(max(1, width // int(text.partition("/")[2] or 1)))
                continue
            if int(text) > width:
                raise SettingsError(
                    f"`ranks` {text} is above the model's width {width}: a rank goes from 1 to the width "
                    f"(d/16 style fractions follow the width)"
                )
            out.append(int(text))
        return tuple(sorted(set(out)))


def _objectives_help() -> str:
    return (
        f"two or more of {', '.join(list_objectives())} (default: {','.join(DEFAULT_OBJECTIVES)}; "
        f"{','.join(DEFAULT_LM_OBJECTIVES)} for a causal LM)"
    )


@dataclass(frozen=True, kw_only=True)
class ScoringSettings:
    """How a plan is scored: the objectives, the probe or head, zero-shot's class names and prompts, the
    multi-fidelity rule and the latency measurement's shape."""

    objectives: tuple[str, ...] = option(
        DEFAULT_OBJECTIVES, help="", cli_default=None
    )  # help: `_objectives_help` (the registry)
    probe: str = option(
        "ridge",
        help="linear probe: closed-form ridge (fast) or the papers' Adam protocol (lr 1e-3, 5 epochs, batch 256, 3 "
        "seeds); the front is re-scored with it at the end (default: {default})",
        choices=PROBES,
    )
    head: str = option(
        "probe",
        help="score with a linear probe, with the model's own classification head, or (a whole CLIP model) "
        "zero-shot: the class names in prompt templates embedded by the text tower (default: {default})",
        choices=HEADS,
    )
    class_names: Path | None = option(
        None,  # head zero-shot: one class name per line (default: the labels' ClassLabel names)
        help="--head zero-shot: a text file, one class name per line, label i on line i (default: the dataset's "
        "ClassLabel names)",
    )
    prompts: str = option(
        "full",  # head zero-shot: the prompt templates
        help="--head zero-shot: the 80 ImageNet prompt templates of CLIP, or 7 of them (default: full)",
        choices=PROMPTS,
        cli_default=None,  # `--prompts full` without --head zero-shot is refused too
    )
    fidelity_fraction: float = option(
        0.25,  # each plan scored first on this share of the probe and evaluation samples
        help="score each plan first on this share of the probe and evaluation samples, and on all of them only when "
        "no fully scored plan beats it there with confidence; 0 or 1: every plan on all samples (default: {default})",
    )
    fidelity_z: float = option(
        2.0,  # ... and stopped there when a fully scored plan beats it by this many standard errors
        help="how many standard errors of the difference a fully scored plan must beat a plan's subset score by to "
        "stop it at the subset (default: {default})",
    )
    latency_batch_size: int = option(
        1,  # inputs per batch the latency table and the end-of-run measurements time
        help="inputs per batch that latency (objective, budget, end-of-run measurement) is timed at "
        "(default: {default})",
    )
    latency_seq_len: int = option(
        128,  # text encoders: tokens per input the latency is timed at (images: the processor's crop)
        help="text encoders: tokens per input that latency is timed at; images use the processor's crop "
        "(default: {default})",
    )
    latency_mode: str = option(
        "prefill",  # causal LMs: a forward over the whole sequences, or one decoding step after them (KV cache)
        help="causal LMs: time a forward over --latency-batch-size sequences of --latency-seq-len tokens (prefill), "
        "or one new token per sequence after that many cached ones (decode, with a KV cache) (default: {default})",
        choices=LATENCY_MODES,
    )
    latency_runtime: str = option(
        "eager",  # what the run's own latency table is measured in (`toast.search.runtimes`)
        help="what the run's latency table and its end-of-run measurements run the model in, on --device: eager "
        "(PyTorch), compile (torch.compile), onnxruntime (CPU or CUDA execution provider), onnxruntime-tensorrt "
        "(default: {default})",
        choices=RUNTIMES,
    )
    latency_table: Path | None = option(
        None,  # a table measured on the deployment machine (`toast-search latency-table`), in place of measuring one
        help="a latency table file written by `toast-search latency-table` on the deployment machine and runtime: "
        "latency (objective, budget) is estimated from it instead of measured here; it must be of this model's "
        "architecture, at --latency-batch-size / --latency-seq-len / --latency-mode, with every kind of "
        "--translators; measure the result there with `toast-search measure RUN` (default: none)",
    )
    lm_eval_tasks: tuple[str, ...] = option(
        (),  # objective downstream: the lm-eval tasks a causal LM is scored on (the extra `[llm]`)
        help="objective downstream: lm-eval-harness tasks to score a causal LM on, comma-separated: names of "
        "lm-eval's own tasks or of task YAML files in --lm-eval-include; log-likelihood tasks only (multiple choice, "
        "loglikelihood), no generation (default: none)",
    )
    lm_eval_include: Path | None = option(
        None,  # objective downstream: a local folder of lm-eval task YAML files
        help="objective downstream: a local folder of lm-eval task YAML files (each naming its task and its data, "
        "e.g. dataset_path: json with local data_files) (default: lm-eval's own tasks only)",
    )
    lm_eval_limit: int = option(
        LM_EVAL_LIMIT,  # objective downstream: documents scored per task, the first ones
        help="objective downstream: documents scored per lm-eval task, its first ones (default: {default})",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "lm_eval_tasks", tuple(self.lm_eval_tasks))
        if self.lm_eval_include is not None:
            object.__setattr__(self, "lm_eval_include", Path(self.lm_eval_include))
        if self.latency_table is not None:
            object.__setattr__(self, "latency_table", Path(self.latency_table))

    def problems(self) -> list[str]:
        problems = [
            *_one_of("probe", self.probe, PROBES),
            *_one_of("head", self.head, HEADS),
            *_one_of("prompts", self.prompts, PROMPTS),
            *_one_of("latency_mode", self.latency_mode, LATENCY_MODES),
            *_one_of("latency_runtime", self.latency_runtime, tuple(list_runtimes())),
        ]
        if self.latency_table is not None and self.latency_runtime != "eager":
            problems.append("`latency_table` names the runtime it was measured in: leave `latency_runtime` out with it")
        if self.class_names is not None and self.head != "zero-shot":
            problems.append("`class_names` needs `head` zero-shot")
        if self.prompts != "full" and self.head != "zero-shot":
            problems.append("`prompts` needs `head` zero-shot")
        problems += _at_least_one(self, ("latency_batch_size", "latency_seq_len"))
        problems += _finite(self, ("fidelity_fraction", "fidelity_z"))
        problems += _upper_limits(self)
        if not 0 <= self.fidelity_fraction <= 1:
            problems.append(
                f"`fidelity_fraction` must be in [0, 1] (0 or 1: no subset stage), got {self.fidelity_fraction}"
            )
        if self.fidelity_z < 0:
            problems.append(f"`fidelity_z` must be >= 0, got {self.fidelity_z}")
        return problems + self._lm_eval_problems()

    def _lm_eval_problems(self) -> list[str]:
        """`lm_eval_tasks` given exactly when `downstream` is an objective; `lm_eval_limit` a whole number >= 1."""
        problems = []
        downstream = DOWNSTREAM in self.objectives
        if downstream and not self.lm_eval_tasks:
            problems.append(
                f"objective {DOWNSTREAM} needs `lm_eval_tasks`: the lm-eval tasks to score, comma-separated "
                "(e.g. hellaswag,arc_easy, or the names of task files in `lm_eval_include`)"
            )
        if not downstream:
            given = [k for k in ("lm_eval_tasks", "lm_eval_include") if getattr(self, k)]
            if self.lm_eval_limit != LM_EVAL_LIMIT:
                given.append("lm_eval_limit")
            problems += [f"`{k}` needs objective {DOWNSTREAM} (`objectives`)" for k in given]
        limit = self.lm_eval_limit
        if isinstance(limit, bool) or not isinstance(limit, int):
            problems.append(f"`lm_eval_limit` must be a whole number of documents per task, got {limit!r}")
        elif limit < 1:
            problems.append(f"`lm_eval_limit` must be at least 1, got {limit}")
        return problems

    @property
    def staged(self) -> bool:
        """Whether plans are scored on a subset of the samples first (`fidelity_fraction` strictly inside 0…1)."""
        return 0 < self.fidelity_fraction < 1


# ---- budgets: one per cost objective --------------------------------------------------------------------------------
#: settings.json keys and flags of the budgets whose name is not `budget_<objective>` (the unit is part of it)
BUDGET_KEYS = {"latency": "budget_latency_ms"}
#: the help of the built-in cost objectives' budgets; another cost objective's is written from its declaration
BUDGET_HELP = {
    "gflops": "cost limit in GFLOPs per input (default: none)",
    "params": "limit in millions of parameters (default: none)",
    "latency": "latency limit in milliseconds per batch of --latency-batch-size inputs on --device / --dtype in "
    "--latency-runtime, or as the --latency-table file says: the search estimates it from the latency table (whole "
    "models timed once, cached), chosen/ must meet it measured end to end here (a table file: measured there by "
    "`toast-search measure`) (default: none)",
}
BUDGET_FRACTION = "budget_fraction"


def budget_key(objective: str) -> str:
    """The settings key (and, with dashes, the flag) of cost objective `objective`'s budget (`budget_gflops`)."""
    return BUDGET_KEYS.get(objective, f"budget_{objective}")


def budget_options() -> list[Option]:
    """A `--budget-<name>` option per registered cost objective (registry order), `--budget-fraction` after the
    params budget, as `--help` has always listed them."""
    out = []
    for name in list_objectives(Role.COST):
        o = get_objective(name)
        key = budget_key(name)
        text = BUDGET_HELP.get(name) or f"limit on {o.name} in {o.unit}: {o.description} (default: none)"
        out.append(Option(key=key, flag="--" + key.replace("_", "-"), help=text, type=float, section="study"))
    fraction = Option(
        key=BUDGET_FRACTION,
        flag="--budget-fraction",
        help="limit as a fraction of the original GFLOPs, e.g. 0.7 (default: none; the demo run, "
        f"{DEFAULT_MODEL} on {DEFAULT_DATASET} with no budget given, uses {DEMO_BUDGET_FRACTION}; demo-lm on its "
        f"corpus {DEMO_BUDGETS[('demo-lm', DEFAULT_LM_DATASET)]})",
        type=float,
        section="study",
    )
    after = [i for i, o in enumerate(out) if o.key in ("budget_gflops", "budget_params")]
    out.insert(after[-1] + 1 if after else len(out), fraction)
    return out


@dataclass(frozen=True, kw_only=True)
class StudySettings:
    """The study: the sampler, how many trials for how long, the seed, the budgets and the run directory.

    `budgets`: a limit per cost objective name, in its unit (`{"gflops": 15.0, "latency": 4.0}`: GFLOPs per input,
    ms per batch); `budget_fraction`: a GFLOPs limit as a share of the original model's."""

    sampler: str = option(
        "tpe-local",  # multivariate TPE with local steps from the front, seeded by the DP: bench_front.py
        help="what proposes the plans. tpe-local (the default): multivariate TPE, every other trial an untried "
        "one-gene neighbour of a front plan, a repeated plan replaced by an untried one near it (it reached the "
        "exhaustive front fastest in bench/bench_front.py); tpe: multivariate TPE alone; exhaustive scores every plan "
        "of a small space; the peers' rules on the same study: shortgpt (least Block Influence), sleb (greedy, one "
        "block at a time), replaceme (closest window, linear map), evopress (evolutionary, per removal level) "
        "(default: {default})",
        choices=SAMPLERS,
    )
    seed: int = option(0, help="seed of every random draw and of the sampler (default: {default})")
    trials: int = option(100, help="trials in the study, counting finished ones (default: {default})")
    timeout: float | None = option(None, help="stop starting trials after this many seconds (default: none)")
    budgets: Mapping[str, float] = field(default_factory=dict)  # options: `budget_options()`
    budget_fraction: float | None = None  # option: `budget_options()`
    out: Path | None = option(
        None,  # None: `default_run_dir(settings)`, runs/<model>-<dataset>-<run_key()>: the same run resumes
        help="run directory (default: runs/<model>-<dataset>-<key>, the key 8 hex digits of the options that bind "
        "a run, so the same command resumes and changing one of them starts another run)",
    )
    seeds_per_study: int = 10

    def __post_init__(self) -> None:
        given = dict(self.budgets)
        order = [*list_objectives(Role.COST), *given]  # registry order, as the constraints and choose() read them
        object.__setattr__(self, "budgets", {k: given[k] for k in dict.fromkeys(order) if given.get(k) is not None})
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))

    def problems(self) -> list[str]:
        problems = [*_one_of("sampler", self.sampler, list_samplers()), *_at_least_one(self, ("trials",))]
        limits = {budget_key(k): v for k, v in self.budgets.items()}
        cost = set(list_objectives(Role.COST))
        problems += [f"`{budget_key(k)}`: {k!r} is no cost objective" for k in self.budgets if k not in cost]
        floats = {**limits, BUDGET_FRACTION: self.budget_fraction, "timeout": self.timeout}
        for name, value in floats.items():
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                problems.append(f"`{name}` must be a finite number, got {value!r}")
        if not 0 <= self.seed <= SEED_MAX:
            problems.append(f"`seed` must be between 0 and {SEED_MAX} (what NumPy's generators take), got {self.seed}")
        for name, value in floats.items():
            if value is not None and value <= 0:
                problems.append(f"`{name}` must be positive, got {value}")
        if self.budget_fraction is not None and self.budgets.get("gflops") is not None:
            problems.append("give `budget_gflops` or `budget_fraction`, not both")
        return problems

    @property
    def budgeted(self) -> bool:
        return bool(self.budgets) or self.budget_fraction is not None


@dataclass(frozen=True, kw_only=True)
class RunnerSettings:
    """Where trials run: a registered runner's name and its options (None: the runner's defaults)."""

    name: str = option(
        "local",
        help="where trials run: this process, or Ray Tune on a local Ray instance or the cluster of --ray-address "
        "(default: {default})",
        key="runner",  # choices: the registered runners (`runner_options`)
    )
    options: Any = None  # the runner's options class's instance (`toast.runners.runner_options_class`)

    def __post_init__(self) -> None:
        options_class = _runner_classes().get(self.name)
        if self.options is None and options_class is not None:
            object.__setattr__(self, "options", options_class())

    def problems(self) -> list[str]:
        names = tuple(_runner_classes())
        if self.name not in names:
            return [f"`runner` must be {' or '.join(names)}, got {self.name!r}"]
        return list(self.options.problems()) if hasattr(self.options, "problems") else []


def _runner_classes() -> dict[str, type]:
    """The registered runners and their options classes (`toast.runners`)."""
    from toast.runners import list_runners, runner_options_class

    return {name: runner_options_class(name) for name in list_runners()}


def runner_options() -> list[Option]:
    """`--runner` and every registered runner's options (each `--x` says which runner it is for in its help)."""
    classes = _runner_classes()
    (name,) = options_of(RunnerSettings, section="runner")
    out = [replace(name, choices=tuple(classes))]
    for cls in classes.values():
        out += options_of(cls, section="runner")
    return out


# ---- the settings --------------------------------------------------------------------------------------------------
SECTIONS = ("data", "space", "scoring", "study", "runner")


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """Everything a search run depends on, in sections, plus the run-wide fields; saved as `settings.json`."""

    data: DataSettings
    space: SpaceSettings = field(default_factory=SpaceSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    study: StudySettings = field(default_factory=StudySettings)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    device: str = option("auto", help="auto, cpu or cuda (default: auto = cuda when available)")
    # not an identity key: where the weights sit does not change what a trial computes
    device_map: str | None = option(
        None,
        help="auto: spread the model over the GPUs, then CPU memory, then disk (accelerate) when it does not fit one "
        "device (default: the whole model on --device)",
        choices=DEVICE_MAPS,
    )
    dtype: str = option("float32", help="model dtype (bf16/fp16 for GPUs) (default: {default})", choices=DTYPES)
    activation_dtype: str = option(
        "float16",
        help="dtype of the cached activation shards; statistics are always float64 (default: {default})",
        choices=ACTIVATION_DTYPES,
    )
    cache_dir: Path | None = option(
        None,
        help="root of everything toast-search keeps between runs: activations, preprocessed inputs, prefix states, "
        "trained translators, latency tables, local parquet / image-folder datasets as Arrow and the docstrings "
        "corpus; downloads from the Hugging Face Hub stay in its own cache ($HF_HOME) "
        "(default: $TOAST_CACHE_DIR, else $XDG_CACHE_HOME/toast-search or ~/.cache/toast-search)",
    )
    batch_size: int = option(32, help="batch size of every forward pass (default: {default})")
    progress: bool | None = option(
        None,  # None: only when stderr is a terminal (`show_progress`)
        help="progress bars on stderr (default: only when stderr is a terminal, so a piped log gets none)",
        action="BooleanOptionalAction",
    )
    # disk for the states of shared prefixes, over every run's (`<cache_dir>/prefix/`); None: the smaller of 2 GB and
    # a tenth of the free disk (`toast.capture.default_cap_bytes`); 0: every trial runs its whole forward
    prefix_cache_gb: float | None = option(
        None,
        help="disk (GB) for the hidden states of prefixes plans share, so a trial starts at its first span: one cap "
        "over every run's states in <cache-dir>/prefix/, the least recently used dropped first; 0: every trial runs "
        "all its blocks (default: the smaller of 2 and a tenth of the free disk, counting what the store holds)",
    )
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = [p for name in SECTIONS for p in getattr(self, name).problems()]
        problems += _one_of_dtype(self.dtype)
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            problems.append(
                f"`device_map` must be {' or '.join(DEVICE_MAPS)} (or unset: the whole model on `device`), "
                f"got {self.device_map!r}"
            )
        if self.device_map is not None and self.needs_latency:
            problems.append(
                "latency (an objective or --budget-latency-ms) is timed on the whole model on one device, and "
                "`device_map` auto may put blocks on disk: drop one of them"
            )
        for key, given in (
            ("latency_table", self.scoring.latency_table is not None),
            ("latency_runtime", self.scoring.latency_runtime != "eager"),
        ):
            if given and not self.needs_latency:
                problems.append(
                    f"`{key}` is for latency: make latency an objective (`objectives` …,latency) or give "
                    "`budget_latency_ms`"
                )
        problems += _at_least_one(self, ("batch_size",))
        problems += _finite(self, ("prefix_cache_gb",))
        if self.prefix_cache_gb is not None and self.prefix_cache_gb < 0:
            problems.append(f"`prefix_cache_gb` must be >= 0 (0: no prefix reuse), got {self.prefix_cache_gb}")
        problems += self._sampler_problems()
        if problems:
            raise SettingsError("; ".join(problems))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if self.study.out is None:
            object.__setattr__(self, "study", replace(self.study, out=default_run_dir(self)))

    # ---- the flat view: settings.json's keys ----------------------------------------------------------------------
    def _sampler_problems(self) -> list[str]:
        """A peer's strategy needs the kind its rule proposes in the space, and a sequential one one trial at a time."""
        spec = SAMPLER_SPECS.get(self.study.sampler)
        if spec is None:
            return []  # the study section says so
        problems = []
        missing = spec.missing_kinds(tuple(self.space.translators))
        if missing is not None:
            problems.append(
                f"--sampler {spec.name} proposes {missing} spans: add {missing} to --translators "
                f"(given: {','.join(self.space.translators)})"
            )
        concurrent = getattr(self.runner.options, "max_concurrent", None)
        if spec.sequential and self.runner.name != "local" and concurrent != 1:
            problems.append(
                f"--sampler {spec.name} needs each plan's score before it proposes the next: with --runner "
                f"{self.runner.name} set --max-concurrent 1"
            )
        return problems

    @classmethod
    def from_flat(cls, **values: Any) -> SearchSettings:
        """Settings from settings.json's flat keys (`model=..., trials=..., budget_gflops=...`), each routed to its
        section; a key no section has is refused. Every problem is listed at once, as the constructor does."""
        routes = _routes()
        unknown = sorted(k for k in values if k not in routes)
        if unknown:
            raise SettingsError(f"unknown settings: {', '.join(unknown)}")
        parts: dict[str, dict[str, Any]] = {name: {} for name in ("", *SECTIONS)}
        budgets: dict[str, float] = {}
        runner_values: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            section, name = routes[key]
            if section == "budgets":
                budgets[name] = value
            elif section.startswith("runner:"):
                runner_values.setdefault(section.partition(":")[2], {})[name] = value
            else:
                parts[section][name] = value
        parts["study"]["budgets"] = budgets
        chosen = parts["runner"].get("name", "local")
        problems: list[str] = []
        for runner, given in runner_values.items():
            if runner == chosen:
                continue
            for name, value in given.items():
                if value is not None:
                    problems.append(f"`{name}` needs `runner` {runner}")
            try:  # the values' own checks too, so that one run of the command lists every problem
                _runner_classes()[runner](**given)
            except SettingsError as exc:
                problems.append(str(exc))
        options_class = _runner_classes().get(chosen)
        if options_class is not None:
            parts["runner"]["options"] = options_class(**runner_values.get(chosen, {}))
        try:
            settings = cls(
                data=DataSettings(**parts["data"]),
                space=SpaceSettings(**parts["space"]),
                scoring=ScoringSettings(**parts["scoring"]),
                study=StudySettings(**parts["study"]),
                runner=RunnerSettings(**parts["runner"]),
                **parts[""],
            )
        except SettingsError as exc:
            raise SettingsError("; ".join([str(exc), *problems])) from None
        if problems:
            raise SettingsError("; ".join(problems))
        return settings

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SearchSettings:
        """The settings a `settings.json` holds (keys it holds beside the settings, `used` and the digest, are
        skipped; a key written before a setting existed keeps the setting's default)."""
        routes = _routes()
        values: dict[str, Any] = {}
        for key, value in doc.items():
            if key not in routes:
                continue
            if isinstance(value, list):
                value = tuple(value)
            if key in ("cache_dir", "class_names", "out") and value is not None:
                value = Path(value)
            values[key] = value
        return cls.from_flat(**values)

    def flat(self) -> dict[str, Any]:
        """The settings as settings.json's flat keys, in its order (`to_json` without the plain-JSON conversion)."""
        out: dict[str, Any] = {}
        for key, (section, name) in _routes().items():
            if section == "budgets":
                out[key] = self.study.budgets.get(name)
            elif section.startswith("runner:"):
                options = self.runner.options
                mine = section.partition(":")[2] == self.runner.name and options is not None
                out[key] = getattr(options, name) if mine else _runner_default(section, name)
            else:
                out[key] = getattr(getattr(self, section) if section else self, name)
        return out

    def __getattr__(self, name: str) -> Any:
        """A flat key read as an attribute (`settings.trials` is `settings.study.trials`): for users and tests; the
        package reads sections."""
        routes = _routes()
        if name.startswith("_") or name not in routes:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.flat()[name]

    def updated(self, **values: Any) -> SearchSettings:
        """These settings with some flat keys changed (`updated(model=..., out=...)`), validated again."""
        return type(self).from_flat(**{**self.flat(), **values})

    # ---- what the run is ---------------------------------------------------------------------------------------
    @property
    def out(self) -> Path:
        """The run directory (`study.out`, always set: `default_run_dir` when not given)."""
        return self.study.out

    @property
    def show_progress(self) -> bool:
        """Whether to draw progress bars: `progress` when set, else only when stderr is a terminal (a piped log
        gets none) and the console is not quiet."""
        from ._quiet import show_progress

        return show_progress(self.progress)

    @property
    def needs_latency(self) -> bool:
        """Whether the run measures a latency table: latency is an objective or has a budget."""
        return "latency" in self.study.budgets or "latency" in self.scoring.objectives

    def run_key(self) -> str:
        """8 hex digits naming what this run computes (`identity()`): the default run directory's suffix, so the
        same command finds its study again and a change to a binding setting gets a directory of its own."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def identity(self, *, complete: bool = False) -> dict:
        """What a run directory is bound to: every setting that changes what a trial computes (resuming with
        other values is refused); the others (trials, timeout, sampler, budgets, runner resources …) may differ, but
        a peer's strategy (`Sampler.own_run`: shortgpt, sleb, replaceme, evopress) binds its run to it.
        The keys added later (`LATER_IDENTITY_KEYS`) only where set away from their default, unless `complete` (what a
        resumed run is compared on)."""
        flat = self.flat()
        out = {k: _plain(flat[k]) for k in IDENTITY_KEYS}
        defaults = flat_defaults()
        out.update({k: _plain(flat[k]) for k in LATER_IDENTITY_KEYS if complete or flat[k] != defaults[k]})
        spec = SAMPLER_SPECS.get(flat["sampler"])
        if spec is not None and spec.own_run:  # a peer's study is its own, beside the default search's
            out["sampler"] = flat["sampler"]
        out[CLASS_NAMES_DIGEST] = _file_digest(self.scoring.class_names)  # the file's content, not only its path
        return out

    @classmethod
    def identity_defaults(cls) -> dict:
        """The identity fields' defaults: what a `settings.json` written before a field existed meant."""
        defaults = flat_defaults()
        out = {k: _plain(defaults[k]) for k in (*IDENTITY_KEYS, *LATER_IDENTITY_KEYS) if k in defaults}
        return {**out, **BEFORE_FIELDS, CLASS_NAMES_DIGEST: None}

    def to_json(self) -> dict:
        return {k: _plain(v) for k, v in self.flat().items()}

    def save(self, path: Path, *, used: dict | None = None) -> None:
        """`settings.json`; `used` records what the run really used where it differs from what was asked
        (e.g. `{"calib_samples": 48}` when the split holds 48 samples)."""
        doc = {**self.to_json(), CLASS_NAMES_DIGEST: _file_digest(self.scoring.class_names)}
        if used:
            doc["used"] = used
        from .._artifacts import atomic_write_text

        atomic_write_text(path, json.dumps(doc, indent=2))


def _one_of_dtype(dtype: str) -> list[str]:
    return [] if dtype in DTYPES else [f"`dtype` must be float32, bfloat16 or float16, got {dtype!r}"]


# ---- the flat keys, in settings.json's order ------------------------------------------------------------------------
#: settings.json's key order (as the flat `SearchSettings` wrote it); keys added since follow their section's last
JSON_ORDER = (
    "model",
    "dataset",
    "out",
    "split_train",
    "split_test",
    "input_column",
    "label_column",
    "translators",
    "ranks",
    "max_removed",
    "min_kept",
    "objectives",
    "probe",
    "head",
    "class_names",
    "prompts",
    "calib_dataset",
    "calib_split",
    "probe_samples",
    "eval_samples",
    "calib_samples",
    "sampler",
    "seed",
    "trials",
    "timeout",
    "budget_gflops",
    "budget_params",
    "budget_fraction",
    "budget_latency_ms",
    "latency_batch_size",
    "latency_seq_len",
    "latency_mode",
    "latency_runtime",
    "latency_table",
    "lm_eval_tasks",
    "lm_eval_include",
    "lm_eval_limit",
    "plans",
    "device",
    "device_map",
    "dtype",
    "activation_dtype",
    "refit",
    "cache_dir",
    "batch_size",
    "runner",
    "ray_address",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_concurrent",
    "max_failures",
    "progress",
    "seeds_per_study",
    "fidelity_fraction",
    "fidelity_z",
    "prefix_cache_gb",
    "extra",
)


def _section_fields() -> Iterator[tuple[str, str, str]]:
    """(flat key, where, field name) of every setting; `where` is a section's name, "" for a run-wide field,
    "budgets" for a cost objective's budget, "runner:<name>" for a runner's option."""
    for f in dataclasses.fields(SearchSettings):
        if f.name not in SECTIONS:
            yield f.name, "", f.name
    for section in SECTIONS:
        cls = {f.name: f.type for f in dataclasses.fields(SearchSettings)}[section]
        for f in dataclasses.fields(_SECTION_CLASSES[cls]):
            if (section, f.name) in (("study", "budgets"), ("runner", "options")):
                continue
            yield f.metadata.get("key", f.name), section, f.name
    for name in list_objectives(Role.COST):
        yield budget_key(name), "budgets", name
    for runner, options_class in _runner_classes().items():
        for f in dataclasses.fields(options_class) if dataclasses.is_dataclass(options_class) else ():
            if "help" in f.metadata:
                yield f.metadata.get("key", f.name), f"runner:{runner}", f.name


_SECTION_CLASSES = {
    "DataSettings": DataSettings,
    "SpaceSettings": SpaceSettings,
    "ScoringSettings": ScoringSettings,
    "StudySettings": StudySettings,
    "RunnerSettings": RunnerSettings,
}


def _routes() -> dict[str, tuple[str, str]]:
    """Flat key -> (where, field name), in settings.json's order (`JSON_ORDER`, then the keys added since, each after
    the last key of its section)."""
    found = {key: (where, name) for key, where, name in _section_fields()}
    return {k: found[k] for k in _ordered(JSON_ORDER, {k: w.partition(":")[0] for k, (w, _) in found.items()})}


def _ordered(order: tuple[str, ...], group: dict[str, str]) -> list[str]:
    """The keys of `group` (key -> its section) in `order`, a key `order` lacks after the last key of its section
    (else last)."""
    keys = [k for k in order if k in group]
    for key in group:
        if key not in keys:
            same = [i for i, k in enumerate(keys) if group[k] == group[key]]
            keys.insert(same[-1] + 1 if same else len(keys), key)
    return keys


def _runner_default(section: str, name: str) -> Any:
    cls = _runner_classes()[section.partition(":")[2]]
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return None if f.default is dataclasses.MISSING else f.default


def flat_defaults() -> dict[str, Any]:
    """Each flat key's default (required ones left out)."""
    out: dict[str, Any] = {}
    for key, (where, name) in _routes().items():
        if where == "budgets" or key == BUDGET_FRACTION:
            out[key] = None
            continue
        if where.startswith("runner:"):
            out[key] = _runner_default(where, name)
            continue
        cls = (
            SearchSettings
            if not where
            else _SECTION_CLASSES[{f.name: f.type for f in dataclasses.fields(SearchSettings)}[where]]
        )
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        if f.default is not dataclasses.MISSING:
            out[key] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[key] = f.default_factory()
    return out


#: the options `toast-search` and `toast-search analyze` share, in `--help`'s order (the console's follow them)
DATA_OPTIONS = (
    "model",
    "dataset",
    "input_column",
    "label_column",
    "calib_samples",
    "seq_len",
    "stats_memory_gb",
    "seed",
    "batch_size",
    "activation_dtype",
    "cache_dir",
    "device",
    "device_map",
)
#: the search's other options, in `--help`'s order (an option added since follows the last of its section)
SEARCH_OPTIONS = (
    "split_train",
    "split_test",
    "translators",
    "ranks",
    "refit",
    "fidelity_fraction",
    "fidelity_z",
    "prefix_cache_gb",
    "max_removed",
    "min_kept",
    "objectives",
    "probe",
    "head",
    "class_names",
    "prompts",
    "calib_dataset",
    "calib_split",
    "probe_samples",
    "eval_samples",
    "sampler",
    "trials",
    "timeout",
    "budget_gflops",
    "budget_params",
    "budget_fraction",
    "budget_latency_ms",
    "latency_batch_size",
    "latency_seq_len",
    "latency_mode",
    "latency_runtime",
    "latency_table",
    "lm_eval_tasks",
    "lm_eval_include",
    "lm_eval_limit",
    "plans",
    "out",
    "dtype",
    "runner",
    "ray_address",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_concurrent",
    "max_failures",
)


def search_options() -> dict[str, Option]:
    """Every setting that is a command-line option, by flat key, in `toast-search --help`'s order: `DATA_OPTIONS`,
    `progress`, then `SEARCH_OPTIONS` (the sections', the budgets', the runners')."""
    found: dict[str, Option] = {}
    for o in options_of(DataSettings, section="data"):
        found[o.key] = o
    for section, cls in (("space", SpaceSettings), ("scoring", ScoringSettings), ("study", StudySettings)):
        for o in options_of(cls, section=section):
            found[o.key] = replace(o, help=_objectives_help()) if o.key == "objectives" else o
    for o in [*budget_options(), *runner_options(), *options_of(SearchSettings)]:
        found[o.key] = o
    order = (*DATA_OPTIONS, "progress", *SEARCH_OPTIONS)
    return {k: found[k] for k in _ordered(order, {k: o.section for k, o in found.items()})}


#: What a run made before an identity field existed did, where that differs from the field's default.
BEFORE_FIELDS = {"fidelity_fraction": 0.0}  # every plan scored on the full sets
CLASS_NAMES_DIGEST = "class_names_sha256"  # in `identity()` and settings.json: editing the file is another run


def slug(text: str) -> str:
    """A model or dataset name as part of a folder name: its last path part, other characters than letters, digits
    and `-_.` as `-` (`facebook/dinov2-base` -> `dinov2-base`)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(text).name or text)


def default_run_dir(settings: SearchSettings) -> Path:
    """`runs/<model>-<dataset>-<run key>`: a function of what identifies the run, so re-running the same command
    (without `--out`) resumes its study, and changing a setting that binds the run directory starts another."""
    return Path("runs") / f"{slug(settings.data.model)}-{slug(settings.data.dataset)}-{settings.run_key()}"


def _file_digest(path: Path | None) -> str | None:
    """The sha256 of a settings file's content (None: no file, or one that cannot be read: its own check says so)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
