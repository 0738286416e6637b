"""ONNX export of a saved compressed model, checked against PyTorch with onnxruntime.

`export_onnx(source)` loads a run's `chosen/` (or any folder `CompressedModel.from_pretrained` reads),
exports it with `torch.onnx.export`'s torch.export-based exporter (the default since torch 2.9; the
TorchScript one is deprecated) with a dynamic batch axis, and a dynamic sequence axis for text, then runs
the file with onnxruntime on CPU at two batch sizes and compares it with the PyTorch model. Inputs come
from the run's own test split (its `settings.json`) through the processor saved with the model; a bare
model folder is checked on synthetic inputs run through that processor. A difference above `tolerance`
is an error, and the file is removed.

What the graph outputs: for an image model, what `CompressedModel.forward` returns (the head's logits or
pooler output, else the pooled features). For a text encoder, what optimum's `ORTModelForFeatureExtraction`
and sentence-transformers' ONNX backend read, named as they expect: `last_hidden_state` (the token
embeddings) and `sentence_embedding`, the features the search scored (`CompressedModel.pooled`: the source's
sentence-transformers pooling and normalisation, else the mean over real tokens), never BERT's tanh pooler.
For a causal LM, `logits` for every token of `input_ids` / `attention_mask`; beside it, `<name>_with_past.onnx`,
the decoding step with the KV cache as inputs and outputs (`CompressedModel.decode_module`: `input_ids`,
`past_key_values.<layer>.key` / `.value` in; `logits`, `present.<layer>.key` / `.value` out; a past of length 0 is
the prefill), what an ONNX Runtime generation loop runs and what `--runtime onnxruntime --latency-mode decode`
times; checked by a prefill and greedy steps against PyTorch's `decode_step` (with Transformers' own cache). The
step graph's cache keeps every token of a sliding-window layer too (a graph cannot trim it; the mask keeps the
window), so past the window a step reads more than a trimmed cache.

onnx, onnxruntime and onnxscript are imported only here, and only when an export is asked for.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toast.errors import DatasetError, MissingDependencyError, ToastError, UnsupportedModelError

from .._faults import fault_point
from ..data import TOKENS

__all__ = ["ONNX_EXTRA_HINT", "OnnxExportError", "OnnxReport", "export_onnx", "model_folder"]

ONNX_EXTRA_HINT = "ONNX export needs the onnx extra: pip install 'toast-search[onnx]'"
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 4)  # two batch sizes: the exported batch axis must take both
EXPORT_BATCH = 2  # the example the graph is traced with (torch.export specialises a dimension of size 1)
MAX_LENGTH = 256  # tokens, as the search's batches are truncated
PROTOBUF_LIMIT = 2**31 - 1 - 2**26  # a model's weights above ~2 GB go to an external data file
PROVIDERS = ("CPUExecutionProvider",)
STEP_CHECKS = 3  # greedy decoding steps the step graph is checked on, after its prefill
STEP_NEW, STEP_PAST = 3, 5  # the step graph is traced on 3 new tokens after 5 cached ones
STEP_SUFFIX = "_with_past"  # model.onnx -> model_with_past.onnx


class OnnxExportError(ToastError):
    """The exported ONNX model disagrees with PyTorch, or the exporter refused the model."""


@dataclass(frozen=True, kw_only=True)
class OnnxReport:
    """What `export_onnx` wrote and how it was checked."""

    path: Path
    max_abs_diff: float  # over both checked batches, every output element
    batch_sizes: tuple[int, ...]  # the batch sizes onnxruntime ran
    inputs: str  # where the checked inputs came from
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]  # ("logits",) …; ("last_hidden_state", "sentence_embedding") for text
    dynamic_axes: tuple[str, ...]  # ("batch",) for images, ("batch", "sequence") for text
    opset: int
    providers: tuple[str, ...]
    step_path: Path | None = None  # a causal LM's decoding step with its KV cache (`<name>_with_past.onnx`)
    step_max_abs_diff: float | None = None  # its logits against PyTorch's, over a prefill and `STEP_CHECKS` steps
    step_note: str | None = None  # what a user of the step graph should know (its sliding-window layers' cache)

    def summary(self) -> str:
        step = ""
        if self.step_path is not None:
            step = (
                f"; and {self.step_path} (the decoding step: input_ids and past_key_values.<layer>.key/value in, "
                f"logits and present.<layer>.key/value out): onnxruntime vs PyTorch over a prefill and "
                f"{STEP_CHECKS} greedy steps: max abs difference {self.step_max_abs_diff:.3g}"
                + (f" ({self.step_note})" if self.step_note else "")
            )
        return (
            f"wrote {self.path} (opset {self.opset}, inputs {', '.join(self.input_names)}, outputs "
            f"{', '.join(self.output_names)}, dynamic "
            f"{' and '.join(self.dynamic_axes)}); "
            f"onnxruntime vs PyTorch on {self.inputs}, batches {'/'.join(map(str, self.batch_sizes))}: "
            f"max abs difference {self.max_abs_diff:.3g}" + step
        )


def require_onnx() -> Any:
    """`onnxruntime`, after checking the extra's packages import; else a one-line install hint."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401  (the torch.export-based exporter translates with it)
    except ImportError:
        raise MissingDependencyError(ONNX_EXTRA_HINT) from None
    return onnxruntime


def model_folder(source: str | Path) -> tuple[Path, dict | None]:
    """The model folder of `source` (a run directory's `chosen/`, or `source` itself) and the run's settings
    (None for a folder outside a run)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UnsupportedModelError(f"{source}: no such file or folder (give a run directory or a saved model folder)")
    if not path.is_dir():
        raise UnsupportedModelError(f"{source} is a file: give a run directory or a saved compressed model folder")
    run = path if (path / "settings.json").is_file() else None
    if run is None and path.name == "chosen" and (path.parent / "settings.json").is_file():
        run = path.parent  # `RUN/chosen` given directly: the run's data still apply
    if run is not None and run == path:
        if not (path / "chosen").is_dir():
            raise UnsupportedModelError(
                f"run directory {source} has no chosen/ model: re-run the search with a budget "
                "(--budget-gflops, --budget-params or --budget-fraction), or pass a saved model folder"
            )
        path = path / "chosen"
    settings = None
    if run is not None:
        try:
            settings = json.loads((run / "settings.json").read_text())
        except (OSError, ValueError) as exc:
            raise UnsupportedModelError(f"cannot read {run / 'settings.json'}: {_first_line(exc)}") from None
    return path, settings


def load_compressed(folder: Path):
    """`CompressedModel.from_pretrained(folder)`, with unreadable files as one-line errors."""
    from safetensors import SafetensorError

    from ..models import CompressedModel

    try:
        return CompressedModel.from_pretrained(folder)
    except ToastError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UnsupportedModelError(
            f"cannot load the compressed model in {folder} ({type(exc).__name__}: {_first_line(exc)}): "
            "its files are truncated, corrupt or not a saved compressed model; save it again"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- inputs ------------------------------------------------------------------------------------
def _processor(folder: Path, family: Any) -> Any | None:
    from ..models import load_processor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_processor(str(folder), family)


def _run_batches(settings: dict, processor: Any, sizes: Sequence[int]) -> tuple[list[dict], str]:
    """`sizes` batches of distinct samples of the run's test split, preprocessed as the run preprocesses them."""
    from ..data import default_splits, iter_batches, load_split

    dataset = settings["dataset"]
    split_name = settings.get("split_test") or default_splits(dataset)[1]
    split = load_split(
        dataset,
        split_name,
        input_column=settings.get("input_column"),
        label_column=settings.get("label_column"),
        cache_dir=settings.get("cache_dir"),
    )
    needed = sum(sizes)
    if len(split) < needed:
        raise DatasetError(f"the {split_name} split of {dataset} has {len(split)} samples; the check needs {needed}")
    batches, start = [], 0
    for size in sizes:
        ids = list(range(start, start + size))
        batches.append(next(iter_batches(split, ids, processor, size, max_length=MAX_LENGTH))[1])
        start += size
    return batches, f"{needed} samples of {dataset} ({split_name})"


def _synthetic_batches(model: Any, processor: Any | None, sizes: Sequence[int]) -> tuple[list[dict], str]:
    """Seeded synthetic inputs of the model's family (`Family.synthetic_inputs`), through the saved processor when
    there is one."""
    rng = np.random.default_rng(0)
    family = model.family
    batches, start = [], 0
    for size in sizes:
        batch = family.synthetic_inputs(
            model.config, batch=size, rng=rng, offset=start, processor=processor, max_length=MAX_LENGTH
        )
        batches.append(batch)
        start += size
    how = "the saved processor" if processor is not None else "no saved processor"
    return [{k: v.float() if v.is_floating_point() else v for k, v in b.items()} for b in batches], (
        f"{sum(sizes)} synthetic {family.inputs_noun} ({how}; a model folder outside a run)"
    )


def check_inputs(model: Any, folder: Path, settings: dict | None, sizes: Sequence[int]) -> tuple[list[dict], str]:
    """One input batch per size in `sizes`, and where they came from: the run's test split, else synthetic."""
    processor = _processor(folder, model.family)
    if settings is not None and processor is not None:
        return _run_batches(settings, processor, sizes)
    return _synthetic_batches(model, processor, sizes)


# ---- export and check --------------------------------------------------------------------------
def graph_module(model: Any) -> torch.nn.Module:
    """What is exported for `model`: its `export_module`, which computes its family's export outputs (a text
    encoder's token and sentence embeddings; an image model's forward output)."""
    return model.export_module()


def _output_names(model: Any) -> tuple[str, ...]:
    return model.family.export_outputs(model)


def _dynamic_shapes(inputs: dict[str, torch.Tensor]) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    batch, sequence = Dim("batch"), Dim("sequence")
    return {k: ({0: batch} if k == "pixel_values" else {0: batch, 1: sequence}) for k in inputs}


def _export(model: Any, example: dict[str, torch.Tensor], path: Path, opset: int | None) -> None:
    """`model`'s export graph (`graph_module`) to ONNX at `path`, traced on `example` (dynamic batch; and sequence for
    text)."""
    _export_graph(
        model,
        graph_module(model),
        example,
        path,
        input_names=list(example),
        output_names=list(_output_names(model)),
        dynamic_shapes=_dynamic_shapes(example),
        opset=opset,
    )


def export_decode_graph(model: Any, example: dict[str, torch.Tensor], path: Path, opset: int | None = None) -> Any:
    """A causal LM's decoding step with its KV cache as tensors (`CompressedModel.decode_module`) to ONNX at `path`,
    traced on `example` (`input_ids` and `past_<j>`, by the module's argument names): dynamic batch, new tokens and
    past tokens. Returns the module (its `input_names`, `output_names`, `cache_tensors`)."""
    graph = model.decode_module()
    _export_graph(
        model,
        graph,
        example,
        path,
        input_names=graph.input_names,
        output_names=graph.output_names,
        dynamic_shapes=graph.dynamic_shapes(),
        opset=opset,
    )
    return graph


def _export_graph(
    model: Any,
    graph: torch.nn.Module,
    example: dict[str, torch.Tensor],
    path: Path,
    *,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict[str, dict[int, Any]],
    opset: int | None,
) -> None:
    """`graph` (made from `model`) to ONNX with torch.export's exporter, its warnings quiet; the exporter's errors as
    one `OnnxExportError` naming the model and plan."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (),
                str(path),
                kwargs=example,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=size > PROTOBUF_LIMIT,
                verbose=False,
            )
    except ToastError:
        raise
    except Exception as exc:  # the exporter's own errors are many and private: name the model, keep the reason
        raise OnnxExportError(
            f"torch.onnx.export failed on the {model.family.name} model with plan {model.plan}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    fixed = _fixed_axes(path, {n: axes for n, axes in zip(input_names, dynamic_shapes.values())})
    if fixed:
        raise OnnxExportError(
            f"the exporter fixed the {', '.join(fixed)} of the {model.family.name} model with plan {model.plan}, "
            "which should vary: trace it on an example longer than one along them"
        )


def _fixed_axes(path: Path, dynamic: Mapping[str, Mapping[int, Any]]) -> list[str]:
    """The axes of `dynamic` (by input name) that the graph at `path` declares with a fixed size: torch.export
    specialises an axis that was 1 in the example, or one the model's code ties to a constant, silently."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        f"{i.name} axis {axis} (at {i.type.tensor_type.shape.dim[axis].dim_value})"
        for i in graph.input
        for axis in dynamic.get(i.name, {})
        if not i.type.tensor_type.shape.dim[axis].dim_param
    ]


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def compare(path: Path, model: Any, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """The largest |onnxruntime − PyTorch| over every output element of `batches`."""
    ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=list(PROVIDERS))
    except Exception as exc:  # onnxruntime's own errors (an opset it does not implement, an invalid graph)
        raise OnnxExportError(f"onnxruntime cannot load the exported graph: {_first_line(exc)}") from None
    names = [i.name for i in session.get_inputs()]
    module = graph_module(model)
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            expected = _outputs(module(**batch))
        got = session.run(None, {n: batch[n].numpy() for n in names})
        if len(got) != len(expected):
            raise OnnxExportError(f"{path}: onnxruntime gave {len(got)} outputs, PyTorch {len(expected)}")
        for g, e in zip(got, expected):
            if g.shape != e.shape:
                raise OnnxExportError(f"{path}: onnxruntime gave shape {g.shape}, PyTorch {e.shape}")
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - e))))
    return worst


def _outputs(out: torch.Tensor | tuple[torch.Tensor, ...], dtype: torch.dtype = torch.float32) -> list[np.ndarray]:
    """The graph module's output(s) as arrays, in the graph's output order."""
    return [t.to(dtype).numpy() for t in (out if isinstance(out, tuple) else (out,))]


def float64_gap(model: Any, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """The largest |float32 − float64| of the PyTorch model's outputs on `batches`: its own rounding error."""
    import copy

    module = graph_module(model)
    wide = copy.deepcopy(module).double()
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            wide_batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
            exact = _outputs(wide(**wide_batch), torch.float64)
            for got, e in zip(_outputs(module(**batch), torch.float64), exact):
                worst = max(worst, float(np.max(np.abs(got - e))))
    return worst


def export_onnx(
    source: str | Path,
    out: str | Path | None = None,
    *,
    opset: int | None = None,
    batch_sizes: Sequence[int] = CHECK_BATCHES,
    tolerance: float = TOLERANCE,
) -> OnnxReport:
    """Export `source` (a run directory or a saved compressed model folder) to `out` (default:
    `<model folder>/model.onnx`) and check it with onnxruntime at `batch_sizes`; an error if any output
    differs from PyTorch's by more than `tolerance`."""
    require_onnx()
    sizes = tuple(int(b) for b in batch_sizes)
    if len(set(sizes)) < 2 or min(sizes) < 1:
        raise ValueError(f"batch_sizes must hold two or more distinct sizes >= 1, got {batch_sizes}")
    _check_opset(opset)
    given = output_path(Path(source), out) if out is not None else None  # a bad --out first: it is the cheapest
    folder, settings = model_folder(source)
    path = given or output_path(folder, None)
    model = load_compressed(folder)
    model.float().eval()
    batches, described = check_inputs(model, folder, settings, sizes)
    example = _example(batches)
    # written in a temporary folder beside the target (under the target's own name, which an external data file is
    # referenced by), checked there, then renamed into place: a failed export or check leaves the old file as it was
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        staged = tmp / path.name
        _on_full_disk(lambda: _export(model, example, staged, opset), path)
        diff = compare(staged, model, batches)
        if not diff <= tolerance:  # NaN fails too
            raise OnnxExportError(
                f"the ONNX model of {folder} differs from PyTorch by {diff:.3g} (> {tolerance:g}) on {described}: "
                f"not written (PyTorch float32 vs float64 on the same inputs: {float64_gap(model, batches):.3g}; "
                "a gap as large means the model itself amplifies rounding, e.g. a translator with very large weights)"
            )
        written_opset = _opset(staged)
        step, step_diff, step_note = None, None, None
        if model.family.modality == TOKENS:
            step = tmp / f"{path.stem}{STEP_SUFFIX}{path.suffix}"
            _on_full_disk(lambda: export_decode_graph(model, step_example(model), step, opset), path)
            step_diff = compare_step(step, model, batches[0]["input_ids"])
            if not step_diff <= tolerance:
                raise OnnxExportError(
                    f"the decoding-step ONNX model of {folder} differs from PyTorch by {step_diff:.3g} "
                    f"(> {tolerance:g}) over a prefill and {STEP_CHECKS} greedy steps: not written"
                )
            step_note = sliding_note(model)
        fault_point("export")
        for part in sorted(
            tmp.iterdir(), key=lambda p: (p.name == path.name, p.suffix == ".onnx")
        ):  # graphs after data, model.onnx last
            os.replace(part, path.parent / part.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return OnnxReport(
        path=path,
        max_abs_diff=diff,
        batch_sizes=sizes,
        inputs=described,
        input_names=tuple(example),
        output_names=_output_names(model),
        dynamic_axes=("batch",) if "pixel_values" in example else ("batch", "sequence"),
        opset=written_opset,
        providers=PROVIDERS,
        step_path=path.parent / step.name if step is not None else None,
        step_max_abs_diff=step_diff,
        step_note=step_note,
    )


def sliding_note(model: Any) -> str | None:
    """What the step graph of a causal LM that keeps sliding-window layers does past the window (one line), else
    None: its cache keeps every token (`graph_cache`), so the logits are exact and the step reads more."""
    window = getattr(model.config, "sliding_window", None)
    sliding = [b for b in model.plan.kept if model.family.layer_type(model.blocks[str(b)]) != "full_attention"]
    if window is None or not sliding:
        return None
    return (
        f"its sliding-window layers (blocks {', '.join(map(str, sliding[:4]))}{' …' if len(sliding) > 4 else ''}) "
        f"cache every token and attend to the last {window} by the mask: exact logits at any length, but past "
        f"{window} tokens a step reads more than Transformers' trimmed cache holds"
    )


def step_example(model: Any) -> dict[str, torch.Tensor]:
    """What a causal LM's decoding-step graph (`CompressedModel.decode_module`) is traced with: `STEP_NEW` new tokens
    after `STEP_PAST` cached ones, at `EXPORT_BATCH` (sizes of their own, so that torch.export keeps each axis apart);
    zeros, since only the shapes are traced, each cache entry shaped as the model's own (one step run to see it)."""
    from ..models import graph_cache

    device = next(model.parameters()).device
    cache = graph_cache()
    with torch.inference_mode():
        model.decode_step(torch.zeros(1, 1, dtype=torch.long, device=device), cache)
    example = {"input_ids": torch.zeros(EXPORT_BATCH, STEP_NEW, dtype=torch.long, device=device)}
    for j, t in enumerate(model.decode_module().cache_tensors(cache)):
        example[f"past_{j}"] = torch.zeros(
            EXPORT_BATCH, t.shape[1], STEP_PAST, t.shape[3], dtype=t.dtype, device=device
        )
    return example


def compare_step(path: Path, model: Any, input_ids: torch.Tensor) -> float:
    """The largest |onnxruntime − PyTorch| of the step graph at `path`'s logits over a prefill of `input_ids` (an
    empty past) and `STEP_CHECKS` greedy steps fed the graph's own `present` outputs, against `decode_step` with a
    `DynamicCache` on the same tokens."""
    from transformers import DynamicCache

    session = require_onnx().InferenceSession(str(path), providers=list(PROVIDERS))
    graph = model.decode_module()
    names = graph.input_names
    ids = input_ids.cpu()
    cache, worst, past = DynamicCache(config=model.config), 0.0, None
    with torch.inference_mode():
        for _ in range(1 + STEP_CHECKS):
            expected = model.decode_step(ids, cache).float().numpy()
            if past is None:  # the prefill's: every entry empty, shaped as PyTorch's cache
                past = [np.zeros((*t.shape[:2], 0, t.shape[3]), np.float32) for t in graph.cache_tensors(cache)]
            logits, *past = session.run(None, {names[0]: ids.numpy(), **dict(zip(names[1:], past))})
            worst = max(worst, float(np.max(np.abs(logits - expected))))
            ids = torch.from_numpy(expected[:, -1:].argmax(-1))
    return worst


def _check_opset(opset: int | None) -> None:
    """An opset the exporter can write and this onnx release knows, in one line before any work."""
    if opset is None:
        return
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    if not 18 <= opset <= newest:
        raise OnnxExportError(
            f"opset {opset} is not one the exporter writes: give --opset between 18 and {newest} (the newest this "
            f"onnx {onnx.__version__} knows), or leave it out"
        )


def output_path(folder: Path, out: str | Path | None) -> Path:
    """Where the ONNX file goes: `out` (a folder gets `model.onnx` in it) or `<folder>/model.onnx`. Only a `.onnx`
    file is ever replaced, so no run file (the study, the settings) can be written over; the folder must be
    writable. One-line errors, before any work."""
    path = Path(out).expanduser() if out is not None else folder / "model.onnx"
    if path.is_dir():
        path = path / "model.onnx"
    if path.suffix != ".onnx":
        raise OnnxExportError(f"--out {path} is not an .onnx file: name the file to write model.onnx or another *.onnx")
    if path.exists() and not path.is_file():
        raise OnnxExportError(f"--out {path} exists and is not a file: give another path")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OnnxExportError(
            f"cannot make the folder {parent} for --out ({exc.strerror or exc}): give another path"
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OnnxExportError(f"the folder {parent} of --out is not writable: give a path you can write to")
    return path


def _on_full_disk(write: Any, path: Path) -> None:
    """Run `write()`; a full disk anywhere in its error's chain is said in one line naming `path`."""
    try:
        write()
    except (OnnxExportError, OSError) as exc:
        cause: BaseException | None = exc
        while cause is not None and not (isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise OnnxExportError(
            f"no space left writing {path} ({cause.strerror}): free some space and export again (nothing was replaced)"
        ) from None


def _example(batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """What the graph is traced with: the largest batch, as `trace_example` shapes it."""
    return trace_example(max(batches, key=lambda b: next(iter(b.values())).shape[0]))


def trace_example(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`inputs` cut or repeated to `EXPORT_BATCH` rows, and texts of one token each repeated to two: torch.export
    specialises an axis of size 1, so the graph is traced where its dynamic axes are at least 2 and runs at any."""
    example = {k: v[:EXPORT_BATCH] for k, v in inputs.items()}
    if next(iter(example.values())).shape[0] < EXPORT_BATCH:
        example = {k: v.repeat(EXPORT_BATCH, *(1,) * (v.dim() - 1)) for k, v in example.items()}
    if "pixel_values" not in example and next(iter(example.values())).shape[1] == 1:
        example = {k: v.repeat(1, 2) for k, v in example.items()}
    return example
