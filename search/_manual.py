"""`--plan`: the plans a run was given to score instead of searching, and the space that holds them."""

from __future__ import annotations

from toast.spaces import Plan, PlanSpace

from ._settings import SearchSettings

__all__ = ["manual_space"]


def manual_space(settings: SearchSettings, space: PlanSpace) -> tuple[PlanSpace, list[Plan]]:
    """For `--plan`: the plans, and a space holding the search space's kinds and every kind the plans use."""
    plans = [Plan.parse(text, space.num_blocks) for text in settings.space.plans]
    kinds = tuple(dict.fromkeys([*space.kinds, *(s.kind for p in plans for s in p.spans)]))
    space = PlanSpace(num_blocks=space.num_blocks, kinds=kinds)
    for plan in plans:
        space.encode(plan)  # clear error for plans the genome cannot express
    return space, plans
