"""Latency on the deployment machine: a portable latency table measured there, and a run's front measured there.

    make_latency_table("dinov2-base", runtime="onnxruntime", device="cpu", out="table.json")   # latency-table
    measure_run("runs/dinov2-base-…", runtime="onnxruntime", device="cpu")                       # measure

`make_latency_table` loads the model, measures its table in the runtime (`measure_latency_table`, not cached: the
file is the result) and writes it (`write_latency_file`). `measure_run` loads a finished run's model on this machine,
times end to end in the runtime the original, every front plan and the chosen one (`chosen/` as saved: what ships),
on the run's latency batch; writes the times into the run's `front.json` (`latency_measured` of each record, and the
measurement in `latency_measurements`, runtime and device named; a measurement of the same runtime, device, dtype,
threads and batch is replaced), and says whether the chosen plan meets the latency budget as measured here, with the
next best front plan that does. It compares the original's time with its estimate, and warns when they are more than
`LEVEL_NOTE` apart: every estimate of the run is then off by about as much (a table of another machine or runtime, or
a machine whose speed has moved since), though the plans' times relative to the original's may hold. Both refuse in
one line before loading weights what cannot run here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toast.errors import SettingsError, ToastError, UnsupportedModelError
from toast.objectives import LatencyTable
from toast.spaces import Plan, translator_class

from .._artifacts import atomic_write_text
from ..capture import resolve_device
from ..data import TOKENS
from ..models import load_model, resolve_model
from ._latency import (
    END_TO_END_REPEATS,
    END_TO_END_SECONDS,
    END_TO_END_WARMUP,
    describe_inputs,
    latency_inputs,
    measure_latency_table,
    time_models,
    timing_model,
    unsteady,
)
from ._latency_file import FILE_FORMAT, write_latency_file
from ._pareto import choose
from ._prepare import DTYPES
from .runtimes import DECODE, PREFILL, get_runtime

__all__ = ["MeasuredRun", "make_latency_table", "measure_run"]

MEASURED = "latency_measured"  # each record's measured times: a list of {runtime, device, …, ms}
MEASUREMENTS = "latency_measurements"  # front.json's list of measurements (where, how, what it found)
#: the original measured this far (relative) from its estimate here is said: every estimate is off by about as much
LEVEL_NOTE = 0.1


def _check_mode(family: Any, mode: str, model: str) -> None:
    if mode == DECODE and family.modality != TOKENS:
        raise SettingsError(
            f"--mode decode times a causal language model's decoding step, but model {model!r} is a "
            f"{family.modality} encoder: use --mode prefill"
        )


def _check_out(out: Path) -> Path:
    """Where the table goes: a `.json` file that is not there yet or is a latency table (replaced whole), in a folder
    that can be made and written."""
    out = Path(out).expanduser()
    if out.suffix != ".json":
        raise SettingsError(f"--out {out} is not a .json file: name the table's file, e.g. table.json")
    if out.is_dir():
        raise SettingsError(f"--out {out} is a folder: name the table's file, e.g. {out / 'table.json'}")
    if out.exists():
        try:
            foreign = json.loads(out.read_text()).get("format") != FILE_FORMAT
        except (OSError, ValueError, AttributeError):
            foreign = True
        if foreign:
            raise SettingsError(f"--out {out} exists and is not a latency table: give another path (nothing written)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"cannot make the folder {out.parent} for --out ({exc.strerror or exc})") from None
    return out


def make_latency_table(
    model: str,
    *,
    out: str | Path,
    runtime: str = "eager",
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 1,
    seq_len: int = 128,
    mode: str = PREFILL,
    translators: tuple[str, ...] = ("identity", "linear"),
    ranks: tuple[str, ...] | None = None,
    repeats: int | None = None,
) -> tuple[LatencyTable, Path, list[str]]:
    """Measure `model`'s latency table in `runtime` on `device` and write it to `out`; the table, the path and notes
    (kinds left out). One-line errors before the weights load: the output path, the runtime here, the model, the
    kinds."""
    from ._prepare import space_kinds
    from ._settings import SpaceSettings

    space = SpaceSettings(translators=tuple(translators), **({"ranks": tuple(ranks)} if ranks else {}))
    problems = space.problems()
    if problems:
        raise SettingsError("; ".join(problems))
    path = _check_out(Path(out))
    engine = get_runtime(runtime)
    where = resolve_device(device)
    engine.check(where, mode, dtype)
    source = resolve_model(model)
    _check_mode(source.family, mode, model)
    engine.check_model(source.family, source.config, mode, seq_len)
    loaded = load_model(model, device=where, dtype=DTYPES[dtype])
    notes, kinds = [], []
    for kind in space_kinds(space, loaded.hidden_size):
        reason = translator_class(kind).refuse_family(loaded.family, loaded.parts.blocks[0])
        if reason:
            notes.append(f"note: --translators {kind} left out: {reason}")
        else:
            kinds.append(kind)
    extra = {"repeats": int(repeats)} if repeats else {}
    table, _ = measure_latency_table(
        loaded, kinds=kinds, batch_size=batch_size, seq_len=seq_len, mode=mode, runtime=engine.name, **extra
    )
    return table, write_latency_file(table, path, model=model), notes


# ---- measure: a run's front on this machine ------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasuredRun:
    """What `measure_run` measured and decided: the measurement (as written to front.json), each plan's
    milliseconds, the budget and whether the chosen plan meets it, and the next best that does."""

    measurement: dict[str, Any]
    times: dict[str, float]  # plan text -> ms ("original", each front plan, "chosen/ …")
    budget_ms: float | None
    chosen_plan: str | None
    chosen_ms: float | None
    meets: bool | None
    next_best: dict[str, Any] | None
    lines: list[str] = field(default_factory=list)


def _front(run: Path) -> dict[str, Any]:
    path = run / "front.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(
            f"{run} has no front.json: measure a finished run (re-run the same search command to finish it)"
        ) from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read {path} ({str(exc).splitlines()[0]}): re-run the search to write it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("front"), list):
        raise SettingsError(f"{path} is not a toast-search front.json: give the --out of a toast-search run")
    return doc


def _chosen_model(run: Path, loaded: Any, plan: Plan) -> tuple[Any, str]:
    """The saved `chosen/` as it ships, on the loaded model's device and dtype; else (a folder the compressed model
    cannot read, e.g. sentence-transformers' layout) the chosen plan at its fitted shapes, said so."""
    from ..models import CompressedModel

    ref = next(loaded.model.parameters())
    try:
        model = CompressedModel.from_pretrained(run / "chosen")
        return model.to(device=ref.device, dtype=ref.dtype).eval(), "chosen/ as saved"
    except (ToastError, OSError, ValueError, KeyError, RuntimeError):
        return timing_model(loaded, plan), "chosen/'s plan at its fitted shapes"


def _task_key(doc: dict[str, Any]) -> str | None:
    from toast.objectives import task_score

    task = task_score([o["name"] for o in doc.get("objectives", []) if isinstance(o, dict) and "name" in o])
    return task.name if task is not None else None


def measure_run(
    run: str | Path,
    *,
    runtime: str = "eager",
    device: str = "auto",
    dtype: str | None = None,
    budget_ms: float | None = None,
    repeats: int = END_TO_END_REPEATS,
) -> MeasuredRun:
    """Measure run `run`'s original, front and chosen model end to end in `runtime` on `device` here, write the
    times into its front.json, and check the latency budget (`budget_ms`, else the run's) as measured (see the
    module)."""
    from ._export import load_run_settings
    from ._lock import run_directory_lock

    run = Path(run).expanduser()
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise SettingsError(f"--budget-latency-ms must be a positive number of milliseconds, got {budget_ms}")
    settings = load_run_settings(run)
    doc = _front(run)
    engine = get_runtime(runtime)
    where = resolve_device(device)
    mode = settings.scoring.latency_mode
    dtype = dtype or settings.dtype
    engine.check(where, mode, dtype)
    source = resolve_model(settings.data.model)
    engine.check_model(source.family, source.config, mode, settings.scoring.latency_seq_len)
    with run_directory_lock(run, what="a latency measurement"):
        try:
            loaded = load_model(settings.data.model, device=where, dtype=DTYPES[dtype])
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{exc} (measure loads the run's model {settings.data.model!r} here)") from None
        inputs = latency_inputs(
            loaded, batch_size=settings.scoring.latency_batch_size, seq_len=settings.scoring.latency_seq_len
        )
        L = loaded.num_blocks
        plans = {"original": Plan((), L)}
        for record in doc["front"]:
            plans.setdefault(record["plan"], Plan.of(record.get("spans") or [], L))
        chosen = doc.get("chosen")
        builds = {text: (lambda p=p: timing_model(loaded, p)) for text, p in plans.items()}
        how = None
        if chosen and (run / "chosen").is_dir():
            chosen_plan = Plan.of(chosen.get("spans") or [], L)
            built = {}

            def chosen_build():
                built["model"], built["how"] = _chosen_model(run, loaded, chosen_plan)
                return built["model"]

            builds["chosen/"] = chosen_build
        times = time_models(
            engine,
            builds,
            inputs,
            mode=mode,
            warmup=END_TO_END_WARMUP,
            repeats=repeats,
            seconds=END_TO_END_SECONDS,
            device=where,
        )
        if "chosen/" in builds:
            how = built.get("how")
        measurement = {
            "runtime": engine.name,
            "device": engine.device_label(where),
            "dtype": dtype,
            "threads": torch.get_num_threads(),
            "batch_size": settings.scoring.latency_batch_size,
            "inputs": describe_inputs(inputs),
            "mode": mode,
            "versions": engine.versions(),
            "drift": getattr(times, "drift", 0.0),
        }
        budget = budget_ms if budget_ms is not None else (doc.get("budgets") or {}).get("latency")
        result = _judge(doc, times, measurement, budget, how)
        _write_back(run, doc, times, result)
    return result


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("runtime", "device", "dtype", "threads", "batch_size", "inputs", "mode")
    return all(a.get(k) == b.get(k) for k in keys)


def _off_level(measurement: dict[str, Any]) -> str | None:
    """A line saying the original ran more than `LEVEL_NOTE` off its estimate here, else None: every estimate of the
    run is then off by about that factor (the table was measured on another machine or runtime, or this machine's
    speed has moved since), while the plans' times relative to the original's hold."""
    level = measurement.get("level")
    if level is None or not abs(level - 1.0) > LEVEL_NOTE:
        return None
    return (
        f"the original ran {level:.2f}x its estimate here ({measurement['original_estimated_ms']:.4g} ms): the run's "
        "latency table was measured on another machine or runtime, or this machine's speed has moved since, and every "
        "plan's estimate is off by about as much; judge by the times measured here, or search against a table "
        "measured here (toast-search latency-table … --out table.json, then --latency-table table.json)"
    )


def _judge(
    doc: dict[str, Any], times: dict[str, float], measurement: dict[str, Any], budget: float | None, how: str | None
) -> MeasuredRun:
    """Whether the chosen model meets `budget` as measured, and the best front plan (by the run's task score) that
    does; the lines to print."""
    chosen = doc.get("chosen")
    chosen_plan = chosen.get("plan") if chosen else None
    chosen_ms = times.get("chosen/", times.get(chosen_plan)) if chosen_plan else None
    where = f"{measurement['runtime']} on {measurement['device']}"
    lines = [f"measured end to end in {where}, {measurement['dtype']}, {measurement['inputs']} ({measurement['mode']})"]
    estimated = (doc.get("baseline") or {}).get("latency")
    if isinstance(estimated, (int, float)) and estimated > 0:
        measurement["original_estimated_ms"] = float(estimated)
        measurement["level"] = times["original"] / estimated
    lines.append(
        f"  original: {times['original']:.4g} ms" + (f" (estimated {estimated:.4g})" if "level" in measurement else "")
    )
    lines += [f"warning: {line}" for line in [unsteady(measurement.get("drift", 0.0)), _off_level(measurement)] if line]
    for record in doc["front"]:
        est = record.get("latency")
        said = f" (estimated {est:.4g})" if isinstance(est, (int, float)) else ""
        lines.append(f"  {record['plan']}: {times[record['plan']]:.4g} ms{said}")
    if chosen_ms is not None:
        lines.append(f"  chosen {chosen_plan} ({how or 'its plan'}): {chosen_ms:.4g} ms")
    meets = next_best = None
    if budget is not None and chosen_ms is not None:
        meets = chosen_ms <= budget
        measurement["budget_ms"] = budget
        measurement["chosen_meets_budget"] = meets
        if meets:
            lines.append(f"the chosen plan {chosen_plan} meets the {budget:.4g} ms budget as measured here")
        else:
            task = _task_key(doc)
            others = {k: v for k, v in (doc.get("budgets") or {}).items() if k != "latency"}
            pool = [{**r, "latency": times[r["plan"]]} for r in doc["front"]]
            next_best = choose(pool, accuracy_key=task, budgets={**others, "latency": budget})
            then = (
                f"the next best that meets it: {next_best['plan']} ({times[next_best['plan']]:.4g} ms"
                + (f", {task} {next_best[task]:.4g}" if task and isinstance(next_best.get(task), (int, float)) else "")
                + f"; export it with toast-search export RUN --plan '{next_best['plan']}')"
                if next_best is not None
                else "no front plan meets it as measured here: raise the budget, or search with this table "
                "(toast-search latency-table … then --latency-table)"
            )
            lines.append(
                f"the chosen plan {chosen_plan} misses the {budget:.4g} ms budget as measured here ({chosen_ms:.4g} ms); "
                + then
            )
            measurement["next_best"] = next_best["plan"] if next_best is not None else None
    elif budget is not None:
        measurement["budget_ms"] = budget
    return MeasuredRun(measurement, times, budget, chosen_plan, chosen_ms, meets, next_best, lines)


def _write_back(run: Path, doc: dict[str, Any], times: dict[str, float], result: MeasuredRun) -> None:
    """front.json with each record's time under `latency_measured` and the measurement under
    `latency_measurements` (one of the same runtime, device, dtype, threads and batch replaced), atomically."""
    m = result.measurement

    def add(record: dict[str, Any] | None, ms: float | None) -> None:
        if record is None or ms is None:
            return
        kept = [e for e in record.get(MEASURED, []) if not _same(e, m)]
        record[MEASURED] = [
            *kept,
            {k: m[k] for k in ("runtime", "device", "dtype", "threads", "batch_size", "inputs", "mode")} | {"ms": ms},
        ]

    add(doc.get("baseline"), times["original"])
    for record in doc["front"]:
        add(record, times[record["plan"]])
    add(doc.get("chosen"), result.chosen_ms)
    doc[MEASUREMENTS] = [*(e for e in doc.get(MEASUREMENTS, []) if not _same(e, m)), m]
    glossary = doc.setdefault("glossary", {})
    if isinstance(glossary, dict):
        glossary[MEASURED] = (
            "milliseconds per batch measured end to end by `toast-search measure`, one entry per runtime, device, "
            "dtype, threads and batch (the chosen entry: chosen/ as saved)"
        )
    atomic_write_text(run / "front.json", json.dumps(doc, indent=2, ensure_ascii=False))
