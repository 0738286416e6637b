"""The agent: settings, the trial context, the study, the run, the front and the CLI; models, data and
capture in their own sub-packages (`toast.models`, `.data`, `.capture`)."""

from ._analyze import Analysis, analyze
from ._dry_run import describe_run
from ._export_run import RunExport, export_run
from ._latency import LatencySpec, measure_latency_table
from ._onnx import OnnxExportError, OnnxReport, export_onnx
from ._pareto import Front, choose, hypervolume, non_dominated, non_dominated_sort
from ._plot import plot_pareto
from ._prepare import Prepared, prepare
from ._run import RunResult, run_search
from ._settings import DataSettings, RunnerSettings, ScoringSettings, SearchSettings, SpaceSettings, StudySettings
from ._storage import load_run_study
from ._summary import format_front_table

__all__ = [
    "Analysis",
    "DataSettings",
    "Front",
    "LatencySpec",
    "OnnxExportError",
    "OnnxReport",
    "Prepared",
    "RunExport",
    "RunResult",
    "RunnerSettings",
    "ScoringSettings",
    "SearchSettings",
    "SpaceSettings",
    "StudySettings",
    "analyze",
    "choose",
    "describe_run",
    "export_onnx",
    "export_run",
    "format_front_table",
    "hypervolume",
    "load_run_study",
    "measure_latency_table",
    "non_dominated",
    "non_dominated_sort",
    "plot_pareto",
    "prepare",
    "run_search",
]
