"""Plans, spans and translator kinds: what a compressed model is made of, independent of any model."""

from ._errors import MissingDependencyError, NotFittedError, PlanError, SpaceError, ToastError

# one module per kind, registered on import; `toast.spaces.testing.check_translator(kind)` is the suite each passes
from ._identity import IdentityTranslator
from ._linear import LinearTranslator
from ._plan import Plan, Span
from ._ridge import RidgeTranslator
from ._space import PlanSpace, canonical, rank_spans, seed_plans
from ._stats import ActivationStats, PairStats, StatsAccumulator
from ._translators import (
    Translator,
    TranslatorCost,
    create_translator,
    fit_span,
    list_translators,
    load_translator,
    register_translator,
    translator_class,
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
    "TranslatorCost",
    "create_translator",
    "fit_span",
    "list_translators",
    "load_translator",
    "register_translator",
    "translator_class",
]
