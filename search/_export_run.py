"""`export_run`: a plan of a run as a checkpoint (rebuilt from its settings.json, scored on the whole test split),
or a run's chosen model (or a saved compressed model folder) as ONNX checked against PyTorch. The run directory's
lock is held throughout: never written into while its search runs."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toast.errors import SettingsError

__all__ = ["CHECKPOINT", "FORMATS", "RunExport", "export_run"]

CHECKPOINT = "checkpoint"
FORMATS = (CHECKPOINT, "onnx")


@dataclass(frozen=True)
class RunExport:
    """What `export_run` wrote: the plan's checkpoint (an `Export`, with `--plan`) and the ONNX file (an
    `OnnxReport`, with format onnx)."""

    plan: Any = None
    onnx: Any = None


def export_run(
    path: str | Path,
    *,
    plan: str | None = None,
    format: str = CHECKPOINT,  # noqa: A002 (the command's option)
    out: Path | None = None,
    opset: int | None = None,
    exported: Callable[[Any], None] | None = None,
) -> RunExport:
    """Export `plan` of the run at `path` as a checkpoint (default folder RUN/export/<plan>/, or `out`), and with
    `format` onnx the checkpoint (or, without `plan`, the run's chosen/ or the saved model folder `path`) as ONNX
    (`out`: the file when there is no plan). `exported(export)` is called once the plan's checkpoint is written, before
    its ONNX export starts (the CLI reports it then)."""
    if plan is None and format == CHECKPOINT:
        raise SettingsError(
            f"nothing to export: give --plan to export a plan of the run {path} (its chosen/ is already a "
            "checkpoint), or --format onnx"
        )
    if opset is not None and format != "onnx":
        raise SettingsError("--opset needs --format onnx")
    from ._export import export_run_plan
    from ._lock import run_directory_lock
    from ._onnx import export_onnx

    run = Path(path)
    run = run.parent if run.name == "chosen" and (run.parent / "settings.json").is_file() else run
    # a run directory is written by one process at a time: not exported into while its search runs
    lock = run_directory_lock(run, what="an export") if (run / "settings.json").is_file() else nullcontext()
    with lock:
        if plan is None:
            return RunExport(onnx=export_onnx(Path(path), out, opset=opset))
        export = export_run_plan(Path(path), plan, out)
        if exported is not None:
            exported(export)
        onnx = export_onnx(export.path, None, opset=opset) if format == "onnx" else None
        return RunExport(plan=export, onnx=onnx)
