"""`toast-search`: the command line. Thin: parse, call one function per command, map errors to exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from toast.spaces import ToastError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="alias (e.g. dinov2-base), Hugging Face id, or local model directory")
    parser.add_argument("--dataset", required=True, help="local datasets folder (save_to_disk) with an image or text column and a label column")
    parser.add_argument("--split", default="train", help="split the calibration samples are drawn from (default: train)")
    parser.add_argument("--input-column", default=None, help="column holding images or text (default: guessed)")
    parser.add_argument("--label-column", default=None, help="column holding labels (default: guessed)")
    parser.add_argument("--calib-samples", type=int, default=500, help="calibration samples, drawn at random (seeded) (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the sample draw (default: 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the capture pass (default: 32)")
    parser.add_argument("--activation-dtype", default="float16", choices=["float16", "bfloat16", "float32"], help="dtype of the cached activation shards (default: float16)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="activation cache root (default: $TOAST_CACHE_DIR or ~/.cache/toast-search)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toast-search", description="Compress a pretrained transformer by replacing spans of blocks with closed-form translators.")
    sub = parser.add_subparsers(dest="command", required=True)
    analyze = sub.add_parser("analyze", help="block-by-block similarity of the original model (CKA, [CLS] cosine, Block Redundancy)",
                             description="Capture the activations of N calibration samples (cached) and write DIR/similarity.json and DIR/similarity.png.")
    _common(analyze)
    analyze.add_argument("--out", type=Path, required=True, help="output directory")
    return parser


def cmd_analyze(args: argparse.Namespace) -> int:
    from toast.objectives import SimilarityReport, plot_similarity

    from ._cache import ActivationCache
    from ._calibration import CalibrationSettings, calibrate, resolve_device
    from ._data import load_split
    from ._models import load_model

    device = resolve_device(args.device)
    split = load_split(args.dataset, args.split, input_column=args.input_column, label_column=args.label_column)
    loaded = load_model(args.model, device=device)
    settings = CalibrationSettings(samples=args.calib_samples, seed=args.seed, batch_size=args.batch_size, activation_dtype=args.activation_dtype)
    captured = calibrate(loaded, split, settings, ActivationCache(args.cache_dir), progress=not args.no_progress)
    report = SimilarityReport.from_stats(captured.stats)
    args.out.mkdir(parents=True, exist_ok=True)
    report.save(args.out / "similarity.json")
    plot_similarity(report, args.out / "similarity.png", title=f"{args.model} on {Path(args.dataset).name}")
    br = report.block_redundancy
    order = sorted(range(1, len(br)), key=lambda k: -br[k])
    print(f"{captured.stats.num_samples} samples, {captured.stats.n} tokens; cache {captured.directory}")
    print("most redundant blocks (Block Redundancy, higher = the block changes its input less):")
    for k in order[:5]:
        print(f"  block {k - 1:>3}  (h_{k - 1} → h_{k})  BR = {br[k]:.4g}")
    print(f"wrote {args.out / 'similarity.json'} and {args.out / 'similarity.png'}")
    return 0


COMMANDS = {"analyze": cmd_analyze}


def _quiet_libraries() -> None:
    """Keep stdout for our own output: no per-file progress bars or backend notices from transformers."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except ToastError as exc:
        print(f"toast-search: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("toast-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
