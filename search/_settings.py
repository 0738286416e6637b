"""The settings of one search, validated before any work starts (every problem listed at once)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toast.errors import SettingsError
from toast.objectives import DEFAULT_OBJECTIVES

SAMPLERS = ("tpe-local", "tpe", "nsga2", "random", "exhaustive")
PROBES = ("ridge", "adam")
HEADS = ("probe", "original", "zero-shot")
PROMPTS = ("full", "short")  # `head` zero-shot: the 80 CLIP ImageNet templates, or 7 of them
REFITS = ("independent", "sequential")
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


#: the float settings, each of which must be a finite number where given (NaN compares false with every bound)
FLOAT_FIELDS = (
    "budget_gflops",
    "budget_params",
    "budget_fraction",
    "budget_latency_ms",
    "timeout",
    "fidelity_fraction",
    "fidelity_z",
    "prefix_cache_gb",
    "cpus_per_trial",
    "gpus_per_trial",
)
#: upper bounds that catch a typo before minutes of work (a latency batch of 100,000 inputs is timed for minutes)
UPPER_LIMITS = {"latency_batch_size": 4096, "latency_seq_len": 32768}
SEED_MAX = 2**32 - 1


@dataclass(frozen=True, kw_only=True)
class SearchSettings:
    """Everything a search run depends on; saved as `settings.json` in the run directory."""

    model: str
    dataset: str
    out: Path | None = None  # None: `default_run_dir(self)`, runs/<model>-<dataset>-<run_key()>: the same run resumes
    split_train: str | None = None
    split_test: str | None = None
    input_column: str | None = None
    label_column: str | None = None
    translators: tuple[str, ...] = ("identity", "linear")
    ranks: tuple[str, ...] = DEFAULT_RANKS  # a bare `lowrank` in `translators` is one `lowrank:r` per rank
    max_removed: int | None = None
    min_kept: int | None = None
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    probe: str = "ridge"
    head: str = "probe"
    class_names: Path | None = None  # head zero-shot: one class name per line (default: the labels' ClassLabel names)
    prompts: str = "full"  # head zero-shot: the prompt templates
    calib_dataset: str | None = None  # the translators fitted on this dataset (default: `dataset`)
    calib_split: str | None = None  # its split the calibration samples come from (default: its train split)
    probe_samples: int = 5000
    eval_samples: int = 2000
    calib_samples: int = 500
    sampler: str = "tpe-local"  # multivariate TPE with local steps from the front, seeded by the DP: bench_front.py
    seed: int = 0
    trials: int = 100
    timeout: float | None = None
    budget_gflops: float | None = None
    budget_params: float | None = None  # millions
    budget_fraction: float | None = None
    budget_latency_ms: float | None = None  # estimated from the latency table in the search, measured for chosen/
    latency_batch_size: int = 1  # inputs per batch the latency table and the end-of-run measurements time
    latency_seq_len: int = 128  # text encoders: tokens per input the latency is timed at (images: the processor's crop)
    plans: tuple[str, ...] = ()
    device: str = "auto"
    dtype: str = "float32"
    activation_dtype: str = "float16"
    refit: str = "independent"  # sequential: a plan's later spans fitted on the compressed prefix's own states
    cache_dir: Path | None = None
    batch_size: int = 32
    runner: str = "local"
    ray_address: str | None = None  # --runner ray: join this cluster (default $RAY_ADDRESS, else a local Ray instance)
    cpus_per_trial: float | None = None  # None: 1
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs and --device is not cpu, else 0
    max_concurrent: int | None = None  # None: as many trials as the cluster's resources hold
    max_failures: int | None = None  # retries of a trial whose Ray worker died; None: 2
    progress: bool | None = None  # progress bars on stderr; None: only when stderr is a terminal (`show_progress`)
    seeds_per_study: int = 10
    fidelity_fraction: float = 0.25  # each plan scored first on this share of the probe and evaluation samples
    fidelity_z: float = 2.0  # ... and stopped there when a fully scored plan beats it by this many standard errors
    # disk for the states of shared prefixes, over every run's (`<cache_dir>/prefix/`); None: the smaller of 2 GB and
    # a tenth of the free disk (`toast.capture._prefix.default_cap_bytes`); 0: every trial runs its whole forward
    prefix_cache_gb: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        object.__setattr__(self, "ranks", tuple(str(r).strip() for r in self.ranks))  # 48 and "48" are one rank
        bad = [r for r in self.ranks if not RANK.fullmatch(r)]
        if bad or not self.ranks:
            problems.append(
                f"`ranks` must be positive integers or fractions of the model's width such as d/16, got "
                f"{', '.join(map(repr, bad)) or 'none'}"
            )
        if self.sampler not in SAMPLERS:
            problems.append(f"`sampler` must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.probe not in PROBES:
            problems.append(f"`probe` must be one of {', '.join(PROBES)}, got {self.probe!r}")
        if self.refit not in REFITS:
            problems.append(f"`refit` must be one of {', '.join(REFITS)}, got {self.refit!r}")
        if self.head not in HEADS:
            problems.append(f"`head` must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.prompts not in PROMPTS:
            problems.append(f"`prompts` must be one of {', '.join(PROMPTS)}, got {self.prompts!r}")
        if self.class_names is not None and self.head != "zero-shot":
            problems.append("`class_names` needs `head` zero-shot")
        if self.prompts != "full" and self.head != "zero-shot":
            problems.append("`prompts` needs `head` zero-shot")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            problems.append(f"`dtype` must be float32, bfloat16 or float16, got {self.dtype!r}")
        for name in (
            "probe_samples",
            "eval_samples",
            "calib_samples",
            "trials",
            "batch_size",
            "latency_batch_size",
            "latency_seq_len",
        ):
            if getattr(self, name) < 1:
                problems.append(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.calib_samples < 2:
            problems.append(f"`calib_samples` must be at least 2, got {self.calib_samples}")
        for name in FLOAT_FIELDS:  # NaN passes every comparison below: refused here, as infinities are
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                problems.append(f"`{name}` must be a finite number, got {value!r}")
        for name, limit in UPPER_LIMITS.items():
            if getattr(self, name) > limit:
                problems.append(f"`{name}` must be at most {limit}, got {getattr(self, name)}")
        if not 0 <= self.seed <= SEED_MAX:
            problems.append(f"`seed` must be between 0 and {SEED_MAX} (what NumPy's generators take), got {self.seed}")
        if not self.translators:
            problems.append("`translators` must name at least one translator kind (e.g. identity,linear)")
        for name in ("budget_gflops", "budget_params", "budget_fraction", "budget_latency_ms", "timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"`{name}` must be positive, got {value}")
        if not 0 <= self.fidelity_fraction <= 1:
            problems.append(
                f"`fidelity_fraction` must be in [0, 1] (0 or 1: no subset stage), got {self.fidelity_fraction}"
            )
        if self.fidelity_z < 0:
            problems.append(f"`fidelity_z` must be >= 0, got {self.fidelity_z}")
        if self.prefix_cache_gb is not None and self.prefix_cache_gb < 0:
            problems.append(f"`prefix_cache_gb` must be >= 0 (0: no prefix reuse), got {self.prefix_cache_gb}")
        if self.budget_fraction is not None and self.budget_gflops is not None:
            problems.append("give `budget_gflops` or `budget_fraction`, not both")
        if self.max_removed is not None and self.max_removed < 0:
            problems.append(f"`max_removed` must be >= 0, got {self.max_removed}")
        if self.min_kept is not None and self.min_kept < 0:
            problems.append(f"`min_kept` must be >= 0, got {self.min_kept}")
        if self.runner not in ("local", "ray"):
            problems.append(f"`runner` must be local or ray, got {self.runner!r}")
        ray_only = {
            "ray_address": self.ray_address,
            "cpus_per_trial": self.cpus_per_trial,
            "gpus_per_trial": self.gpus_per_trial,
            "max_concurrent": self.max_concurrent,
            "max_failures": self.max_failures,
        }
        for name, value in ray_only.items():
            if value is not None and self.runner != "ray":
                problems.append(f"`{name}` needs `runner` ray")
        for name in ("cpus_per_trial", "gpus_per_trial", "max_failures"):
            if (getattr(self, name) or 0) < 0:
                problems.append(f"`{name}` must be >= 0, got {getattr(self, name)}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            problems.append(f"`max_concurrent` must be at least 1, got {self.max_concurrent}")
        if self.cpus_per_trial == 0 and not self.gpus_per_trial:
            problems.append("`cpus_per_trial` 0 needs `gpus_per_trial` above 0: a trial must ask for some resource")
        if problems:
            raise SettingsError("; ".join(problems))
        object.__setattr__(self, "out", default_run_dir(self) if self.out is None else Path(self.out))

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

    @property
    def show_progress(self) -> bool:
        """Whether to draw progress bars: `progress` when set, else only when stderr is a terminal (a piped log
        gets none) and the console is not quiet."""
        from ._quiet import show_progress

        return show_progress(self.progress)

    def run_key(self) -> str:
        """8 hex digits naming what this run computes (`identity()`): the default run directory's suffix, so the
        same command finds its study again and a change to a binding setting gets a directory of its own."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    @property
    def budgeted(self) -> bool:
        return any(
            v is not None
            for v in (self.budget_gflops, self.budget_params, self.budget_fraction, self.budget_latency_ms)
        )

    @property
    def needs_latency(self) -> bool:
        """Whether the run measures a latency table: latency is an objective or has a budget."""
        return self.budget_latency_ms is not None or "latency" in self.objectives

    def identity(self) -> dict:
        """What a run directory is bound to: every setting that changes what a trial computes (resuming with
        other values is refused); the others (trials, timeout, sampler, budgets, runner resources …) may differ."""
        out = {k: _plain(getattr(self, k)) for k in IDENTITY_KEYS}
        out[CLASS_NAMES_DIGEST] = _file_digest(self.class_names)  # the file's content, not only its path
        return out

    @classmethod
    def identity_defaults(cls) -> dict:
        """The identity fields' defaults: what a `settings.json` written before a field existed meant."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = {k: _plain(fields[k].default) for k in IDENTITY_KEYS if fields[k].default is not dataclasses.MISSING}
        return {**out, **BEFORE_FIELDS, CLASS_NAMES_DIGEST: None}

    def to_json(self) -> dict:
        return {k: _plain(v) for k, v in asdict(self).items()}

    def save(self, path: Path, *, used: dict | None = None) -> None:
        """`settings.json`; `used` records what the run really used where it differs from what was asked
        (e.g. `{"calib_samples": 48}` when the split holds 48 samples)."""
        doc = {**self.to_json(), CLASS_NAMES_DIGEST: _file_digest(self.class_names)}
        if used:
            doc["used"] = used
        from .._artifacts import atomic_write_text

        atomic_write_text(path, json.dumps(doc, indent=2))


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
    return Path("runs") / f"{slug(settings.model)}-{slug(settings.dataset)}-{settings.run_key()}"


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
