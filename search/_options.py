"""Settings fields that are also command-line options: the metadata convention, and the options it gives.

A settings field declares its option once, in `dataclasses.field(metadata=...)` (the convention the runners'
options classes share):

    probe: str = field(default="ridge", metadata={"help": "... (default: {default})", "choices": PROBES})

`help` (required for an option; `{default}` is replaced by the default as the command line writes it), `choices`,
`flag` (default `--` + the name with dashes), `metavar`, `type` (the parser of the text; default from the field's
annotation: int, float, Path, a comma-separated tuple, else the text), `action` (argparse's), `cli_default` (where
the command line's default differs from the field's: None to tell `--prompts full` from no `--prompts`),
`key` (the field's name in `settings.json` and error messages, default the field's name). `options_of(cls)` turns a
dataclass's fields into `Option`s the CLI adds to its parser: no default, choice list or help is written twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NO_DEFAULT", "Option", "csv_tuple", "default_text", "option", "options_of"]

NO_DEFAULT: Any = dataclasses.MISSING  # a required setting (`model`, `dataset`)


def csv_tuple(text: str) -> tuple[str, ...]:
    """`a, b,c` as ("a", "b", "c"): how the command line writes a list."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def default_text(value: Any) -> str:
    """A default as `--help` writes it: a list comma-separated, the rest as `str`."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


@dataclass(frozen=True, kw_only=True)
class Option:
    """One command-line option of a settings field: `key` names the field (settings.json's key), `default` is the
    field's default, `cli_default` the parser's (the same unless the field says otherwise)."""

    key: str
    flag: str
    help: str
    default: Any = None
    cli_default: Any = None
    choices: tuple[Any, ...] | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    action: Any = None
    section: str = ""  # the `SearchSettings` section holding the field ("" for a run-wide field)

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value in (the flag without dashes)."""
        return self.flag.lstrip("-").replace("-", "_")

    def argument(self, *, required: bool = False) -> tuple[tuple[str, ...], dict[str, Any]]:
        """`add_argument`'s arguments: `required` for a subcommand's mandatory option (no default shown then)."""
        default = None if required else self.cli_default
        kwargs: dict[str, Any] = {"default": default, "help": self.help.format(default=default_text(default))}
        if required:
            kwargs["required"] = True
        for name in ("choices", "type", "metavar", "action"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = list(value) if name == "choices" else value
        if self.action is not None:
            kwargs.pop("type", None)
        return (self.flag,), kwargs


def option(default: Any = NO_DEFAULT, *, help: str, default_factory: Any = NO_DEFAULT, **meta: Any) -> Any:  # noqa: A002 (argparse's name)
    """A settings field that is a command-line option (`dataclasses.field` with the metadata `options_of` reads)."""
    kwargs: dict[str, Any] = {"metadata": {"help": help, **meta}}
    if default is not NO_DEFAULT:
        kwargs["default"] = default
    if default_factory is not NO_DEFAULT:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def _parser(annotation: str) -> Callable[[str], Any] | None:
    """The parser of a field's command-line text, from its annotation (a string: postponed annotations)."""
    base = annotation.replace(" | None", "").strip()
    if base.startswith("tuple["):
        return csv_tuple
    return {"int": int, "float": float, "Path": Path}.get(base)


def options_of(cls: type, *, section: str = "") -> Iterator[Option]:
    """The options of a dataclass's fields that carry a `help` (in field order; none for a class of no fields)."""
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
        meta = f.metadata
        if "help" not in meta:
            continue
        key = meta.get("key", f.name)
        default = None if f.default is dataclasses.MISSING else f.default
        yield Option(
            key=key,
            flag=meta.get("flag", "--" + key.replace("_", "-")),
            help=meta["help"],
            default=default,
            cli_default=meta.get("cli_default", default),
            choices=tuple(meta["choices"]) if "choices" in meta else None,
            type=meta.get("type", _parser(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))),
            metavar=meta.get("metavar"),
            action=meta.get("action"),
            section=section,
        )
