"""`toast-search [options]`: search (or score `--plan`s, or `--dry-run`) with options generated from the settings."""

from __future__ import annotations

import argparse
from typing import Any

import toast

from .._settings import DATA_OPTIONS, SearchSettings, SettingsError, search_options
from ._parser import Parser, add_console_options, add_options

__all__ = ["build_search_parser", "cmd_search", "settings_from"]

DESCRIPTION = (
    "Search which spans of transformer blocks to replace with translators (identity, linear, ridge, lowrank, mlp, "
    "resmlp, folded), for the best accuracy at each cost. Writes trials.csv, front.json, pareto.png, similarity.png "
    "and chosen/ to --out. Re-running the same command resumes the study. Subcommands: 'toast-search analyze --help' "
    "(block similarity only), 'toast-search export --help' (another plan of a run as a checkpoint, or chosen/ as "
    "ONNX)."
)


def build_search_parser() -> argparse.ArgumentParser:
    """The search's parser: the data options, the console's, `--version`, every other setting, `--dry-run`."""
    options = search_options()
    p = Parser(prog="toast-search", description=DESCRIPTION)
    add_options(p, [options[k] for k in DATA_OPTIONS])
    add_console_options(p)
    p.add_argument(
        "--version", action="version", version=f"toast-search {toast.__version__}", help="print the version and exit"
    )
    add_options(p, [o for k, o in options.items() if k not in DATA_OPTIONS and k != "progress"])
    p.add_argument(
        "--dry-run", action="store_true", help="say what would run (space size, cache hit or miss, trials) and stop"
    )
    return p


def settings_from(args: argparse.Namespace) -> SearchSettings:
    """The settings of the parsed options (the demo's budget added when it applies: `with_demo_budget`)."""
    from .._demo import with_demo_budget, with_model_defaults

    if args.prompts is not None and args.head != "zero-shot":  # `--prompts full` would otherwise pass unnoticed
        raise SettingsError("`prompts` needs `head` zero-shot (the prompt templates of CLIP's class names)")
    values: dict[str, Any] = {}
    for key, o in search_options().items():
        value = getattr(args, o.dest)
        if isinstance(value, list):
            value = tuple(value)
        if key in ("dataset", "objectives") and value is None:  # not given: the model's (`with_model_defaults`)
            values[key] = None
            continue
        if value is None and o.cli_default is None and o.default is not None:
            continue  # not given: the setting's own default (`--prompts`)
        values[key] = value
    return SearchSettings.from_flat(**with_demo_budget(with_model_defaults(values)))


def cmd_search(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.dry_run:
        from .._dry_run import describe_run

        for line in describe_run(settings):
            print(line)
        return 0
    from .._run import run_search

    run_search(settings)
    return 0
