"""`toast-search`: the command line. Thin: parse, call one function per command, map errors to exit 2.

toast-search --model dinov2-base --dataset cifar100 --budget-gflops 15     # search
toast-search --model deit-small --dataset cifar10 --plan "9→11:linear"     # score given plans
toast-search analyze --model M --dataset D --out DIR                       # similarity only
toast-search export RUN_DIR --format onnx                                  # chosen/ as model.onnx, checked
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import toast
from toast.spaces import ToastError

from ..errors import DISK_ERRORS
from ._quiet import note, quiet_libraries, run_console, set_verbosity, show_progress, verbosity
from ._settings import SAMPLERS

DEFAULT_MODEL = "demo-vit"
DEFAULT_DATASET = "digits"
DEMO_BUDGET_FRACTION = 0.85  # the demo exports a model: one that removes at least one block


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (what is wrong, and where to look) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"toast-search: error: {message} (see {self.prog} --help)\n")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _data_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    model_default = DEFAULT_MODEL if defaults else None
    data_default = DEFAULT_DATASET if defaults else None
    parser.add_argument(
        "--model",
        default=model_default,
        required=not defaults,
        help="alias (vit-tiny … vit-large, deit-small, deit-base, dinov2-small/base/large, clip-vit-b16, demo-vit, all-minilm-l6-v2), "
        f"Hugging Face id, or local model directory (default: {model_default})",
    )
    parser.add_argument(
        "--dataset",
        default=data_default,
        required=not defaults,
        help="alias (mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse, imagenet-1k; digits and docstrings offline), Hugging Face id, "
        f"or local path: save_to_disk folder, image folder, parquet (default: {data_default})",
    )
    parser.add_argument("--input-column", default=None, help="column holding images or text (default: guessed)")
    parser.add_argument(
        "--label-column", default=None, help="column holding labels (default: guessed, e.g. label / fine_label)"
    )
    parser.add_argument(
        "--calib-samples",
        type=int,
        default=500,
        help="calibration samples drawn (seeded) from the train split (default: 500, or the whole split when it holds "
        "fewer)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw and of the sampler (default: 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every forward pass (default: 32)")
    parser.add_argument(
        "--activation-dtype",
        default="float16",
        choices=["float16", "bfloat16", "float32"],
        help="dtype of the cached activation shards; statistics are always float64 (default: float16)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="root of everything toast-search keeps between runs: activations, preprocessed inputs, prefix states, "
        "trained translators, latency tables, local parquet / image-folder datasets as Arrow and the docstrings "
        "corpus; downloads from the Hugging Face Hub stay in its own cache ($HF_HOME) "
        "(default: $TOAST_CACHE_DIR, else $XDG_CACHE_HOME/toast-search or ~/.cache/toast-search)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto = cuda when available)")
    _console_options(parser)


def _console_options(parser: argparse.ArgumentParser) -> None:
    """How much the command says: progress bars, --quiet, --verbose."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: only when stderr is a terminal, so a piped log gets none)",
    )
    said = parser.add_mutually_exclusive_group()
    said.add_argument(
        "--quiet", "-q", action="store_true", help="print only the final report and errors: no notes, no progress bars"
    )
    said.add_argument(
        "--verbose", "-v", action="store_true", help="also the libraries' INFO logs (Optuna's line per trial, …)"
    )


def build_search_parser() -> argparse.ArgumentParser:
    from toast.objectives import DEFAULT_OBJECTIVES, list_objectives

    from ._settings import DEFAULT_RANKS

    p = _Parser(
        prog="toast-search",
        description="Search which spans of transformer blocks to replace with translators (identity, linear, ridge, lowrank, mlp, resmlp, folded), "
        "for the best accuracy at each cost. Writes trials.csv, front.json, pareto.png, similarity.png and chosen/ "
        "to --out. Re-running the same command resumes the study. Subcommands: 'toast-search analyze --help' "
        "(block similarity only), 'toast-search export --help' (another plan of a run as a checkpoint, or chosen/ "
        "as ONNX).",
    )
    _data_options(p, defaults=True)
    p.add_argument(
        "--version", action="version", version=f"toast-search {toast.__version__}", help="print the version and exit"
    )
    p.add_argument(
        "--split-train",
        default=None,
        help="split for calibration and the probe's training (default: the dataset's train split)",
    )
    p.add_argument(
        "--split-test", default=None, help="split accuracy is measured on (default: the dataset's test split)"
    )
    p.add_argument(
        "--translators",
        type=_csv,
        default=("identity", "linear"),
        help="translator kinds to search over, comma-separated: identity, linear, ridge, lowrank:r (the best rank-r map; "
        "a bare lowrank is one lowrank:r per --ranks) (default: identity,linear)",
    )
    p.add_argument(
        "--ranks",
        type=_csv,
        default=DEFAULT_RANKS,
        help="ranks a bare lowrank in --translators expands to, comma-separated: integers, or fractions of the model's "
        f"width d (d/16 at width 768 is 48) (default: {','.join(DEFAULT_RANKS)})",
    )
    p.add_argument(
        "--refit",
        default="independent",
        choices=["independent", "sequential"],
        help="fit each span on the original model's states, or (sequential) each span after a plan's first on the "
        "states the compressed model produces at its source, its earlier spans fitted first (default: independent)",
    )
    p.add_argument(
        "--fidelity-fraction",
        type=float,
        default=0.25,
        help="score each plan first on this share of the probe and evaluation samples, and on all of them only when "
        "no fully scored plan beats it there with confidence; 0 or 1: every plan on all samples (default: 0.25)",
    )
    p.add_argument(
        "--fidelity-z",
        type=float,
        default=2.0,
        help="how many standard errors of the difference a fully scored plan must beat a plan's subset score by to "
        "stop it at the subset (default: 2.0)",
    )
    p.add_argument(
        "--prefix-cache-gb",
        type=float,
        default=None,
        help="disk (GB) for the hidden states of prefixes plans share, so a trial starts at its first span: one cap over "
        "every run's states in <cache-dir>/prefix/, the least recently used dropped first; 0: every trial runs all "
        "its blocks (default: the smaller of 2 and a tenth of the free disk, counting what the store holds)",
    )
    p.add_argument("--max-removed", type=int, default=None, help="at most this many blocks removed (default: no limit)")
    p.add_argument("--min-kept", type=int, default=None, help="at least this many blocks kept (default: no limit)")
    p.add_argument(
        "--objectives",
        type=_csv,
        default=DEFAULT_OBJECTIVES,
        help=f"two or more of {', '.join(list_objectives())} (default: {','.join(DEFAULT_OBJECTIVES)})",
    )
    p.add_argument(
        "--probe",
        default="ridge",
        choices=["ridge", "adam"],
        help="linear probe: closed-form ridge (fast) or the papers' Adam protocol (lr 1e-3, 5 epochs, batch 256, 3 seeds); the front is re-scored with it at the end (default: ridge)",
    )
    p.add_argument(
        "--head",
        default="probe",
        choices=["probe", "original", "zero-shot"],
        help="score with a linear probe, with the model's own classification head, or (a whole CLIP model) zero-shot: "
        "the class names in prompt templates embedded by the text tower (default: probe)",
    )
    p.add_argument(
        "--class-names",
        type=Path,
        default=None,
        help="--head zero-shot: a text file, one class name per line, label i on line i (default: the dataset's "
        "ClassLabel names)",
    )
    p.add_argument(
        "--prompts",
        default=None,
        choices=["full", "short"],
        help="--head zero-shot: the 80 ImageNet prompt templates of CLIP, or 7 of them (default: full)",
    )
    p.add_argument(
        "--calib-dataset",
        default=None,
        help="fit the translators on this dataset's samples, the probe and evaluation still on --dataset "
        "(default: --dataset)",
    )
    p.add_argument(
        "--calib-split",
        default=None,
        help="split the calibration samples come from (default: the calibration dataset's train split)",
    )
    p.add_argument(
        "--probe-samples",
        type=int,
        default=5000,
        help="train samples the probe is fitted on (default: 5000, or the whole split when it holds fewer)",
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        default=2000,
        help="test samples accuracy and fidelity are measured on (default: 2000, or the whole split when it holds "
        "fewer)",
    )
    p.add_argument(
        "--sampler",
        default="tpe-local",
        choices=list(SAMPLERS),
        help="Optuna sampler. tpe-local (the default): multivariate TPE, every other trial an untried one-gene "
        "neighbour of a front plan, a repeated plan replaced by an untried one near it (it reached the exhaustive "
        "front fastest in bench/bench_front.py); tpe: multivariate TPE alone; exhaustive scores every plan of a "
        "small space (default: tpe-local)",
    )
    p.add_argument("--trials", type=int, default=100, help="trials in the study, counting finished ones (default: 100)")
    p.add_argument(
        "--timeout", type=float, default=None, help="stop starting trials after this many seconds (default: none)"
    )
    p.add_argument("--budget-gflops", type=float, default=None, help="cost limit in GFLOPs per input (default: none)")
    p.add_argument("--budget-params", type=float, default=None, help="limit in millions of parameters (default: none)")
    p.add_argument(
        "--budget-fraction",
        type=float,
        default=None,
        help=f"limit as a fraction of the original GFLOPs, e.g. 0.7 (default: none; the demo run, {DEFAULT_MODEL} on {DEFAULT_DATASET} with no budget given, uses {DEMO_BUDGET_FRACTION})",
    )
    p.add_argument(
        "--budget-latency-ms",
        type=float,
        default=None,
        help="latency limit in milliseconds per batch of --latency-batch-size inputs on --device / --dtype: the search "
        "uses the run's latency table (each block, translator kind, embeddings and head timed once, cached), chosen/ "
        "must meet it measured end to end (default: none)",
    )
    p.add_argument(
        "--latency-batch-size",
        type=int,
        default=1,
        help="inputs per batch that latency (objective, budget, end-of-run measurement) is timed at (default: 1)",
    )
    p.add_argument(
        "--latency-seq-len",
        type=int,
        default=128,
        help="text encoders: tokens per input that latency is timed at; images use the processor's crop (default: 128)",
    )
    p.add_argument(
        "--plan",
        action="append",
        default=[],
        help='score this plan instead of searching, e.g. "9→11:linear,3→4:identity" or "-1->0:linear" (ASCII -> works; -1 is the embeddings); repeat for several (default: none, search)',
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default: runs/<model>-<dataset>-<key>, the key 8 hex digits of the options that bind a "
        "run, so the same command resumes and changing one of them starts another run)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="model dtype (bf16/fp16 for GPUs) (default: float32)",
    )
    p.add_argument(
        "--runner",
        default="local",
        choices=["local", "ray"],
        help="where trials run: this process, or Ray Tune on a local Ray instance or the cluster of --ray-address (default: local)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="--runner ray: address of an existing Ray cluster (default: $RAY_ADDRESS, else start a local Ray instance)",
    )
    p.add_argument(
        "--cpus-per-trial", type=float, default=None, help="--runner ray: CPUs each trial reserves (default: 1)"
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="--runner ray: GPUs each trial reserves, fractions allowed, e.g. 0.25 (default: 1 when the cluster has GPUs and --device is not cpu, else 0)",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="--runner ray: at most this many trials at once (default: as many as the resources hold)",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="--runner ray: retries of a trial whose worker died before it is recorded as failed (default: 2)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="say what would run (space size, cache hit or miss, trials) and stop"
    )
    return p


def build_analyze_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="toast-search analyze",
        description="Capture the activations of N calibration samples (cached) and write DIR/similarity.json "
        "(CKA, [CLS] cosine, Block Redundancy, indexed by hidden state) and DIR/similarity.png.",
    )
    _data_options(p, defaults=False)
    p.add_argument(
        "--split",
        default=None,
        help="split the calibration samples are drawn from (default: the dataset's train split)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    return p


def settings_from(args: argparse.Namespace):
    from ._settings import SearchSettings, SettingsError

    if args.prompts is not None and args.head != "zero-shot":  # `--prompts full` would otherwise pass unnoticed
        raise SettingsError("`prompts` needs `head` zero-shot (the prompt templates of CLIP's class names)")

    demo = (args.model, args.dataset) == (DEFAULT_MODEL, DEFAULT_DATASET)
    if (
        demo
        and not args.plan
        and all(
            v is None for v in (args.budget_gflops, args.budget_params, args.budget_fraction, args.budget_latency_ms)
        )
    ):
        args.budget_fraction = DEMO_BUDGET_FRACTION
        note(
            f"demo: {DEFAULT_MODEL} on {DEFAULT_DATASET}, budget {DEMO_BUDGET_FRACTION:g} × the original's GFLOPs (--budget-fraction)"
        )
    return SearchSettings(
        model=args.model,
        dataset=args.dataset,
        out=args.out,  # None: runs/<model>-<dataset>-<key of the binding options>
        split_train=args.split_train,
        split_test=args.split_test,
        input_column=args.input_column,
        label_column=args.label_column,
        translators=args.translators,
        ranks=args.ranks,
        max_removed=args.max_removed,
        min_kept=args.min_kept,
        objectives=args.objectives,
        probe=args.probe,
        head=args.head,
        class_names=args.class_names,
        prompts=args.prompts or "full",
        calib_dataset=args.calib_dataset,
        calib_split=args.calib_split,
        probe_samples=args.probe_samples,
        eval_samples=args.eval_samples,
        calib_samples=args.calib_samples,
        sampler=args.sampler,
        seed=args.seed,
        trials=args.trials,
        timeout=args.timeout,
        budget_gflops=args.budget_gflops,
        budget_params=args.budget_params,
        budget_fraction=args.budget_fraction,
        budget_latency_ms=args.budget_latency_ms,
        latency_batch_size=args.latency_batch_size,
        latency_seq_len=args.latency_seq_len,
        plans=tuple(args.plan),
        device=args.device,
        dtype=args.dtype,
        activation_dtype=args.activation_dtype,
        refit=args.refit,
        fidelity_fraction=args.fidelity_fraction,
        fidelity_z=args.fidelity_z,
        prefix_cache_gb=args.prefix_cache_gb,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        runner=args.runner,
        progress=args.progress,
        ray_address=args.ray_address,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
    )


def cmd_search(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.dry_run:
        return dry_run(settings)
    from ._run import run_search

    run_search(settings)
    return 0


def dry_run(settings) -> int:
    """What would run: model, space size, budgets, calibration cache hit or miss, trials."""
    from toast.objectives import get_objectives
    from toast.runners import check_runner

    from ._prepare import prepare
    from ._storage import study_file
    from ._study import resolve_budgets

    check_runner(settings.runner, settings.ray_address)
    prepared = prepare(settings)
    objectives = get_objectives(settings.objectives)
    loaded, train, space, costs = prepared.loaded, prepared.train, prepared.space, prepared.costs
    _, notes = resolve_budgets(settings, costs, space)
    resumed = study_file(settings.out) is not None
    print(
        f"model      {loaded.model_id} ({loaded.family.name}, {loaded.num_blocks} blocks, width {loaded.hidden_size})"
    )
    print(
        f"original   {costs.original.gflops:.4g} GFLOPs, {costs.original.mparams:.4g} M params at {costs.input_description}"
    )
    print(
        f"dataset    {train.name} ({len(train)} train samples, input column {train.input_column!r}, labels {train.label_column!r})"
    )
    print(f"space      {space.size():,} plans ({', '.join(space.kinds)}; max removed {space.removal_limit})")
    print(f"objectives {', '.join(f'{o.name} ({o.direction})' for o in objectives)}")
    print(
        f"calibration cache {'hit' if prepared.cache_hit else 'miss'}: {settings.calib_samples} samples -> {prepared.cache.path(prepared.spec)}"
    )
    if prepared.calib is not None:  # --calib-dataset / --calib-split
        print(f"calibration from {prepared.calib.name} (split {prepared.calib.split!r}), not the probe's data")
    if prepared.zero_shot is not None:
        print(f"zero-shot  {prepared.zero_shot.describe()}")
    for line in [*prepared.notes, *notes]:
        print(line)
    what = (
        f"score {len(settings.plans)} given plan(s)"
        if settings.plans
        else f"{settings.sampler} sampler, up to {settings.trials} trials"
    )
    print(f"would run  {what}; out {settings.out}" + (" (resuming its study)" if resumed else ""))
    return 0


def analyze_settings_from(args: argparse.Namespace):
    """`analyze`'s options as the settings `prepare` reads (`--split` is the train split the samples come from)."""
    from ._settings import SearchSettings

    return SearchSettings(
        model=args.model,
        dataset=args.dataset,
        out=args.out,
        split_train=args.split,
        input_column=args.input_column,
        label_column=args.label_column,
        calib_samples=args.calib_samples,
        seed=args.seed,
        batch_size=args.batch_size,
        activation_dtype=args.activation_dtype,
        cache_dir=args.cache_dir,
        device=args.device,
        progress=args.progress,
    )


def cmd_analyze(args: argparse.Namespace) -> int:
    from toast.objectives import SimilarityReport, plot_similarity

    from ..capture import calibrate
    from ._prepare import prepare
    from ._settings import SettingsError

    if (args.out / "settings.json").is_file() or any((args.out / f).is_file() for f in ("study.journal", "study.db")):
        raise SettingsError(
            f"`out` {args.out} is a search's run directory: analyze would replace its similarity.png; give another folder"
        )
    prepared = prepare(analyze_settings_from(args), search=False)
    captured = calibrate(
        prepared.loaded, prepared.train, prepared.calibration, prepared.cache, progress=show_progress(args.progress)
    )
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


#: Settings fields whose flag is not `--` + the field's name with dashes.
FLAG_OF_FIELD = {
    "plans": "--plan",
    "progress": "--progress",
    "samples": "--calib-samples",
    "split": "--split",
    "kinds": "--translators",  # a `PlanSpace`'s kinds are the search's translators
}


#: `toast-search analyze` reads the calibration split from `--split` (its settings' `split_train`).
ANALYZE_FLAGS = {"split_train": "--split", "split_test": "--split"}


def flag_of(field: str, flags: dict[str, str] | None = None) -> str:
    """The command-line flag of a `SearchSettings` field (`calib_samples` -> `--calib-samples`)."""
    return {**FLAG_OF_FIELD, **(flags or {})}.get(field, "--" + field.replace("_", "-"))


def as_flags(message: str, flags: dict[str, str] | None = None) -> str:
    """A library error as the CLI says it: each `field` of the settings named by its flag (`flags`: a
    subcommand's own names)."""
    from dataclasses import fields

    from ._settings import SearchSettings

    names = {f.name for f in fields(SearchSettings)} | set(FLAG_OF_FIELD)
    shown = re.sub(r"`(\w+)`", lambda m: flag_of(m.group(1), flags) if m.group(1) in names else m.group(0), message)
    return re.sub(r"(--[\w-]+) / \1\b", r"\1", shown)  # two fields, one flag (analyze's --split)


#: A value that starts like a span from the embeddings (`-1->0:linear`, `-1→3`): argparse would read it as an option.
_PLAN_FROM_EMBEDDINGS = re.compile(r"\s*-\d+\s*(?:->|→)")


def join_plan_values(argv: Sequence[str]) -> list[str]:
    """`--plan -1->0:linear` as the papers write it: glue such values to their flag (`--plan=-1->0:linear`)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--plan" and i + 1 < len(argv) and _PLAN_FROM_EMBEDDINGS.match(argv[i + 1]):
            out.append(f"--plan={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = join_plan_values(list(sys.argv[1:] if argv is None else argv))
    flags = None
    if argv[:1] == ["analyze"]:
        args, command, flags = build_analyze_parser().parse_args(argv[1:]), cmd_analyze, ANALYZE_FLAGS
    elif argv[:1] == ["export"]:
        from ._export_cmd import build_export_parser, cmd_export

        args, command = build_export_parser().parse_args(argv[1:]), cmd_export
    else:
        args, command = build_search_parser().parse_args(argv), cmd_search
    level = "quiet" if getattr(args, "quiet", False) else "verbose" if getattr(args, "verbose", False) else "normal"
    before = verbosity()
    set_verbosity(level)
    quiet_libraries(verbose=level == "verbose")
    try:
        with run_console():
            return command(args)
    except ToastError as exc:
        print(f"toast-search: error: {as_flags(str(exc), flags)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(
            f"toast-search: error: {exc.strerror or exc}{where}: free some space (or fix the disk) and re-run the same "
            "command: finished trials and complete cache entries are kept, and nothing half-written is ever read",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "toast-search: interrupted; finished trials are kept in the run directory: re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        set_verbosity(before)  # `main` called in a process that goes on (tests, notebooks)


if __name__ == "__main__":
    sys.exit(main())
