"""The agent: settings, the trial context, the study, the run, the front and the CLI; models, data and
capture in their own sub-packages (`toast.models`, `.data`, `.capture`)."""

from .._artifacts import ArtifactWriter, default_cache_dir, read_artifact, write_artifact
from ..capture import (
    ActivationCache,
    CalibrationSettings,
    CapturedActivations,
    CapturedSpanData,
    CaptureSpec,
    calibrate,
)
from ..data import (
    DATASET_ALIASES,
    DatasetAlias,
    InputsSpec,
    LabeledSplit,
    PreprocessedInputs,
    default_splits,
    iter_batches,
    load_split,
    sample_ids,
)
from ..errors import CacheError, DatasetError, ModelOutputError, SettingsError, UnsupportedModelError
from ..models import (
    MODEL_ALIASES,
    CompressedModel,
    Family,
    LoadedModel,
    TokenLayout,
    family_for,
    load_model,
    measure_cost_table,
)
from ._analyze import Analysis, analyze
from ._bank import TranslatorBank
from ._context import PlanOutputs, SearchContext
from ._dry_run import describe_run
from ._export_run import RunExport, export_run
from ._latency import (
    LatencySpec,
    cheapest_latency_plan,
    interleaved_medians,
    latency_inputs,
    measure_end_to_end,
    measure_latency_table,
)
from ._onnx import OnnxExportError, OnnxReport, export_onnx
from ._pareto import Front, choose, hypervolume, non_dominated, non_dominated_sort
from ._plot import plot_pareto
from ._prepare import Prepared, preflight, prepare, samples_used
from ._quiet import quiet_libraries
from ._run import RunResult, run_search
from ._settings import (
    DataSettings,
    RunnerSettings,
    ScoringSettings,
    SearchSettings,
    SpaceSettings,
    StudySettings,
)
from ._storage import STORAGE_FILES, load_run_study, open_storage, study_file
from ._study import STUDY_NAME, Budgets, Search, plan_key, resolve_budgets, scored_records, write_trials_csv
from ._summary import format_front_table
from ._trial import SearchTrials, settings_for_workers

__all__ = [
    "Analysis",
    "DataSettings",
    "RunExport",
    "RunnerSettings",
    "ScoringSettings",
    "SpaceSettings",
    "StudySettings",
    "analyze",
    "describe_run",
    "export_run",
    "DATASET_ALIASES",
    "MODEL_ALIASES",
    "STORAGE_FILES",
    "STUDY_NAME",
    "ActivationCache",
    "ArtifactWriter",
    "Budgets",
    "CacheError",
    "CalibrationSettings",
    "CaptureSpec",
    "CapturedActivations",
    "CapturedSpanData",
    "CompressedModel",
    "DatasetAlias",
    "DatasetError",
    "Family",
    "Front",
    "InputsSpec",
    "LabeledSplit",
    "LatencySpec",
    "LoadedModel",
    "ModelOutputError",
    "PlanOutputs",
    "Prepared",
    "PreprocessedInputs",
    "RunResult",
    "Search",
    "SearchContext",
    "TranslatorBank",
    "SearchSettings",
    "SearchTrials",
    "SettingsError",
    "TokenLayout",
    "UnsupportedModelError",
    "calibrate",
    "cheapest_latency_plan",
    "choose",
    "default_cache_dir",
    "default_splits",
    "family_for",
    "format_front_table",
    "hypervolume",
    "interleaved_medians",
    "iter_batches",
    "latency_inputs",
    "load_model",
    "load_run_study",
    "load_split",
    "measure_cost_table",
    "measure_end_to_end",
    "measure_latency_table",
    "non_dominated",
    "non_dominated_sort",
    "open_storage",
    "plan_key",
    "plot_pareto",
    "preflight",
    "prepare",
    "read_artifact",
    "quiet_libraries",
    "resolve_budgets",
    "run_search",
    "sample_ids",
    "samples_used",
    "scored_records",
    "settings_for_workers",
    "study_file",
    "write_artifact",
    "write_trials_csv",
    "OnnxExportError",
    "OnnxReport",
    "export_onnx",
]
