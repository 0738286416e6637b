"""The agent: settings, the trial context, the study, the run, the front and the CLI; models, data and
capture in their own sub-packages (`toast.search.models`, `.data`, `.capture`)."""

from ._context import SearchContext, samples_used
from ._errors import CacheError, DatasetError, ModelOutputError, SettingsError, UnsupportedModelError
from ._front import Front, choose, format_front_table, hypervolume, non_dominated, non_dominated_sort, plot_pareto
from ._quiet import quiet_libraries
from ._run import RunResult, preflight, run_search
from ._settings import SearchSettings
from ._study import STUDY_NAME, Budgets, Search, plan_key, resolve_budgets, scored_records, write_trials_csv
from .capture import ActivationCache, CalibrationSettings, CaptureSpec, CapturedActivations, calibrate
from .data import DATASET_ALIASES, DatasetAlias, InputsSpec, LabeledSplit, PreprocessedInputs, default_splits, iter_batches, load_split, sample_ids
from .models import FAMILIES, MODEL_ALIASES, CompressedModel, Family, LoadedModel, TokenLayout, family_for, load_model, measure_cost_table
from ._artifacts import default_cache_dir

__all__ = [
    "DATASET_ALIASES",
    "FAMILIES",
    "MODEL_ALIASES",
    "STUDY_NAME",
    "ActivationCache",
    "Budgets",
    "CacheError",
    "CalibrationSettings",
    "CaptureSpec",
    "CapturedActivations",
    "CompressedModel",
    "DatasetAlias",
    "DatasetError",
    "Family",
    "Front",
    "InputsSpec",
    "LabeledSplit",
    "LoadedModel",
    "ModelOutputError",
    "PreprocessedInputs",
    "RunResult",
    "Search",
    "SearchContext",
    "SearchSettings",
    "SettingsError",
    "TokenLayout",
    "UnsupportedModelError",
    "calibrate",
    "choose",
    "default_cache_dir",
    "default_splits",
    "family_for",
    "format_front_table",
    "hypervolume",
    "iter_batches",
    "load_model",
    "load_split",
    "measure_cost_table",
    "non_dominated",
    "non_dominated_sort",
    "plan_key",
    "plot_pareto",
    "preflight",
    "quiet_libraries",
    "resolve_budgets",
    "run_search",
    "samples_used",
    "scored_records",
    "write_trials_csv",
]
