"""Plans, spans and translator kinds: what a compressed model is made of, independent of any model."""

from ..errors import MissingDependencyError, NotFittedError, PlanError, SpaceError, ToastError

# one module per kind, registered on import; `toast.spaces.testing.check_translator(kind)` is the suite each passes
from ._folded import FoldedTranslator
from ._identity import IdentityTranslator
from ._linear import LinearTranslator
from ._lowrank import LowRankTranslator
from ._mlp import MLPTranslator
from ._plan import Plan, Span
from ._resmlp import ResMLPTranslator
from ._ridge import RidgeTranslator
from ._space import PlanSpace, canonical, front_seed_plans, predicted_front, rank_spans, seed_plans
from ._span_data import ArraySpanData, SpanData
from ._stats import ActivationStats, PairStats, StatsAccumulator
from ._trained import TrainedTranslator
from ._translators import (
    Translator,
    TranslatorCost,
    create_translator,
    fit_span,
    kind_parameter,
    list_translators,
    load_translator,
    register_translator,
    translator_class,
)

__all__ = [
    "PlanSpace",
    "SpaceError",
    "canonical",
    "front_seed_plans",
    "predicted_front",
    "rank_spans",
    "seed_plans",
    "ActivationStats",
    "ArraySpanData",
    "FoldedTranslator",
    "IdentityTranslator",
    "LinearTranslator",
    "MLPTranslator",
    "LowRankTranslator",
    "MissingDependencyError",
    "NotFittedError",
    "PairStats",
    "Plan",
    "PlanError",
    "ResMLPTranslator",
    "RidgeTranslator",
    "Span",
    "SpanData",
    "StatsAccumulator",
    "ToastError",
    "TrainedTranslator",
    "Translator",
    "TranslatorCost",
    "create_translator",
    "fit_span",
    "kind_parameter",
    "list_translators",
    "load_translator",
    "register_translator",
    "translator_class",
]
