"""What a trial is scored on (accuracy, fidelity, GFLOPs, params, latency), the cost and latency tables, and the
similarity analysis.

Each objective is one module that registers itself; the built-in ones are imported here first, in the
registry's order (the order of the columns of trials.csv and of the front table). `toast.objectives.testing`
holds `check_objective`, the checks every registered objective passes.
"""

# The built-in objectives register themselves on import: the order of these imports is the registry's.
# isort: off
from ._objectives import CostObjective, Display, Objective, ObjectiveError, Role, undefined_field
from ._registry import (
    DEFAULT_OBJECTIVES,
    OBJECTIVES,
    compute_objectives,
    get_objective,
    get_objectives,
    list_objectives,
    register_objective,
)
from ._trial import TrialOutputs
from ._accuracy import Accuracy
from ._fidelity import FIDELITY_UNDEFINED, Fidelity, feature_fidelity, linear_cka, mean_cosine
from ._gflops import GFlops
from ._params import Params
from ._latency import Latency, LatencyResult, measure_latency
from ._latency_table import LatencyTable

# isort: on
from ._cost import Cost, CostTable
from ._flops import PAPER_HANDLES, count_flops, count_params, flop_counter
from ._plots import plot_cka, plot_similarity
from ._probes import DEFAULT_ALPHAS, PROBES, AdamProbe, ProbeResult, RidgeProbe, probe_accuracy
from ._similarity import SimilarityReport, block_redundancy, cka_matrix, cosine_cls_matrix, state_names

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_OBJECTIVES",
    "FIDELITY_UNDEFINED",
    "OBJECTIVES",
    "PAPER_HANDLES",
    "PROBES",
    "Accuracy",
    "AdamProbe",
    "Cost",
    "CostObjective",
    "CostTable",
    "Display",
    "Fidelity",
    "GFlops",
    "Latency",
    "LatencyResult",
    "LatencyTable",
    "Objective",
    "ObjectiveError",
    "Params",
    "ProbeResult",
    "RidgeProbe",
    "Role",
    "SimilarityReport",
    "TrialOutputs",
    "block_redundancy",
    "cka_matrix",
    "compute_objectives",
    "cosine_cls_matrix",
    "count_flops",
    "count_params",
    "feature_fidelity",
    "flop_counter",
    "get_objective",
    "get_objectives",
    "linear_cka",
    "list_objectives",
    "mean_cosine",
    "measure_latency",
    "plot_cka",
    "plot_similarity",
    "probe_accuracy",
    "register_objective",
    "state_names",
    "undefined_field",
]
