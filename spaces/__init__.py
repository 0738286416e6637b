"""Plans, spans and translator kinds: what a compressed model is made of, independent of any model."""

from ._errors import MissingDependencyError, NotFittedError, PlanError, SpaceError, ToastError
from ._plan import Plan, Span
from ._space import PlanSpace, canonical, rank_spans, seed_plans
from ._stats import ActivationStats, PairStats, StatsAccumulator
from ._translators import (
    IdentityTranslator,
    LinearTranslator,
    RidgeTranslator,
    Translator,
    create_translator,
    fit_span,
    list_translators,
    register_translator,
    translator_module,
)

__all__ = [
    "PlanSpace",
    "SpaceError",
    "canonical",
    "rank_spans",
    "seed_plans",
    "ActivationStats",
    "IdentityTranslator",
    "LinearTranslator",
    "MissingDependencyError",
    "NotFittedError",
    "PairStats",
    "Plan",
    "PlanError",
    "RidgeTranslator",
    "Span",
    "StatsAccumulator",
    "ToastError",
    "Translator",
    "create_translator",
    "fit_span",
    "list_translators",
    "register_translator",
    "translator_module",
]
