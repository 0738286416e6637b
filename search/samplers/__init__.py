"""The strategies that propose plans to the study, one module each, registered on import (`--sampler NAME`).

Optuna's own (`tpe`, `nsga2`, `random`, `exhaustive`), the default `tpe-local` (`_local`), and the peers' published
rules on the same spaces, scoring and fronts: `shortgpt`, `sleb`, `replaceme`, `evopress` (`_rule` holds what they
share). A new strategy is one module here that calls `register_sampler`; `toast.search.samplers.testing.check_sampler`
is the suite it must pass.
"""

# registration order: the order `--help` lists them, the default first
from . import _local  # noqa: F401, I001
from . import _optuna, _shortgpt, _sleb, _replaceme, _evopress  # noqa: F401
from ._local import PROPOSED_BY, LocalFrontSampler
from ._registry import SAMPLERS, Sampler, SamplerContext, get_sampler, list_samplers, register_sampler
from ._rule import RuleSampler, one_shot_plans, removal_plan
from ._shortgpt import block_influence

__all__ = [
    "PROPOSED_BY",
    "SAMPLERS",
    "LocalFrontSampler",
    "RuleSampler",
    "Sampler",
    "SamplerContext",
    "block_influence",
    "get_sampler",
    "list_samplers",
    "one_shot_plans",
    "register_sampler",
    "removal_plan",
]
