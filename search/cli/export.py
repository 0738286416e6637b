"""`toast-search export`: a plan of a run as a checkpoint, or a run's chosen model as a file other runtimes load.

    toast-search export RUN --plan "2→4:identity" [--out DIR]     # any plan of the run's space, with its head
    toast-search export PATH --format onnx [--out FILE]            # chosen/ (or a saved model folder) as ONNX

`--plan` rebuilds the run from its settings.json (the calibration and inputs come from the cache), fits the head
the run scored with on the plan's own features, scores it on the whole test split and writes it (default
RUN/export/<plan>/) with its scores in toast.json, never over an existing file or non-empty folder. ONNX files are
checked against PyTorch before they are kept (`toast.search.export_run`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._export_run import CHECKPOINT, FORMATS
from ._parser import Parser

__all__ = ["build_export_parser", "cmd_export"]


def build_export_parser() -> argparse.ArgumentParser:
    p = Parser(
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
    from .._export_run import export_run
    from .._onnx import STEP_CHECKS

    result = export_run(
        args.path, plan=args.plan, format=args.format, out=args.out, opset=args.opset, exported=_print_plan
    )
    if result.onnx is not None:
        report = result.onnx
        axes = " and ".join(report.dynamic_axes) + (" axes" if len(report.dynamic_axes) > 1 else " axis")
        print(f"wrote {report.path} (opset {report.opset}; inputs {', '.join(report.input_names)}; dynamic {axes})")
        print(
            f"max abs difference {report.max_abs_diff:.3g} (onnxruntime {', '.join(report.providers)} vs PyTorch, "
            f"batches {' and '.join(map(str, report.batch_sizes))} of {report.inputs})"
        )
        if report.step_path is not None:
            print(
                f"wrote {report.step_path} (the decoding step: input_ids and past_key_values.<layer>.key/value in, "
                f"logits and present.<layer>.key/value out; an empty past is the prefill); max abs difference "
                f"{report.step_max_abs_diff:.3g} over a prefill and {STEP_CHECKS} greedy steps"
            )
        if report.step_note:
            print(f"note: {report.step_note}")
    return 0


def _print_plan(export) -> None:
    """The plan's checkpoint: where, what, its scores."""
    record = export.record
    print(f"exported {record['plan']} -> {export.path}: {export.described}")
    scores = [
        f"{k} {record[k]:.4g}" for k in ("accuracy", "gflops", "params") if isinstance(record.get(k), (int, float))
    ]
    if scores:
        print(f"scores (toast.json): {', '.join(scores)}")
    for line in export.lines():
        print(line)
