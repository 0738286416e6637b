"""`toast-search export PATH --format onnx`: a run's chosen model (or any saved compressed model) as a file
other runtimes load, checked against PyTorch before it is kept."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("onnx",)


def build_export_parser() -> argparse.ArgumentParser:
    from .cli import _Parser

    p = _Parser(
        prog="toast-search export",
        description="Export a run's chosen/ model (or a saved compressed model folder) and check the file against "
        "PyTorch on the run's own test samples (synthetic inputs for a folder outside a run). ONNX: dynamic batch "
        "axis (and sequence axis for text), checked with onnxruntime on CPU at two batch sizes; needs "
        "pip install 'toast-search[onnx]'.",
    )
    p.add_argument("path", type=Path, help="run directory (its chosen/ is exported) or saved compressed model folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write: onnx")
    p.add_argument(
        "--out", type=Path, default=None, help="file to write (default: model.onnx in the model folder, RUN/chosen/)"
    )
    p.add_argument(
        "--opset", type=int, default=None, help="ONNX opset, 18 or later (default: the exporter's, see the output)"
    )
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from ._onnx import export_onnx

    report = export_onnx(args.path, args.out, opset=args.opset)
    axes = " and ".join(report.dynamic_axes) + (" axes" if len(report.dynamic_axes) > 1 else " axis")
    print(f"wrote {report.path} (opset {report.opset}; inputs {', '.join(report.input_names)}; dynamic {axes})")
    print(
        f"max abs difference {report.max_abs_diff:.3g} (onnxruntime {', '.join(report.providers)} vs PyTorch, "
        f"batches {' and '.join(map(str, report.batch_sizes))} of {report.inputs})"
    )
    return 0
