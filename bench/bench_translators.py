"""Every translator kind on every single-block span and a few multi-span plans, on real weights.

    python bench/bench_translators.py --model demo-vit --dataset digits
    python bench/bench_translators.py --model all-minilm-l6-v2 --dataset docstrings --probe-samples 1200 --eval-samples 600

For each plan and kind (identity, linear, ridge, three ranks of lowrank, mlp, resmlp, and every other
registered kind that applies to the model), through the search's own trial function
(`SearchContext.evaluate`): held-out fidelity of the compressed model's pooled features to the
original's (mean cosine, linear CKA, on the test split), ridge-probe accuracy (probe fitted on the train
split, scored on the test split), params, GFLOPs and the translator fit time (a fresh cache: trained
kinds really train). Translators are fitted on `--calib-samples` calibration samples of the train split.
Prints markdown tables, per kind on how many single-block spans it loses to `linear`, and the multi-span
plans again with `--refit sequential` (every kind after a plan's first span refitted on the compressed
prefix's own states; `--refit-only` prints only that table).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

CKA_MARGIN = 1e-3  # "lower CKA" means lower by more than this (ridge often equals linear to 4 digits)
KINDS = ("identity", "linear", "ridge", "lowrank", "mlp", "resmlp")


def multi_span_plans(num_blocks: int) -> list[list[tuple[int, int]]]:
    """A few 2- and 3-span plans (and one 2-block span) spread over the depth."""
    last = num_blocks - 1
    plans = [[(last - 2, last)], [(0, 1), (2, 3)], [(1, 2), (last - 1, last)], [(0, 1), (2, 3), (last - 1, last)]]
    return [p for p in plans if all(-1 <= s < e <= last for s, e in p)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo-vit")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--probe-samples", type=int, default=1347)
    p.add_argument("--eval-samples", type=int, default=450)
    p.add_argument("--calib-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default=",".join(KINDS), help="bare kinds; lowrank expands to --ranks")
    p.add_argument("--ranks", default="d/16,d/8,d/4")
    p.add_argument("--refit-only", action="store_true", help="only the independent vs sequential refit table")
    args = p.parse_args()

    from toast.search import SearchSettings
    from toast.search._context import SearchContext
    from toast.search._quiet import quiet_libraries
    from toast.spaces import Plan, PlanError, Span

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="toast-bench-translators-"))
    settings = SearchSettings.from_flat(
        model=args.model,
        dataset=args.dataset,
        out=work / "run",
        cache_dir=work / "cache",
        translators=tuple(k for k in args.kinds.split(",") if k),
        ranks=tuple(r for r in args.ranks.split(",") if r),
        objectives=("accuracy", "fidelity", "gflops"),
        probe_samples=args.probe_samples,
        eval_samples=args.eval_samples,
        calib_samples=args.calib_samples,
        seed=args.seed,
        progress=False,
    )
    t = time.perf_counter()
    ctx = SearchContext.build(settings, progress=False)
    prep = time.perf_counter() - t
    kinds = list(ctx.space.kinds)
    n = ctx.loaded.num_blocks
    base = ctx.baseline
    print(
        f"{args.model} on {args.dataset}: {n} blocks, width {ctx.loaded.hidden_size}; calibration {args.calib_samples}, "
        f"probe {len(ctx.probe_labels)}, eval {len(ctx.eval_labels)} samples; kinds {', '.join(kinds)}; "
        f"preparation {prep:.1f} s"
    )
    print(f"original: accuracy {base['accuracy']:.2f} %, {base['gflops']:.4g} GFLOPs, {base['params']:.3g} M params\n")

    def score(spans: list[tuple[int, int]], kind: str) -> dict | None:
        """The plan's scores, or None where the kind refuses a span of it (e.g. folded from the embeddings)."""
        plan = Plan(tuple(Span(s, e, kind) for s, e in spans), n)
        try:
            return ctx.evaluate(plan)
        except PlanError:
            return None

    header = "| plan | kind | cosine | CKA | accuracy % | Δ vs linear (pts) | params (M) | GFLOPs | fit s |"
    rule = "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    losses = {k: [0, 0, 0] for k in kinds}  # spans where accuracy / fidelity (CKA) is below linear's, and spans scored

    def table(plans: list[list[tuple[int, int]]], title: str, count: bool) -> None:
        print(f"### {title}\n")
        print(header)
        print(rule)
        for spans in plans:
            rows = {k: r for k in kinds if (r := score(spans, k)) is not None}
            lin = rows.get("linear")
            text = ", ".join(f"{s}→{e}" for s, e in spans)
            for k, r in rows.items():
                delta = r["accuracy"] - lin["accuracy"] if lin else float("nan")
                cka = r.get("fidelity")
                print(
                    f"| {text} | {k} | {r.get('cosine', float('nan')):.4f} | "
                    f"{'undefined' if cka is None else f'{cka:.4f}'} | {r['accuracy']:.2f} | {delta:+.2f} | "
                    f"{r['params']:.4g} | {r['gflops']:.4g} | {r['seconds_fit']:.2f} |"
                )
                if count and lin and k != "linear":
                    losses[k][0] += r["accuracy"] < lin["accuracy"]
                    losses[k][1] += (cka or 0.0) < (lin.get("fidelity") or 0.0) - CKA_MARGIN
                    losses[k][2] += 1
        print()

    if not args.refit_only:
        table([[(b - 1, b)] for b in range(n)], "single-block spans (block s+1 removed for s→s+1)", count=True)
        table(multi_span_plans(n), "multi-span plans (every span of the plan with the same kind)", count=False)

    # the same multi-span plans with --refit sequential: later spans fitted on the compressed prefix's own states
    sequential = SearchContext.build(settings.updated(out=work / "run-sequential", refit="sequential"), progress=False)
    print("### multi-span plans: independent fits vs sequential refit (`--refit sequential`)\n")
    print(
        "| plan | kind | cosine indep. | cosine seq. | CKA indep. | CKA seq. | accuracy indep. | accuracy seq. | fit s seq. |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for spans in [p for p in multi_span_plans(n) if len(p) > 1]:
        for k in kinds:
            plan = Plan(tuple(Span(s, e, k) for s, e in spans), n)
            try:
                a, b = ctx.evaluate(plan), sequential.evaluate(plan)
            except PlanError:
                continue
            text = ", ".join(f"{s}→{e}" for s, e in spans)
            print(
                f"| {text} | {k} | {a['cosine']:.4f} | {b['cosine']:.4f} | {a.get('fidelity') or float('nan'):.4f} | "
                f"{b.get('fidelity') or float('nan'):.4f} | {a['accuracy']:.2f} | {b['accuracy']:.2f} | {b['seconds_fit']:.2f} |"
            )
    print()
    if args.refit_only:
        return 0
    print("### on how many single-block spans each kind loses to linear\n")
    print(f"| kind | lower accuracy | lower CKA (by > {CKA_MARGIN:g}) | spans |")
    print("| --- | ---: | ---: | ---: |")
    for k, (acc, fid, total) in losses.items():
        if total:
            print(f"| {k} | {acc} | {fid} | {total} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
