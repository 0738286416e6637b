"""What a trial is scored on (accuracy, fidelity, a causal LM's perplexity, KL and top-1 agreement, GFLOPs, params,
latency, a causal LM's lm-eval task accuracy `downstream` with the extra `[llm]`), the cost and latency tables, and
the similarity analysis.

Each objective is one module that registers itself; the built-in ones are imported here first, in the
registry's order (the order of the columns of trials.csv and of the front table). `toast.objectives.testing`
holds `check_objective`, the checks every registered objective passes. `__all__` is the package's public surface:
what a user calls, and every name another toast package imports.
"""

# The built-in objectives register themselves on import: the order of these imports is the registry's.
# isort: off
from ._objectives import Display, Objective, Role, undefined_field
from ._registry import (
    DEFAULT_OBJECTIVES,
    OBJECTIVES,
    compute_objectives,
    get_objective,
    get_objectives,
    list_objectives,
    register_objective,
    task_score,
)
from ._trial import TrialOutputs
from ._accuracy import HEADS  # (also registers `accuracy`)
from ._fidelity import feature_fidelity  # registers `fidelity`
from ._language import DEFAULT_TOP_K, TokenReference, reference_rows, token_scores  # `perplexity`, `kl`, `top1`
from . import _gflops, _params  # noqa: F401  (register `gflops`, `params`)
from ._latency import ESTIMATED_FIELD, MEASURED_FIELD  # registers `latency`
from ._latency_table import LatencyTable, held_budgets
from ._downstream import (  # registers `downstream` (lm-eval imported on first use only)
    DOWNSTREAM_TASKS_FIELD,
    LM_EVAL_HINT,
    check_downstream,
    downstream_scores,
    require_lm_eval,
)

# isort: on
from ._cost import Cost, CostTable
from ._flops import count_flops, count_params
from ._plots import new_figure, plot_cka, plot_similarity
from ._probes import PROBES, AdamProbe, probe_accuracy
from ._similarity import SampledSimilarity, SimilarityReport
from ._timing import LatencyResult, measure_latency

__all__ = [
    "HEADS",
    "DEFAULT_OBJECTIVES",
    "DEFAULT_TOP_K",
    "DOWNSTREAM_TASKS_FIELD",
    "ESTIMATED_FIELD",
    "MEASURED_FIELD",
    "OBJECTIVES",
    "PROBES",
    "AdamProbe",
    "Cost",
    "CostTable",
    "Display",
    "LM_EVAL_HINT",
    "LatencyResult",
    "LatencyTable",
    "Objective",
    "Role",
    "SampledSimilarity",
    "SimilarityReport",
    "TokenReference",
    "TrialOutputs",
    "check_downstream",
    "compute_objectives",
    "count_flops",
    "count_params",
    "downstream_scores",
    "feature_fidelity",
    "get_objective",
    "get_objectives",
    "held_budgets",
    "list_objectives",
    "measure_latency",
    "new_figure",
    "plot_cka",
    "plot_similarity",
    "probe_accuracy",
    "reference_rows",
    "register_objective",
    "require_lm_eval",
    "task_score",
    "token_scores",
    "undefined_field",
]
