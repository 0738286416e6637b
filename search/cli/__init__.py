"""`toast-search`: the command line. Thin: parse, call one library function per command, map errors to exit 2.

toast-search --model dinov2-base --dataset cifar100 --budget-gflops 15     # search (`search.py`)
toast-search --model deit-small --dataset cifar10 --plan "9→11:linear"     # score given plans
toast-search analyze --model M --dataset D --out DIR                       # similarity only (`analyze.py`)
toast-search export RUN_DIR --format onnx                                  # chosen/ as model.onnx (`export.py`)
toast-search latency-table --model M --runtime R --out table.json          # latency where it deploys (`latency.py`)
toast-search measure RUN_DIR --runtime R                                   # the front timed where it deploys

Every option of a setting is generated from the settings' field metadata (`toast.search._options`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from toast.errors import DISK_ERRORS, ToastError

from .._quiet import quiet_libraries, run_console, set_verbosity, verbosity
from ._parser import as_flags, flag_of, join_plan_values
from .analyze import build_analyze_parser, cmd_analyze
from .export import build_export_parser, cmd_export
from .latency import build_latency_table_parser, build_measure_parser, cmd_latency_table, cmd_measure
from .search import build_search_parser, cmd_search, settings_from

__all__ = [
    "as_flags",
    "build_analyze_parser",
    "build_export_parser",
    "build_latency_table_parser",
    "build_measure_parser",
    "build_search_parser",
    "flag_of",
    "join_plan_values",
    "main",
    "settings_from",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (2: a usage or library error, said in one line; 130: interrupted)."""
    argv = join_plan_values(list(sys.argv[1:] if argv is None else argv))
    flags = None
    if argv[:1] == ["analyze"]:
        from .analyze import FLAGS

        args, command, flags = build_analyze_parser().parse_args(argv[1:]), cmd_analyze, FLAGS
    elif argv[:1] == ["export"]:
        args, command = build_export_parser().parse_args(argv[1:]), cmd_export
    elif argv[:1] == ["latency-table"]:
        args, command = build_latency_table_parser().parse_args(argv[1:]), cmd_latency_table
    elif argv[:1] == ["measure"]:
        args, command = build_measure_parser().parse_args(argv[1:]), cmd_measure
    else:
        args, command = build_search_parser().parse_args(argv), cmd_search
    level = "quiet" if getattr(args, "quiet", False) else "verbose" if getattr(args, "verbose", False) else "normal"
    before = verbosity()
    set_verbosity(level)
    quiet_libraries(verbose=level == "verbose")
    try:
        with run_console():
            return command(args)
    except ToastError as exc:
        print(f"toast-search: error: {as_flags(str(exc), flags)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(
            f"toast-search: error: {exc.strerror or exc}{where}: free some space (or fix the disk) and re-run the same "
            "command: finished trials and complete cache entries are kept, and nothing half-written is ever read",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "toast-search: interrupted; finished trials are kept in the run directory: re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        set_verbosity(before)  # `main` called in a process that goes on (tests, notebooks)
