"""`toast-search analyze`: the block similarity of a model on a dataset, without a search (`toast.search.analyze`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._settings import DATA_OPTIONS, search_options
from ._parser import Parser, add_console_options, add_options

__all__ = ["FLAGS", "build_analyze_parser", "cmd_analyze"]

#: `toast-search analyze` reads the calibration split from `--split` (its settings' `split_train`).
FLAGS = {"split_train": "--split", "split_test": "--split"}


def build_analyze_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="toast-search analyze",
        description="Capture the activations of N calibration samples (cached) and write DIR/similarity.json "
        "(CKA, [CLS] cosine, Block Redundancy, indexed by hidden state) and DIR/similarity.png.",
    )
    options = search_options()
    add_options(p, [options[k] for k in DATA_OPTIONS], required=("model", "dataset"))
    add_console_options(p)
    p.add_argument(
        "--split",
        default=None,
        help="split the calibration samples are drawn from (default: the dataset's train split)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    return p


def cmd_analyze(args: argparse.Namespace) -> int:
    from .._analyze import analyze, check_analysis_folder
    from .._settings import SearchSettings

    check_analysis_folder(args.out)  # before the options' own checks, as always
    values = {k: getattr(args, k) for k in (*DATA_OPTIONS, "progress")}
    settings = SearchSettings.from_flat(**values, split_train=args.split, out=args.out)
    for line in analyze(settings).lines():
        print(line)
    return 0
