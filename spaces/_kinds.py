"""The table of registered translator kinds (name -> class) and the reading of a kind string (`name`, `name:param`).

`register_translator` (in `_translators`) fills the table and a `Plan` checks each span's kind against it. It
sits below both because a `Translator` takes spans and plans as arguments: were the table kept with the base
class, `_plan` and `_translators` would import each other. The table asks a registered class for nothing but
its `parameter` and `from_spec(param)`, so it needs no import of `Translator`; `_translators` gives the typed
API (`translator_class(kind) -> type[Translator]`).
"""

from __future__ import annotations

from typing import Any

from ..errors import PlanError

#: kind name -> its `Translator` subclass, filled by `register_translator` as each kind's module is imported
_REGISTRY: dict[str, Any] = {}


def add_kind(name: str, cls: Any) -> None:
    """Register `cls` as kind `name` (setting its `kind`); a name registered twice is a ValueError."""
    if name in _REGISTRY:
        raise ValueError(f"translator kind {name!r} is already registered")
    cls.kind = name
    _REGISTRY[name] = cls


def kind_names() -> list[str]:
    """Names of the registered kinds, sorted (a parametrized one bare: `lowrank`, written `lowrank:r`)."""
    return sorted(_REGISTRY)


def registered_kind(kind: str) -> tuple[Any, str | None]:
    """The class registered under the name of kind string `name` or `name:param`, and `param` (None if absent)."""
    name, colon, param = kind.partition(":")
    try:
        return _REGISTRY[name], (param if colon else None)
    except KeyError:
        raise PlanError(f"unknown translator kind {kind!r} (known: {', '.join(kind_names())})") from None


def kind_class(kind: str) -> Any:
    """The class of kind string `kind`, its parameter bound (`from_spec`); a `PlanError` names an unknown kind or a
    parameter its kind does not take."""
    cls, param = registered_kind(kind)
    return cls.from_spec(param)
