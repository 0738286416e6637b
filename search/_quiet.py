"""The console: how much toast-search says, and libraries' progress bars, notices and warnings kept off it.

Three levels (`--quiet`, the default, `--verbose`), held for the process as `logging` holds its levels:

- quiet: only the final report and errors (no notes, warnings or progress bars);
- normal: notes on stdout, warnings as one `warning: ...` line on stderr, progress bars on a terminal only;
- verbose: the libraries' own INFO logs too (Optuna's line per trial, transformers, datasets).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LEVELS",
    "console_warnings",
    "note",
    "one_line_warning",
    "quiet_libraries",
    "run_console",
    "set_verbosity",
    "show_progress",
    "verbosity",
]

LEVELS = ("quiet", "normal", "verbose")
_level = "normal"
#: Where toast's own modules live (`toast/search`, `toast/spaces`, … or the source tree): their warnings say no path.
_OWN = Path(__file__).resolve().parent.parent


def set_verbosity(level: str) -> None:
    """Set the console's level for this process: quiet, normal or verbose."""
    global _level
    if level not in LEVELS:
        raise ValueError(f"verbosity must be one of {', '.join(LEVELS)}, got {level!r}")
    _level = level


def verbosity() -> str:
    return _level


def note(line: str) -> None:
    """A line the run says on its way (a note, the demo's budget): on stdout, except when quiet."""
    if _level != "quiet":
        print(line, flush=True)


def show_progress(progress: bool | None) -> bool:
    """Whether to draw progress bars: `progress` when set (`--progress` / `--no-progress`), else only when stderr is
    a terminal (a piped or redirected log would get every redraw as text) and the console is not quiet."""
    if progress is not None:
        return progress
    return _level != "quiet" and _isatty(sys.stderr)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line: `warning: <message>` for toast's own, with the category and place for a library's
    (Python's default takes two lines and starts with the path). Nothing when quiet."""
    if _level == "quiet":
        return ""
    text = " ".join(str(message).split())
    try:
        own = Path(filename).resolve().is_relative_to(_OWN)
    except (OSError, ValueError, TypeError):
        own = False
    if own:
        return f"warning: {text}\n"
    return f"warning: {text} ({category.__name__}, {Path(filename).name}:{lineno})\n"


@contextmanager
def console_warnings() -> Iterator[None]:
    """Warnings shown while inside print as one line (`one_line_warning`); Python's format is restored after. A
    recording catcher (pytest's `warns`, `catch_warnings(record=True)`) still records them: only the format changes."""
    before = warnings.formatwarning
    warnings.formatwarning = one_line_warning
    try:
        yield
    finally:
        warnings.formatwarning = before


@contextmanager
def run_console() -> Iterator[None]:
    """Around `run_search` and the commands: Optuna's INFO line per trial and its traceback per failed trial off
    (ERROR: a failed trial's reason is in trials.csv; on with verbose), warnings as one line; both restored after,
    so a caller's own settings hold outside."""
    import optuna

    before = optuna.logging.get_verbosity()
    if _level != "verbose":
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with console_warnings():
            yield
    finally:
        optuna.logging.set_verbosity(before)


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the console for our own output: no per-file progress bars, notices or warnings from libraries
    (`verbose`: their INFO logs on, as `--verbose` asks)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    import optuna

    if verbose:
        transformers.utils.logging.set_verbosity_info()
        optuna.logging.set_verbosity(optuna.logging.INFO)
    else:
        transformers.utils.logging.set_verbosity_error()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*experimental.*")
    try:
        import datasets

        if verbose:
            datasets.utils.logging.set_verbosity_info()
        else:
            datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        import huggingface_hub.utils.logging as hub_logging

        (hub_logging.set_verbosity_info if verbose else hub_logging.set_verbosity_error)()
    except ImportError:
        pass
