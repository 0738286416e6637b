"""demo-lm on its held-out text: is a fitted map better than dropping the blocks (ReplaceMe's finding)?

For each number of removed blocks k = 1 … L/2 and each translator kind (identity: the blocks dropped, as ShortGPT
and SLEB do; linear: one least-squares map shared by all tokens, ReplaceMe's; folded: ReplaceMe's map on the MLP
branch multiplied into the `down_proj` of the block before the window), every window of k consecutive blocks is
scored (perplexity, KL from the original's next-token distribution, top-1 agreement) on the held-out sequences of the
`python-docs` test split, and the best window of each kind is reported. Then the default search (TPE with local
steps, identity / linear / folded, multi-span plans) runs for `--trials` trials, and its best plan at each k is
reported beside the windows: what searching across spans adds over one window.

Translators are fitted on `--calib-samples` packed sequences of the train split; nothing is fitted or selected on
the test split. Prints markdown tables (the numbers for bench/RESULTS.md).

    python bench/bench_lm.py                       # demo-lm, seq 256, 128 calibration sequences, 60 trials
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

KINDS = ("identity", "linear", "folded")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-lm")
    p.add_argument("--dataset", default="python-docs")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--trials", type=int, default=60, help="trials of the default search (0: windows only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="activation cache (default: a temporary folder)")
    return p.parse_args(argv)


def settings_for(args, out: Path, cache: Path, **extra):
    from toast.search import SearchSettings

    return SearchSettings.from_flat(
        model=args.model,
        dataset=args.dataset,
        objectives=("perplexity", "gflops"),
        translators=KINDS,
        seq_len=args.seq_len,
        calib_samples=args.calib_samples,
        seed=args.seed,
        out=str(out),
        cache_dir=str(cache),
        progress=False,
        **extra,
    )


def removed(spans) -> int:
    return sum(end - start for start, end, _ in spans)


def main(argv=None) -> int:
    args = parse_args(argv)
    from toast.search import run_search
    from toast.search._context import SearchContext
    from toast.spaces import Plan, Span

    tmp = tempfile.TemporaryDirectory(prefix="bench-lm-")
    cache = args.cache_dir or Path(tmp.name) / "cache"
    start = time.perf_counter()
    ctx = SearchContext.build(settings_for(args, Path(tmp.name) / "windows", cache), progress=False, notes=False)
    L = ctx.loaded.num_blocks
    base = ctx.baseline
    kinds = [k for k in KINDS if k in ctx.space.kinds]
    print(
        f"# {args.model} on {args.dataset}: {L} blocks, {len(ctx.eval_labels)} held-out sequences of {args.seq_len} "
        f"tokens, {args.calib_samples} calibration sequences; original perplexity {base['perplexity']:.3f}\n"
    )
    print("Best window of k consecutive blocks, per kind (perplexity / KL nats per token / top-1 agreement %):\n")
    print("| k | " + " | ".join(f"{k}: best window | ppl | KL | top-1" for k in kinds) + " |")
    print("|---:|" + "|".join(["---|---:|---:|---:"] * len(kinds)) + "|")
    best: dict[tuple[int, str], dict] = {}
    for k in range(1, L // 2 + 1):
        for kind in kinds:
            for s in range(-1, L - k):
                plan = Plan((Span(s, s + k, kind),), L)
                if not ctx.space.contains(plan):
                    continue
                scores = ctx.evaluate(plan)
                key = (k, kind)
                if key not in best or scores["perplexity"] < best[key]["perplexity"]:
                    best[key] = {**scores, "plan": str(plan)}
        cells = []
        for kind in kinds:
            b = best.get((k, kind))
            cells.append(
                f"{b['plan']} | {b['perplexity']:.3f} | {b['kl']:.4f} | {b['top1']:.2f}" if b else "- | - | - | -"
            )
        print(f"| {k} | " + " | ".join(cells) + " |")
    windows_s = time.perf_counter() - start
    print()
    for k in range(1, L // 2 + 1):
        ident, lin = best.get((k, "identity")), best.get((k, "linear"))
        fold = best.get((k, "folded"))
        if ident and lin:
            verdict = "linear beats dropping" if lin["perplexity"] < ident["perplexity"] else "dropping beats linear"
            extra = ""
            if fold:
                extra = f"; folded {fold['perplexity']:.3f} ({'beats' if fold['perplexity'] < lin['perplexity'] else 'loses to'} linear)"
            print(f"- k={k}: {verdict} ({lin['perplexity']:.3f} vs {ident['perplexity']:.3f}){extra}")
    if args.trials:
        t = time.perf_counter()
        result = run_search(settings_for(args, Path(tmp.name) / "search", cache, trials=args.trials))
        search_s = time.perf_counter() - t
        print(
            f"\nThe default search ({args.trials} trials, {search_s:.0f} s): its best scored plan at each k, "
            "against the best window of any kind:\n"
        )
        print("| k | search: best plan | ppl | KL | top-1 | best window (any kind) | ppl |")
        print("|---:|---|---:|---:|---:|---|---:|")
        for k in range(1, L // 2 + 1):
            pool = [r for r in result.records if r.get("perplexity") is not None and removed(r.get("spans") or []) == k]
            found = min(pool, key=lambda r: r["perplexity"]) if pool else None
            window = min((best[(k, kind)] for kind in kinds if (k, kind) in best), key=lambda r: r["perplexity"])
            row = (
                f"{found['plan']} | {found['perplexity']:.3f} | {found.get('kl', float('nan')):.4f} | "
                f"{found.get('top1', float('nan')):.2f}"
                if found
                else "(none scored) | - | - | -"
            )
            print(f"| {k} | {row} | {window['plan']} | {window['perplexity']:.3f} |")
    print(
        f"\nwindows scored in {windows_s:.0f} s; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}"
    )
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
