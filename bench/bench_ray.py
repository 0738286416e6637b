"""Ray runner benchmark: trials per second with `--runner ray` against `--runner local` on the same trials.

    python bench/bench_ray.py                       # a tiny random ViT on digits, the first 24 plans
    python bench/bench_ray.py --model demo-vit --plans 33

The one-off preparation (load, calibration capture, cost table, preprocessed inputs, baseline) is
done once on the driver and shared by every mode. Then the same plans (the first `--plans` of the
exhaustive enumeration, enqueued in the same order into a fresh study per mode) are scored:

- local: `study.optimize` in this process, with torch's default threads and with 1 thread (what Ray gives
  a 1-CPU trial), as threads matter more than the runner on a small, busy machine;
- ray, actors reused (the default): each Ray worker builds its context once from the caches and
  scores many trials; at concurrency 1 (the per-trial overhead) and at `--concurrency`;
- ray, no actor reuse: a new worker process per trial, so every trial pays the context build.

Prints a markdown table: wall time of the trial loop and trials per second (everything: Tune's start,
worker builds); steady trials per second (from the first trial's end to the last's, so without the
start-up); the median time a trial spends in `evaluate`; and the steady overhead per trial (1 / steady
rate − mean evaluate of those trials: at concurrency 1 the runner's own cost per trial; above 1 it goes
below zero, as trials overlap).
Ray's own start is reported apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def tiny_vit(directory: Path, *, layers: int, width: int) -> Path:
    """A randomly initialised ViT for 32 px inputs, with its image processor, saved to `directory`."""
    import torch
    import transformers as T

    torch.manual_seed(0)
    T.ViTModel(
        T.ViTConfig(
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=2 * width,
            image_size=32,
            patch_size=8,
            num_channels=3,
        )
    ).save_pretrained(directory)
    T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="tiny", help="'tiny' (a random 4-block ViT, width 64) or any --model of toast-search"
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument(
        "--plans", type=int, default=24, help="trials per mode: the first N plans of the exhaustive enumeration"
    )
    parser.add_argument("--max-removed", type=int, default=2)
    parser.add_argument("--probe-samples", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    parser.add_argument("--concurrency", type=int, default=2, help="concurrent Ray trials in the second reuse row")
    parser.add_argument("--skip-no-reuse", action="store_true", help="leave out the (slow) no-reuse rows")
    args = parser.parse_args()

    import ray

    from toast.runners import RayOptions, get_runner, run_local
    from toast.search import SearchSettings
    from toast.search._context import SearchContext
    from toast.search._quiet import quiet_libraries
    from toast.search._study import Search
    from toast.search._trial import SearchTrials

    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="toast-bench-ray-"))
    model = str(tiny_vit(work / "tiny-vit", layers=4, width=64)) if args.model == "tiny" else args.model
    base = SearchSettings.from_flat(
        model=model,
        dataset=args.dataset,
        out=work / "prep",
        cache_dir=work / "cache",
        sampler="exhaustive",
        max_removed=args.max_removed,
        probe_samples=args.probe_samples,
        eval_samples=args.eval_samples,
        calib_samples=args.calib_samples,
        device="cpu",
        progress=False,
        seeds_per_study=0,
    )
    t = time.perf_counter()
    ctx = SearchContext.build(base, progress=False)
    prep = time.perf_counter() - t
    plans = list(ctx.space.enumerate())[: args.plans]

    def fresh(name: str, **changes) -> Search:
        settings = base.updated(out=work / name, **changes)
        search = Search(settings, space=ctx.space, costs=ctx.costs, evaluate=ctx.evaluate)
        assert search.enqueue(plans) == len(plans)
        return search

    rows = []

    def row(name: str, search: Search, wall: float) -> None:
        trials = search.study.trials
        done = [t for t in trials if t.state.name == "COMPLETE"]
        if len(done) != len(plans):
            raise SystemExit(f"{name}: {len(done)} of {len(plans)} trials completed")
        evaluate = statistics.median(t.user_attrs["seconds"] for t in done)
        setups = [t.user_attrs["ray_worker_setup_seconds"] for t in done if "ray_worker_setup_seconds" in t.user_attrs]
        by_end = sorted(done, key=lambda t: t.datetime_complete)
        span = (by_end[-1].datetime_complete - by_end[0].datetime_complete).total_seconds()
        steady = (len(done) - 1) / span  # from the first trial's end: no start-up, no worker build in it
        evaluate_after = statistics.mean(t.user_attrs["seconds"] for t in by_end[1:])
        rows.append((name, len(done), wall, len(done) / wall, steady, evaluate, 1 / steady - evaluate_after, setups))

    import torch

    threads = torch.get_num_threads()
    for n_threads in dict.fromkeys([threads, 1]):  # Ray gives each 1-CPU trial 1 thread (OMP_NUM_THREADS=1)
        torch.set_num_threads(n_threads)
        search = fresh(f"local{n_threads}")
        t = time.perf_counter()
        run_local(search.study, search.objective, n_trials=len(plans))
        row(
            f"local (this process), torch {n_threads} thread{'s' if n_threads > 1 else ''}",
            search,
            time.perf_counter() - t,
        )
    torch.set_num_threads(threads)

    t = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    ray_start = time.perf_counter() - t
    modes = [
        ("ray, actors reused, 1 at a time", True, 1),
        (f"ray, actors reused, {args.concurrency} at a time", True, args.concurrency),
    ]
    if not args.skip_no_reuse:
        modes += [
            ("ray, no actor reuse, 1 at a time", False, 1),
            (f"ray, no actor reuse, {args.concurrency} at a time", False, args.concurrency),
        ]
    try:
        for i, (name, reuse, concurrency) in enumerate(modes):
            search = fresh(f"ray{i}", runner="ray")
            t = time.perf_counter()
            get_runner("ray").run(
                search.study,
                SearchTrials.of(search.settings, capture=ctx.captured.directory, search=search),
                n_trials=len(plans),
                options=RayOptions(max_concurrent=concurrency),
                callbacks=[search.remember],
                directory=work / f"ray{i}",
                reuse_actors=reuse,
            )
            row(name, search, time.perf_counter() - t)
    finally:
        ray.shutdown()

    print(
        f"{ctx.settings.model if args.model != 'tiny' else 'tiny random ViT (4 blocks, width 64, 32 px)'} on {args.dataset}: "
        f"probe {len(ctx.probe_labels)} / eval {len(ctx.eval_labels)} samples; {len(plans)} plans per mode (same plans, same order); "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, ray {ray.__version__}"
    )
    print(
        f"one-off preparation on the driver: {prep:.1f} s; local Ray instance start: {ray_start:.1f} s (not in the rows)"
    )
    print()
    print(
        "| runner | trials | wall (s) | trials / s | steady trials / s | median evaluate (ms) | steady overhead / trial (ms) "
        "| worker context builds | median build (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, n, wall, rate, steady, evaluate, overhead, setups in rows:
        builds = f"{len(setups)}" if name.startswith("ray") else "0 (driver's)"
        build = f"{statistics.median(setups):.1f}" if setups else "–"
        print(
            f"| {name} | {n} | {wall:.1f} | {rate:.2f} | {steady:.2f} | {evaluate * 1000:.0f} | {overhead * 1000:.0f} | {builds} | {build} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
