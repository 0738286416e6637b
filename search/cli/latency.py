"""`toast-search latency-table` and `toast-search measure`: latency on the deployment machine and runtime.

    toast-search latency-table --model dinov2-base --runtime onnxruntime --device cpu --out table.json
    toast-search --model dinov2-base --dataset cifar100 --latency-table table.json --budget-latency-ms 120
    toast-search measure RUN --runtime onnxruntime --device cpu

The first measures the model's latency table where it runs and writes it as a portable file; a search on any machine
estimates latency from it (`--latency-table`); `measure` times a finished run's original, front and chosen model end to
end on the deployment machine and writes the times into the run's front.json (`toast.search._deploy_latency`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .._settings import DTYPES, LATENCY_MODES, RUNTIMES, UPPER_LIMITS
from ._parser import Parser, add_console_options

if TYPE_CHECKING:
    from toast.objectives import LatencyTable

__all__ = ["build_latency_table_parser", "build_measure_parser", "cmd_latency_table", "cmd_measure"]

RUNTIME_HELP = (
    "what runs the model: eager (PyTorch), compile (torch.compile), onnxruntime (the exported graph; CPU execution "
    "provider on cpu, CUDA's on cuda), onnxruntime-tensorrt (default: eager)"
)


def _count(what: str, most: int):
    """An argparse type: a whole number from 1 to `most`, else a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if not 1 <= value <= most:
            raise argparse.ArgumentTypeError(f"{what} must be from 1 to {most}, got {value}")
        return value

    return parse


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a budget in milliseconds must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a budget in milliseconds must be a positive finite number, got {text!r}")
    return value


def _runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="eager", choices=RUNTIMES, help=RUNTIME_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto = cuda when available)")
    p.add_argument("--threads", type=_count("--threads", 1024), default=None, help="CPU threads (default: torch's)")


def build_latency_table_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="toast-search latency-table",
        description="Measure a model's latency table on this machine, in one runtime, and write it as a file that "
        "a search on any machine estimates latency from (toast-search --latency-table FILE). Whole models are timed "
        "end to end in the runtime (the original, half the blocks removed, each translator kind in place of every "
        "other block) and the parts solved from them: the fixed part, a block, a span of each kind. The file names "
        "the model's architecture fingerprint, the runtime and its versions, the device, threads, dtype and batch "
        "shape; a search with another architecture or shape refuses it.",
    )
    p.add_argument("--model", required=True, help="alias, Hugging Face id or local model directory")
    p.add_argument(
        "--out", type=Path, required=True, help="the table's file (.json); a latency table there is replaced"
    )
    _runtime_options(p)
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="model dtype (default: float32)")
    p.add_argument(
        "--batch-size",
        type=_count("--batch-size", UPPER_LIMITS["latency_batch_size"]),
        default=1,
        help="inputs per timed batch: search with the same --latency-batch-size (default: 1)",
    )
    p.add_argument(
        "--seq-len",
        type=_count("--seq-len", UPPER_LIMITS["latency_seq_len"]),
        default=128,
        help="text: tokens per input; search with the same --latency-seq-len (default: 128)",
    )
    p.add_argument(
        "--mode",
        default="prefill",
        choices=LATENCY_MODES,
        help="causal LMs: a forward over whole sequences (prefill) or one decoding step after --seq-len cached "
        "tokens (decode); search with the same --latency-mode (default: prefill)",
    )
    p.add_argument(
        "--translators",
        default="identity,linear",
        help="translator kinds to time, comma-separated, as the search's --translators (default: identity,linear)",
    )
    p.add_argument("--ranks", default=None, help="a bare lowrank's ranks, as the search's --ranks (default: its own)")
    p.add_argument("--repeats", type=_count("--repeats", 1000), default=None, help="timed rounds per model")
    add_console_options(p)
    return p


def build_measure_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="toast-search measure",
        description="Time a finished run's original, every front plan and its chosen/ model end to end on this "
        "machine in one runtime, on the run's latency batch; write the times into the run's front.json "
        "(latency_measured, runtime and device named) and say whether the chosen plan meets the latency budget as "
        "measured here, with the next best front plan that does.",
    )
    p.add_argument("path", type=Path, help="the run directory (the --out of a toast-search run)")
    _runtime_options(p)
    p.add_argument("--dtype", default=None, choices=DTYPES, help="model dtype (default: the run's)")
    p.add_argument(
        "--budget-latency-ms",
        type=_milliseconds,
        default=None,
        help="the latency budget to check, ms per batch (default: the run's --budget-latency-ms, if any)",
    )
    p.add_argument("--repeats", type=_count("--repeats", 1000), default=10, help="timed rounds per model (default: 10)")
    add_console_options(p)
    return p


def _threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def cmd_latency_table(args: argparse.Namespace) -> int:
    from .._deploy_latency import make_latency_table
    from .._latency import unsteady

    _threads(args)
    table, path, notes = make_latency_table(
        args.model,
        out=args.out,
        runtime=args.runtime,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        mode=args.mode,
        translators=tuple(k.strip() for k in args.translators.split(",") if k.strip()),
        ranks=tuple(r.strip() for r in args.ranks.split(",") if r.strip()) if args.ranks else None,
        repeats=args.repeats,
    )
    for note in notes:
        print(note)
    print(f"wrote {path}: {table.describe()}")
    kinds = ", ".join(f"{k} {v:.4g}" for k, v in table.translators_ms.items())
    print(
        f"ms per batch: fixed part {table.embed_ms:.4g}, {_blocks(table)}, a span of {kinds}; "
        f"original {table.original_ms:.4g}; margin {table.margin:.1%} (its check plans ran up to that much slower "
        f"than estimated: a latency budget holds estimates to budget / (1 + margin))"
    )
    line = unsteady(table.drift)
    if line:
        print(f"warning: {line}")
    print(f"search against it: toast-search --model {args.model} … --latency-table {path} --budget-latency-ms MS")
    return 0


def _blocks(table: LatencyTable) -> str:
    """The kept blocks' milliseconds in a few words: by how many are kept where the table has them so."""
    if not table.kept_ms:
        return f"a block {table.blocks_ms[0]:.4g}"
    L = table.num_blocks
    counts = sorted({1, L // 2, L})
    out = "kept blocks " + ", ".join(f"{k}: {table.kept_ms[k]:.4g}" for k in counts)
    costs = dict.fromkeys(round(b, 6) for b in table.blocks_ms)
    if len(costs) > 1:  # blocks of several classes (attention kinds)
        out += " (a block in the original: " + ", ".join(f"{b:.4g}" for b in costs) + ")"
    return out


def cmd_measure(args: argparse.Namespace) -> int:
    from .._deploy_latency import measure_run

    _threads(args)
    result = measure_run(
        args.path,
        runtime=args.runtime,
        device=args.device,
        dtype=args.dtype,
        budget_ms=args.budget_latency_ms,
        repeats=args.repeats,
    )
    for line in result.lines:
        print(line)
    print(f"wrote the times into {args.path / 'front.json'} (latency_measured)")
    return 0
