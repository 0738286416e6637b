"""What every `toast-search` command shares: the parser whose usage error is one line, options generated from the
settings' field metadata, the console options, and library errors said with the command's flags."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence

from .._options import Option
from .._settings import search_options

__all__ = ["Parser", "add_console_options", "add_options", "as_flags", "flag_of", "join_plan_values"]

ACTIONS = {"BooleanOptionalAction": argparse.BooleanOptionalAction}


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (what is wrong, and where to look) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"toast-search: error: {message} (see {self.prog} --help)\n")


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option], *, required: Sequence[str] = ()) -> None:
    """One argument per settings option (`required`: the keys the command must be given, shown with no default)."""
    for o in options:
        o = o if not isinstance(o.action, str) else _with_action(o)
        flags, kwargs = o.argument(required=o.key in required)
        parser.add_argument(*flags, **kwargs)


def _with_action(o: Option) -> Option:
    from dataclasses import replace

    return replace(o, action=ACTIONS.get(o.action, o.action))


def add_console_options(parser: argparse.ArgumentParser) -> None:
    """How much the command says: progress bars, --quiet, --verbose."""
    add_options(parser, [search_options()["progress"]])
    said = parser.add_mutually_exclusive_group()
    said.add_argument(
        "--quiet", "-q", action="store_true", help="print only the final report and errors: no notes, no progress bars"
    )
    said.add_argument(
        "--verbose", "-v", action="store_true", help="also the libraries' INFO logs (Optuna's line per trial, …)"
    )


#: names errors use that are no settings key, with their flag (a `PlanSpace`'s kinds are the search's translators)
OTHER_FLAGS = {"samples": "--calib-samples", "split": "--split", "kinds": "--translators"}


def flag_of(key: str, flags: dict[str, str] | None = None) -> str:
    """The command-line flag of a setting (`calib_samples` -> `--calib-samples`, `plans` -> `--plan`)."""
    known = {k: o.flag for k, o in search_options().items()}
    return {**known, **OTHER_FLAGS, **(flags or {})}.get(key, "--" + key.replace("_", "-"))


def as_flags(message: str, flags: dict[str, str] | None = None) -> str:
    """A library error as the CLI says it: each `field` of the settings named by its flag (`flags`: a
    subcommand's own names)."""
    from .._settings import flat_defaults

    names = set(flat_defaults()) | set(search_options()) | set(OTHER_FLAGS)
    shown = re.sub(r"`(\w+)`", lambda m: flag_of(m.group(1), flags) if m.group(1) in names else m.group(0), message)
    return re.sub(r"(--[\w-]+) / \1\b", r"\1", shown)  # two fields, one flag (analyze's --split)


#: A value that starts like a span from the embeddings (`-1->0:linear`, `-1→3`): argparse would read it as an option.
_PLAN_FROM_EMBEDDINGS = re.compile(r"\s*-\d+\s*(?:->|→)")


def join_plan_values(argv: Sequence[str]) -> list[str]:
    """`--plan -1->0:linear` as the papers write it: glue such values to their flag (`--plan=-1->0:linear`)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--plan" and i + 1 < len(argv) and _PLAN_FROM_EMBEDDINGS.match(argv[i + 1]):
            out.append(f"--plan={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out
