"""Plans, spans and translator kinds: what a compressed model is made of, independent of any model.

`__all__` is the package's public surface: what a user calls, and every name another toast package imports.
The errors live in `toast.errors`; the ones re-exported here are those other toast code imports from here.
"""

from ..errors import MissingDependencyError, PlanError, ToastError

# one module per kind, registered on import; `toast.spaces.testing.check_translator(kind)` is the suite each passes
from . import _identity, _lowrank, _mlp, _resmlp, _ridge  # noqa: F401  (registers its kind: no name of it is public)
from ._folded import FoldedTranslator
from ._linear import LinearTranslator
from ._plan import Plan, Span
from ._space import KEEP, PlanSpace, front_seed_plans, rank_spans, seed_plans
from ._span_data import HOLDOUT_FRACTION, ArraySpanData, Part, SpanData, holdout_samples, part_mask
from ._stats import (
    BRANCH_DIR,
    ActivationStats,
    BlockFiles,
    BranchPair,
    PairStats,
    StatePair,
    StatsAccumulator,
    all_branch_pairs,
    all_pairs,
    load_pairs,
    pair_bytes,
    plan_passes,
    save_pairs,
    space_branch_pairs,
    space_pairs,
)
from ._translators import (
    Translator,
    create_translator,
    fit_span,
    kind_parameter,
    list_translators,
    load_translator,
    register_translator,
    translator_class,
)

__all__ = [
    "BRANCH_DIR",
    "HOLDOUT_FRACTION",
    "KEEP",
    "ActivationStats",
    "BlockFiles",
    "BranchPair",
    "ArraySpanData",
    "FoldedTranslator",
    "LinearTranslator",
    "MissingDependencyError",
    "PairStats",
    "Part",
    "Plan",
    "PlanError",
    "PlanSpace",
    "Span",
    "SpanData",
    "StatePair",
    "StatsAccumulator",
    "ToastError",
    "Translator",
    "all_branch_pairs",
    "all_pairs",
    "create_translator",
    "fit_span",
    "front_seed_plans",
    "holdout_samples",
    "kind_parameter",
    "list_translators",
    "load_pairs",
    "load_translator",
    "pair_bytes",
    "part_mask",
    "plan_passes",
    "rank_spans",
    "register_translator",
    "save_pairs",
    "seed_plans",
    "space_branch_pairs",
    "space_pairs",
    "translator_class",
]
