"""Build the docstring dataset: first paragraphs of installed packages' public docstrings, labeled by package.

    python scripts/build_docstring_dataset.py data/docstrings
    python scripts/build_docstring_dataset.py data/docstrings --packages numpy,torch,sklearn --per-class 300
    toast-search --model PATH/all-MiniLM-L6-v2 --dataset data/docstrings

Writes a `datasets` `save_to_disk` folder (`train` and `test` splits: `text`, `label`, `source`) and
`docstrings.json` (settings, package versions, class counts, fingerprint). Re-running with the same
settings and package versions reuses the folder. See `toast.data`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from toast.data import DEFAULT_PACKAGES, build_docstring_dataset, read_info
from toast.spaces import ToastError


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_docstring_dataset", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write (a datasets save_to_disk DatasetDict)")
    p.add_argument(
        "--packages",
        type=_csv,
        default=DEFAULT_PACKAGES,
        help=f"import names of the packages (the classes), comma-separated (default: {','.join(DEFAULT_PACKAGES)})",
    )
    p.add_argument("--per-class", type=int, default=200, help="texts per package, before the split (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the selection and of the split (default: 0)")
    p.add_argument(
        "--test-fraction", type=float, default=0.3, help="share of each class in the test split (default: 0.3)"
    )
    p.add_argument("--min-chars", type=int, default=40, help="shortest first paragraph kept (default: 40)")
    p.add_argument("--max-chars", type=int, default=400, help="longest first paragraph kept (default: 400)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder built with other settings")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        path = build_docstring_dataset(
            args.out,
            packages=args.packages,
            per_class=args.per_class,
            seed=args.seed,
            test_fraction=args.test_fraction,
            min_chars=args.min_chars,
            max_chars=args.max_chars,
            overwrite=args.overwrite,
        )
    except ToastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = read_info(path)
    print(f"{path}  ({info['fingerprint']}, {time.perf_counter() - start:.1f} s)")
    for split, counts in info["counts"].items():
        print(f"  {split}: {sum(counts.values())} texts, " + ", ".join(f"{p} {n}" for p, n in counts.items()))
    print("  versions: " + ", ".join(f"{p} {v}" for p, v in info["versions"].items()))
    short = [p for p, n in info["available"].items() if n < args.per_class]
    if short:
        print(f"  note: fewer than {args.per_class} usable docstrings in {', '.join(short)}: classes are unbalanced")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
