"""What a trial is scored on (accuracy, fidelity, GFLOPs, params, latency), and the similarity analysis."""

from ._cost import Cost, CostTable
from ._flops import PAPER_HANDLES, count_flops, count_params, flop_counter
from ._fidelity import feature_fidelity, linear_cka, mean_cosine
from ._latency import LatencyResult, measure_latency
from ._objectives import DEFAULT_OBJECTIVES, OBJECTIVES, Objective, ObjectiveError, get_objectives
from ._plots import plot_cka, plot_similarity
from ._probes import DEFAULT_ALPHAS, PROBES, AdamProbe, ProbeResult, RidgeProbe, probe_accuracy
from ._similarity import SimilarityReport, block_redundancy, cka_matrix, cosine_cls_matrix, state_names

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_OBJECTIVES",
    "OBJECTIVES",
    "PAPER_HANDLES",
    "PROBES",
    "AdamProbe",
    "Cost",
    "CostTable",
    "LatencyResult",
    "Objective",
    "ObjectiveError",
    "ProbeResult",
    "RidgeProbe",
    "SimilarityReport",
    "block_redundancy",
    "cka_matrix",
    "count_flops",
    "count_params",
    "cosine_cls_matrix",
    "feature_fidelity",
    "flop_counter",
    "get_objectives",
    "linear_cka",
    "mean_cosine",
    "measure_latency",
    "plot_cka",
    "plot_similarity",
    "probe_accuracy",
    "state_names",
]
