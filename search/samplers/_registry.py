"""The sampler registry: each strategy that proposes plans to the study is one module that registers a `Sampler`.

A registered sampler builds an Optuna sampler (`optuna.samplers.BaseSampler`) for a study from a `SamplerContext`
(the space, the seed, the trial budget, the study's objectives and constraints, the calibration statistics) and says
how the study uses it: whether a new study is seeded with the statistics' predicted plans first (`seeded`), whether it
needs every earlier plan's score to propose the next (`sequential`: one trial at a time), how many plans its own rule
proposes in all (`planned`: the study runs no more than that), and which translator kinds it proposes (`kinds`: the
space must hold them). `--sampler NAME` picks one; `toast.search.samplers.testing.check_sampler` is the conformance
suite every registered sampler passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from toast.objectives import Objective
    from toast.spaces import ActivationStats, Plan, PlanSpace

__all__ = ["SAMPLERS", "Sampler", "SamplerContext", "get_sampler", "list_samplers", "register_sampler"]


@dataclass(frozen=True, kw_only=True)
class SamplerContext:
    """What a sampler is built from: the study's `space`, `seed`, `trials` (the study's trial budget), its
    `objectives` (in the study's order), `feasible(plan)` (the study's constraints: budgets and the space's limits)
    and the calibration `stats` (None where the study has none, e.g. a lookup study built without them)."""

    space: PlanSpace
    seed: int = 0
    trials: int = 100
    objectives: tuple[Objective, ...] = ()
    feasible: Callable[[Plan], bool] | None = None
    stats: ActivationStats | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # a sampler's own settings, by name (bench variants)

    def is_feasible(self, plan: Plan) -> bool:
        return (self.feasible or self.space.feasible)(plan)


@dataclass(frozen=True, kw_only=True)
class Sampler:
    """A registered strategy: `build(context)` returns the Optuna sampler of one study (see the module)."""

    name: str
    build: Callable[[SamplerContext], BaseSampler]
    help: str
    seeded: bool = True
    sequential: bool = False
    enumerates: bool = False  # the study enqueues every plan of the space (exhaustive) and runs exactly those
    kinds: tuple[str, ...] = ()  # the kinds its rule proposes, first the one it needs (the others where held)
    planned: Callable[[SamplerContext], int] | None = None  # how many plans its rule proposes in all
    own_run: bool = False  # its study is its own: the run directory is bound to it (a peer's, compared side by side)

    def missing_kinds(self, kinds: tuple[str, ...]) -> str | None:
        """The kind this strategy needs that a space of `kinds` lacks, or None."""
        return self.kinds[0] if self.kinds and self.kinds[0] not in kinds else None


_REGISTRY: dict[str, Sampler] = {}
SAMPLERS: Mapping[str, Sampler] = MappingProxyType(_REGISTRY)


def register_sampler(sampler: Sampler) -> Sampler:
    """Add `sampler` to the registry (`--sampler NAME`); a name is registered once."""
    if sampler.name in _REGISTRY:
        raise ValueError(f"a sampler named {sampler.name!r} is already registered")
    _REGISTRY[sampler.name] = sampler
    return sampler


def get_sampler(name: str) -> Sampler:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown sampler {name!r}: use one of {', '.join(_REGISTRY)}") from None


def list_samplers() -> tuple[str, ...]:
    """The registered samplers' names, in registration order."""
    return tuple(_REGISTRY)
