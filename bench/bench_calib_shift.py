"""Translators fitted on shifted data (`--calib-dataset`), scored on the original data.

    python bench/bench_calib_shift.py                       # demo-vit on digits, 500 calibration samples
    python bench/bench_calib_shift.py --calib-samples 200 --plans "2->4:linear,1->4:linear"
    python bench/bench_calib_shift.py --model all-minilm-l6-v2 --calib-samples 400   # docstrings, by package group

Builds shifted copies of `digits` with the same splits and labels (`inverted`: 255 - x, the papers' 16 - x on
digits' 0…16 scale; `rotated`: turned 90°; `flipped`: mirrored left to right) and, for each calibration source,
fits the `linear` translators of a few plans on its training split while the probe and the evaluation use
`digits` (`SearchContext` with `calib_dataset`: the search's own trial function). Prints, per plan and source,
the fidelity to the original model on digits' test split (linear CKA and mean cosine of the pooled features)
and the probe accuracy, beside same-dataset fitting (`digits` itself) and the same blocks skipped with no
translator (`identity`, nothing fitted). The probe is fitted on digits' compressed features in every row.

With a text model (`--model all-minilm-l6-v2`), the offline `docstrings` are split by package into two groups
(numpy, torch, sklearn / matplotlib, datasets, ray): probe and evaluation use the second group, and the translators
are fitted on its own training texts ("same packages") or on the first group's ("other packages").
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SHIFTS = ("inverted", "rotated", "flipped")
DEFAULT_PLANS = ("2->4:linear", "1->4:linear", "3->5:linear", "0->3:linear", "1->3:linear,3->5:linear")


def shifted_digits(kind: str, root: Path) -> Path:
    """`digits` with every image shifted, saved with `save_to_disk` (train and test splits as `digits` has them)."""
    import datasets
    from PIL import Image, ImageOps

    from toast.data import DIGITS, load_split

    def shift(image: Image.Image) -> Image.Image:
        if kind == "inverted":
            return ImageOps.invert(image.convert("L"))
        if kind == "rotated":
            return image.rotate(90)
        return ImageOps.mirror(image)

    path = root / f"digits-{kind}"
    splits = {}
    for split in ("train", "test"):
        data = load_split(DIGITS, split).dataset
        splits[split] = data.map(lambda row: {"image": shift(row["image"])}, features=data.features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def package_groups(root: Path) -> tuple[Path, Path]:
    """`docstrings` split by package: (the scored group, the other group), each saved with `save_to_disk`, its
    train and test splits, and labels renumbered within the group."""
    import datasets

    from toast.data import load_split

    names = load_split("docstrings", "train").dataset.features["label"].names
    half = len(names) // 2
    out = []
    for group in (names[half:], names[:half]):
        keep = [names.index(n) for n in group]
        features = datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(group))}
        )
        splits = {}
        for split in ("train", "test"):
            data = load_split("docstrings", split).dataset.filter(lambda row, keep=keep: row["label"] in keep)
            splits[split] = datasets.Dataset.from_dict(
                {"text": data["text"], "label": [keep.index(y) for y in data["label"]]}, features=features
            )
        path = root / f"docstrings-{'-'.join(group)}"
        datasets.DatasetDict(splits).save_to_disk(str(path))
        out.append(path)
    return out[0], out[1]


TEXT_PLANS = ("1->2:linear", "3->4:linear", "0->2:linear", "2->4:linear", "1->2:linear,3->4:linear")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo-vit")
    p.add_argument("--calib-samples", type=int, default=500)
    p.add_argument("--probe-samples", type=int, default=5000)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--plans", default=None, help="plans separated by ';' (spans by ','; default: a few per modality)")
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from toast.search._context import SearchContext
    from toast.search._settings import SearchSettings
    from toast.spaces import Plan

    text = "minilm" in args.model.lower() or "bert" in args.model.lower()
    plans_text = [t.strip() for t in (args.plans or ";".join(TEXT_PLANS if text else DEFAULT_PLANS)).split(";")]
    plans_text = [t for t in plans_text if t]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if text:
            scored, other = package_groups(root)
            dataset, sources = str(scored), {"same packages": None, "other packages": str(other)}
        else:
            dataset, sources = "digits", {"digits (same)": None}
            for kind in args.shifts.split(","):
                sources[f"{kind} digits"] = str(shifted_digits(kind, root))
        rows, baseline = [], None
        for label, calib in sources.items():
            start = time.perf_counter()
            settings = SearchSettings.from_flat(
                model=args.model,
                dataset=dataset,
                out=root / "run",
                objectives=("accuracy", "fidelity", "gflops"),
                calib_samples=args.calib_samples,
                probe_samples=args.probe_samples,
                eval_samples=args.eval_samples,
                calib_dataset=calib,
                device=args.device,
                cache_dir=root / "cache",
                progress=False,
            )
            ctx = SearchContext.build(settings, progress=False)
            baseline = baseline or ctx.baseline
            for text in plans_text:
                plan = Plan.parse(text, ctx.loaded.num_blocks)
                r = ctx.evaluate(plan)
                rows.append((str(plan), label, r["fidelity"], r["cosine"], r["accuracy"]))
                if calib is None:  # the floor: the same blocks skipped with no translator (nothing fitted)
                    bare = Plan.parse(text.replace(":linear", ":identity"), ctx.loaded.num_blocks)
                    r = ctx.evaluate(bare)
                    rows.append((str(plan), "nothing (identity)", r["fidelity"], r["cosine"], r["accuracy"]))
            print(f"# {label}: fitted and scored in {time.perf_counter() - start:.1f} s", flush=True)
    width = max(len(r[0]) for r in rows)
    print(
        f"\n{args.model} on {Path(dataset).name} (probe and evaluation), {args.calib_samples} calibration samples; original accuracy "
        f"{baseline['accuracy']:.2f} %\n"
    )
    print(f"| {'plan':<{width}} | translators fitted on | CKA | cosine | accuracy % | Δ accuracy vs same |")
    print(f"|{'-' * (width + 2)}|---|---|---|---|---|")
    by_plan: dict[str, list[tuple]] = {}
    for row in rows:
        by_plan.setdefault(row[0], []).append(row)
    for plan, group in by_plan.items():
        same = group[0][4]  # the first source is the scored dataset itself
        for _, label, cka, cos, acc in group:
            print(f"| {plan:<{width}} | {label} | {cka:.4f} | {cos:.4f} | {acc:.2f} | {acc - same:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
