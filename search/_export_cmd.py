"""`toast-search export`: a plan of a run as a checkpoint, or a run's chosen model as a file other runtimes load.

    toast-search export RUN --plan "2→4:identity" [--out DIR]     # any plan of the run's space, with its head
    toast-search export PATH --format onnx [--out FILE]            # chosen/ (or a saved model folder) as ONNX

`--plan` rebuilds the run from its settings.json (the calibration and inputs come from the cache), fits the head
the run scored with on the plan's own features, scores it on the whole test split and writes it (default
RUN/export/<plan>/) with its scores in toast.json, never over an existing file or non-empty folder. ONNX files are
checked against PyTorch before they are kept.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

CHECKPOINT = "checkpoint"
FORMATS = (CHECKPOINT, "onnx")


def build_export_parser() -> argparse.ArgumentParser:
    from .cli import _Parser

    p = _Parser(
        prog="toast-search export",
        description="Export a plan of a run (--plan: rebuilt from the run's settings.json, with the head the run "
        "scored with, scored on the whole test split) as a checkpoint, or a run's chosen/ model (or a saved "
        "compressed model folder) as ONNX, checked against PyTorch on the run's own test samples (synthetic inputs "
        "for a folder outside a run). ONNX: dynamic batch axis (and sequence axis for text), checked with "
        "onnxruntime on CPU at two batch sizes; needs pip install 'toast-search[onnx]'.",
    )
    p.add_argument("path", type=Path, help="run directory (its chosen/ is exported) or saved compressed model folder")
    p.add_argument(
        "--plan",
        default=None,
        help="a plan of the run's space to export, e.g. '2→4:identity' or '0→2:linear,5→6:identity' "
        "(PATH must be a run directory)",
    )
    p.add_argument(
        "--format",
        default=CHECKPOINT,
        choices=FORMATS,
        help="checkpoint (the default; with --plan) or onnx (chosen/, or with --plan the plan's checkpoint as well)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with --plan: a new folder (default RUN/export/<plan>/); onnx: the file (default model.onnx in the "
        "model folder, RUN/chosen/)",
    )
    p.add_argument(
        "--opset", type=int, default=None, help="ONNX opset, 18 or later (default: the exporter's, see the output)"
    )
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from ._settings import SettingsError

    if args.plan is None and args.format == CHECKPOINT:
        raise SettingsError(
            f"nothing to export: give --plan to export a plan of the run {args.path} (its chosen/ is already a "
            "checkpoint), or --format onnx"
        )
    if args.opset is not None and args.format != "onnx":
        raise SettingsError("--opset needs --format onnx")
    from ._lock import run_directory_lock

    run = Path(args.path)
    run = run.parent if run.name == "chosen" and (run.parent / "settings.json").is_file() else run
    # a run directory is written by one process at a time: not exported into while its search runs
    lock = run_directory_lock(run, what="an export") if (run / "settings.json").is_file() else nullcontext()
    with lock:
        if args.plan is not None:
            return _export_plan(args)
        return _export_onnx(args.path, args.out, args.opset)


def _export_plan(args: argparse.Namespace) -> int:
    from ._export import export_run_plan

    export = export_run_plan(args.path, args.plan, args.out)
    record = export.record
    print(f"exported {record['plan']} -> {export.path}: {export.described}")
    scores = [
        f"{k} {record[k]:.4g}" for k in ("accuracy", "gflops", "params") if isinstance(record.get(k), (int, float))
    ]
    if scores:
        print(f"scores (toast.json): {', '.join(scores)}")
    for line in export.lines():
        print(line)
    if args.format == "onnx":
        return _export_onnx(export.path, None, args.opset)
    return 0


def _export_onnx(path: Path, out: Path | None, opset: int | None) -> int:
    from ._onnx import export_onnx

    report = export_onnx(path, out, opset=opset)
    axes = " and ".join(report.dynamic_axes) + (" axes" if len(report.dynamic_axes) > 1 else " axis")
    print(f"wrote {report.path} (opset {report.opset}; inputs {', '.join(report.input_names)}; dynamic {axes})")
    print(
        f"max abs difference {report.max_abs_diff:.3g} (onnxruntime {', '.join(report.providers)} vs PyTorch, "
        f"batches {' and '.join(map(str, report.batch_sizes))} of {report.inputs})"
    )
    return 0
