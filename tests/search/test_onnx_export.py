"""`toast-search export --format onnx`: every family (tiny configs) and every translator kind round-trips through
ONNX with a dynamic batch axis (and sequence axis for text), onnxruntime agrees with PyTorch within 1e-4, a run
directory is checked on its own test samples, and bad inputs or a missing extra are one-line errors (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NO_TOAST, example_inputs, save_tiny

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

from toast.models import CompressedModel, load_model
from toast.search._onnx import ONNX_EXTRA_HINT, OnnxExportError, export_onnx  # noqa: E402
from toast.search.cli import main  # noqa: E402
from toast.spaces import ArraySpanData, PairStats, Plan, create_translator, list_translators  # noqa: E402

#: One plan per family; together they use every registered kind (checked below), so a new kind must be added here.
PLANS = {
    "vit": "0→1:lowrank:4,2→3:mlp",
    "vit-cls": "-1→0:linear,1→2:resmlp",  # a classification head: the logits are compared
    "dinov2": "0→1:folded,2→3:identity",  # inputs passed on only: saved as a plain Transformers checkpoint
    "clip": "0→1:ridge,2→3:identity",
    # text: dynamic batch and sequence axes, padded batches; `linear` on post-norm states (a LayerNorm's null
    # direction, which the solver drops: fitted on it, weights ~2000 amplified float32 rounding past 1e-4)
    "bert": "-1→0:identity,1→3:linear",
}
TOLERANCE = 1e-4


def _fitted(lm, plan: Plan) -> dict:
    """Every span of `plan` fitted on the tiny model's own hidden states (trained kinds: a few steps)."""
    with torch.no_grad():
        states, mask = CompressedModel.from_model(lm, Plan((), lm.num_blocks)).hidden_states(
            example_inputs(lm.family.name if lm.family.name in ("bert", "llama") else "vit", batch=16)
        )
    real = np.ones(states[0].shape[:2], bool).reshape(-1) if mask is None else mask.reshape(-1).bool().numpy()
    out = {}
    for span in plan.spans:
        x = states[span.source].reshape(-1, lm.hidden_size).numpy()[real]
        y = states[span.target].reshape(-1, lm.hidden_size).numpy()[real]
        params = {"steps": 5} if span.kind in ("mlp", "resmlp") else {}
        data = ArraySpanData(x, y, branch=PairStats.from_arrays(x, y))
        out[span] = create_translator(span.kind, **params).fit_span(data)
    return out


def _saved(tiny_dirs, family: str, directory: Path) -> Path:
    lm = load_model(str(tiny_dirs[family]))
    plan = Plan.parse(PLANS[family], lm.num_blocks)
    translators = _fitted(lm, plan) if any(s.kind != "identity" for s in plan.spans) else {}
    return CompressedModel.from_model(lm, plan, translators).save_pretrained(directory, processor=lm.processor)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_the_plans_cover_every_registered_kind():
    used = {s.kind.partition(":")[0] for text in PLANS.values() for s in Plan.parse(text, 4).spans}
    assert used == set(list_translators())


@pytest.mark.parametrize("family", list(PLANS))
def test_every_family_and_kind_round_trips(family, tiny_dirs, tmp_path):
    folder = _saved(tiny_dirs, family, tmp_path / "model")
    report = export_onnx(folder)
    assert report.path == folder / "model.onnx" and report.path.is_file()
    assert report.max_abs_diff <= TOLERANCE and report.batch_sizes == (1, 4)
    assert report.providers == ("CPUExecutionProvider",) and report.opset >= 18
    assert "synthetic" in report.inputs  # a folder outside a run: the saved processor on synthetic inputs
    graph = onnx.load(str(report.path)).graph
    inputs = {i.name: _dims(i) for i in graph.input}
    if family == "bert":
        assert set(inputs) >= {"input_ids", "attention_mask"}
        assert all(dims == ["batch", "sequence"] for dims in inputs.values()), inputs
        assert report.dynamic_axes == ("batch", "sequence")
    else:
        assert inputs == {"pixel_values": ["batch", 3, 32, 32]} and report.dynamic_axes == ("batch",)
    assert all(isinstance(_dims(o)[0], str) for o in graph.output)
    assert tuple(o.name for o in graph.output) == report.output_names
    if family == "bert":  # what optimum and sentence-transformers read, not BERT's tanh pooler
        assert report.output_names == ("last_hidden_state", "sentence_embedding")
        assert [_dims(o) for o in graph.output] == [["batch", "sequence", 32], ["batch", 32]]
    else:
        assert (report.output_names == ("logits",)) == (family == "vit-cls")
    print(f"{family} {PLANS[family]}: max abs diff {report.max_abs_diff:.3g}")


@pytest.fixture(scope="module")
def run_dir(tiny_dirs, image_dataset_dir, tmp_path_factory) -> Path:
    """A real run directory with chosen/: two given plans of the tiny ViT scored on a made-up dataset."""
    out = tmp_path_factory.mktemp("run") / "run"
    args = ["--model", str(tiny_dirs["vit"]), "--dataset", str(image_dataset_dir), "--out", str(out)]
    small = ["--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"]
    plans = ["--plan", "2→3:linear", "--plan", "1→3:identity", "--budget-fraction", "0.9", "--no-progress"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code = main([*args, *small, "--cache-dir", str(out.parent / "cache"), *plans])
    assert code == 0 and (out / "chosen").is_dir()
    return out


def test_cli_exports_a_run_on_its_own_samples(run_dir, image_dataset_dir, tmp_path, capsys):
    out = tmp_path / "deploy" / "chosen.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and f"wrote {out} (opset 18; inputs pixel_values; dynamic batch axis)" in printed
    assert f"of 5 samples of {image_dataset_dir}" in printed  # the run's test split, not synthetic images
    diff = float(printed.split("max abs difference ")[1].split()[0])
    assert diff <= TOLERANCE
    # the same inputs when chosen/ itself is given; the default file is model.onnx beside its weights
    report = export_onnx(run_dir / "chosen")
    assert report.path == run_dir / "chosen" / "model.onnx" and "synthetic" not in report.inputs
    print(f"run {run_dir}: max abs diff {diff:.3g}, {report.max_abs_diff:.3g}")


def test_a_disagreeing_export_is_an_error_and_not_kept(tiny_dirs, tmp_path, monkeypatch):
    import toast.search._onnx as onnx_export

    folder = _saved(tiny_dirs, "clip", tmp_path / "model")
    monkeypatch.setattr(onnx_export, "compare", lambda path, model, batches: float("nan"))
    with pytest.raises(
        OnnxExportError, match=r"differs from PyTorch by nan .*not written \(PyTorch float32 vs float64"
    ):
        export_onnx(folder)
    assert not (folder / "model.onnx").exists()


def _one_line_error(capsys, argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("toast-search: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_inputs_are_one_line_errors(tiny_dirs, run_dir, tmp_path, capsys):
    assert "no such file or folder" in _one_line_error(capsys, ["export", str(tmp_path / "nope"), "--format", "onnx"])
    (tmp_path / "file.txt").write_text("x")
    assert "is a file" in _one_line_error(capsys, ["export", str(tmp_path / "file.txt"), "--format", "onnx"])
    assert "--format" in _one_line_error(capsys, ["export", str(run_dir), "--format", "tflite"])
    assert "--format" in _one_line_error(capsys, ["export", str(run_dir)])
    assert "give --opset between 18 and" in _one_line_error(
        capsys, ["export", str(run_dir), "--format", "onnx", "--opset", "11"]
    )
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["export", str(tmp_path / "empty"), "--format", "onnx"])  # not a model folder
    bare_run = tmp_path / "bare-run"
    bare_run.mkdir()
    (bare_run / "settings.json").write_text((run_dir / "settings.json").read_text())
    err = _one_line_error(capsys, ["export", str(bare_run), "--format", "onnx"])
    assert "has no chosen/" in err and "budget" in err and "model folder" in err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in (run_dir / "chosen").iterdir():
        if f.suffix != ".onnx":
            (corrupt / f.name).write_bytes(f.read_bytes())
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "corrupt" in _one_line_error(capsys, ["export", str(corrupt), "--format", "onnx"])
    assert not (corrupt / "model.onnx").exists()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_an_export_never_writes_over_a_run_file_nor_a_good_onnx(run_dir, tmp_path, capsys, monkeypatch):
    """`--out` naming the run's study or settings is refused before any work; an unsupported opset, an export that
    fails or a full disk after a good export leave the good model.onnx as it was, and no temporary file."""
    import errno

    import toast.search._onnx as onnx_export

    for name in ("study.journal", "settings.json"):
        before = (run_dir / name).read_bytes()
        err = _one_line_error(capsys, ["export", str(run_dir), "--format", "onnx", "--out", str(run_dir / name)])
        assert "not an .onnx file" in err and (run_dir / name).read_bytes() == before
    good = tmp_path / "good"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(good / "model.onnx")]) == 0
    capsys.readouterr()
    kept = _files(good)
    assert "give --opset between 18 and" in _one_line_error(
        capsys, ["export", str(run_dir), "--format", "onnx", "--out", str(good / "model.onnx"), "--opset", "999"]
    )
    assert _files(good) == kept

    def full_disk(model, example, path, opset):
        path.write_bytes(b"\x08\x01partial")
        raise OnnxExportError("torch.onnx.export failed") from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx_export, "_export", full_disk)
    err = _one_line_error(capsys, ["export", str(run_dir), "--format", "onnx", "--out", str(good / "model.onnx")])
    assert "no space left" in err and "nothing was replaced" in err
    assert _files(good) == kept and sorted(p.name for p in good.iterdir()) == sorted(kept)
    monkeypatch.setattr(onnx_export, "compare", lambda path, model, batches: float("nan"))
    monkeypatch.undo()
    monkeypatch.setattr(onnx_export, "compare", lambda path, model, batches: float("nan"))
    _one_line_error(capsys, ["export", str(run_dir), "--format", "onnx", "--out", str(good / "model.onnx")])
    assert _files(good) == kept and sorted(p.name for p in good.iterdir()) == sorted(kept)


def test_an_unwritable_out_is_blamed_on_the_folder(run_dir, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere: a path under a file stands in for it
        (tmp_path / "a-file").write_text("x")
        err = _one_line_error(
            capsys, ["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "a-file" / "m.onnx")]
        )
        assert "cannot make the folder" in err and "torch.onnx" not in err
        return
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    err = _one_line_error(capsys, ["export", str(run_dir), "--format", "onnx", "--out", str(locked / "m.onnx")])
    assert "not writable" in err and "torch.onnx" not in err


def test_missing_extra_is_a_one_line_install_hint(run_dir):
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from toast.search.cli import main\n"
        f"sys.exit(main(['export', {str(run_dir)!r}, '--format', 'onnx']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"toast-search: error: {ONNX_EXTRA_HINT}\n"
    assert ONNX_EXTRA_HINT == "ONNX export needs the onnx extra: pip install 'toast-search[onnx]'"


# ---- causal LMs: the logits and the decoding step with its KV cache, generated with in a process without toast ----

GENERATE = (
    NO_TOAST
    + r"""
import numpy as np, onnxruntime as ort

spec = json.loads(open(sys.argv[1]).read())
full = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
step = ort.InferenceSession(spec["step"], providers=["CPUExecutionProvider"])
prompt = np.array(spec["prompt"], dtype=np.int64)
ids = prompt  # greedy, every token recomputed by model.onnx
for _ in range(spec["new"]):
    logits = full.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    ids = np.concatenate([ids, logits[:, -1:].argmax(-1)], axis=1)
past_inputs = [i for i in step.get_inputs() if i.name.startswith("past_key_values.")]
past = {i.name: np.zeros((prompt.shape[0], i.shape[1], 0, i.shape[3]), np.float32) for i in past_inputs}
cached, new, last = prompt, prompt, None  # greedy with the KV cache: a prefill (empty past), then one token a step
for _ in range(spec["new"]):
    logits, *present = step.run(None, {"input_ids": new, **past})
    past = {i.name: p for i, p in zip(past_inputs, present)}
    new = logits[:, -1:].argmax(-1)
    cached = np.concatenate([cached, new], axis=1)
    last = logits[:, -1]
recomputed = full.run(["logits"], {"input_ids": cached[:, :-1], "attention_mask": np.ones_like(cached[:, :-1])})[0]
print(json.dumps({"full": ids.tolist(), "cached": cached.tolist(), "gap": float(np.abs(recomputed[:, -1] - last).max()),
                  "past": [p.shape[2] for p in past.values()]}))
"""
)


def test_a_causal_lm_exports_its_decoding_step_and_generates_without_toast(tmp_path):
    """A tiny Llama with a fitted linear span: model.onnx (logits) and model_with_past.onnx (the step with its KV
    cache) both written and checked; in a process without toast, greedy generation with the cache gives the tokens
    that recomputing every token with model.onnx gives, and the same logits."""
    lm = load_model(str(save_tiny("llama", tmp_path / "llama")))
    plan = Plan.parse("0→1:linear", lm.num_blocks)
    folder = CompressedModel.from_model(lm, plan, _fitted(lm, plan)).save_pretrained(tmp_path / "model")
    report = export_onnx(folder)
    assert report.step_path == folder / "model_with_past.onnx" and report.step_path.is_file()
    assert report.step_max_abs_diff <= TOLERANCE and report.max_abs_diff <= TOLERANCE
    assert "model_with_past.onnx (the decoding step" in report.summary()
    graph = onnx.load(str(report.step_path)).graph
    kept = CompressedModel.from_pretrained(folder).cache_layers()  # the saved model's own layer indices
    assert len(kept) == lm.num_blocks - 1
    assert [i.name for i in graph.input] == ["input_ids"] + [
        f"past_key_values.{b}.{kv}" for b in kept for kv in ("key", "value")
    ]
    assert [o.name for o in graph.output] == ["logits"] + [f"present.{b}.{kv}" for b in kept for kv in ("key", "value")]
    assert _dims(graph.input[0]) == ["batch", "sequence"] and _dims(graph.input[1])[0::2] == ["batch", "past"]
    assert report.step_note is None  # full attention only
    _generates_as_recomputed(report, len(kept), tmp_path)


def _generates_as_recomputed(report, entries: int, tmp_path, prompt: int = 5, new: int = 6) -> None:
    """In a process without toast: greedy generation of `new` tokens after `prompt` ones with the step graph and its
    cache gives the tokens and last logits of recomputing every token with model.onnx; every cache entry has them all."""
    from test_sentence import run_without_toast

    ids = example_inputs("llama", batch=2)["input_ids"][:, :prompt]
    spec = {"onnx": str(report.path), "step": str(report.step_path), "prompt": ids.tolist(), "new": new}
    got = run_without_toast(GENERATE, spec, tmp_path)
    assert got["cached"] == got["full"] and len(got["cached"][0]) == prompt + new
    assert got["gap"] <= TOLERANCE and got["past"] == [prompt + new - 1] * 2 * entries


def test_a_sliding_window_lm_generates_past_its_window_without_toast(tmp_path):
    """Gemma 2 (sliding-window layers alternating with global ones; the tiny config's window is 4 tokens) without its
    first block: the step graph's cache keeps every token of the sliding layers (the mask keeps the window), so 11
    tokens, well past the window, generate with the cache as recomputed by model.onnx, in a process without toast;
    the export says what the sliding layers' cache does."""
    lm = load_model(str(save_tiny("gemma2", tmp_path / "gemma2")))
    assert lm.config.sliding_window == 4
    plan = Plan.parse("0→1:identity", lm.num_blocks)
    folder = CompressedModel.from_model(lm, plan, {}).save_pretrained(tmp_path / "model")
    report = export_onnx(folder)
    assert report.step_path.is_file() and report.step_max_abs_diff <= TOLERANCE
    assert "sliding-window layers (blocks 0, 2)" in report.step_note  # the saved model numbers its own blocks
    assert report.step_note in report.summary()
    _generates_as_recomputed(report, len(plan.kept), tmp_path)


def test_an_axis_the_exporter_fixes_is_an_error_and_one_token_texts_are_traced_as_two(tmp_path):
    """torch.export can fix an axis that is 1 in the example without a word (Gemma 2's does): traced on one-token
    texts, the graph's sequence axis comes out fixed, which is an error naming it; `trace_example` traces such texts
    at two tokens, and the graph then runs at any length."""
    from toast.search._onnx import _export, trace_example

    lm = load_model(str(save_tiny("gemma2", tmp_path / "gemma2")))
    model = CompressedModel.from_model(lm, Plan.parse("0→1:identity", lm.num_blocks), {}).eval()
    one = {k: v[:2, :1] for k, v in example_inputs("llama", batch=2).items()}
    with pytest.raises(OnnxExportError, match=r"fixed the input_ids axis 1 \(at 1\), attention_mask axis 1") as info:
        _export(model, one, tmp_path / "fixed.onnx", None)
    assert "\n" not in str(info.value)
    _export(model, trace_example(one), tmp_path / "free.onnx", None)
    graph = onnx.load(str(tmp_path / "free.onnx")).graph
    assert [_dims(i) for i in graph.input] == [["batch", "sequence"]] * 2


# ---- text encoders: what sentence-transformers and optimum read, checked in a process without toast ----------

ORT_CHECK = (
    NO_TOAST
    + r"""
import numpy as np, onnxruntime as ort

manifest = json.loads(open(sys.argv[1]).read())
out = {}
for case, spec in manifest["cases"].items():
    session = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
    inputs = dict(np.load(spec["inputs"]))
    names = [o.name for o in session.get_outputs()]
    got = session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})
    np.savez(spec["onnx"] + ".ort.npz", **dict(zip(names, got)))
    out[case] = {"inputs": [i.name for i in session.get_inputs()], "outputs": names}
out["toast_modules"] = sorted(m for m in sys.modules if m == "toast" or m.startswith("toast."))
print(json.dumps(out))
"""
)

# optimum's ORTModelForFeatureExtraction and SentenceTransformer(..., backend="onnx") on the exported file
OPTIMUM_CHECK = (
    ORT_CHECK.split("manifest =")[0]
    + r"""
import torch
from optimum.onnxruntime import ORTModelForFeatureExtraction
from sentence_transformers import SentenceTransformer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread

manifest = json.loads(open(sys.argv[1]).read())
out = {}
for case, spec in manifest["cases"].items():
    if not spec["plain"]:
        continue
    inputs = {k: torch.from_numpy(v) for k, v in np.load(spec["inputs"]).items()}
    model = ORTModelForFeatureExtraction.from_pretrained(spec["folder"])
    hidden = model(**inputs).last_hidden_state.numpy()
    encoded = SentenceTransformer(spec["folder"], backend="onnx", device="cpu").encode(manifest["texts"])
    np.savez(spec["onnx"] + ".optimum.npz", last_hidden_state=hidden, sentence_embedding=encoded)
    out[case] = {"class": type(model).__name__}
out["toast_modules"] = sorted(m for m in sys.modules if m == "toast" or m.startswith("toast."))
print(json.dumps(out))
"""
)


def _export_text_cases(cases: dict[str, tuple[CompressedModel, Path]], root: Path) -> dict:
    """Export each saved text model to `<folder>/model.onnx` and store its test inputs: the manifest."""
    from test_sentence import TEXTS

    from toast.models import load_processor

    manifest = {"texts": TEXTS, "cases": {}}
    for case, (model, folder) in cases.items():
        report = export_onnx(folder)
        assert report.output_names == ("last_hidden_state", "sentence_embedding")
        assert report.max_abs_diff <= TOLERANCE
        enc = load_processor(str(folder), model.family)(TEXTS, padding=True, return_tensors="np")
        np.savez(folder / "inputs.npz", **{k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
        plain = (folder / "modules.json").is_file()
        manifest["cases"][case] = {
            "onnx": str(report.path),
            "inputs": str(folder / "inputs.npz"),
            "folder": str(folder),
        }
        manifest["cases"][case]["plain"] = plain
    return manifest


def _pytorch_outputs(model: CompressedModel, inputs_file: str) -> tuple[np.ndarray, np.ndarray]:
    batch = {k: torch.from_numpy(v) for k, v in np.load(inputs_file).items()}
    with torch.no_grad():
        hidden, mask, _ = model.run(batch)
        return model.family.normalize(model.final_norm, hidden).numpy(), model.features(batch).numpy()


def _check_text_exports(cases: dict, manifest: dict, result: dict) -> None:
    assert result["toast_modules"] == []
    for case, (model, _) in cases.items():
        spec = manifest["cases"][case]
        assert result[case]["outputs"] == ["last_hidden_state", "sentence_embedding"]
        assert set(result[case]["inputs"]) >= {"input_ids", "attention_mask"}
        got = np.load(spec["onnx"] + ".ort.npz")
        hidden, features = _pytorch_outputs(model, spec["inputs"])
        assert np.abs(got["last_hidden_state"] - hidden).max() <= TOLERANCE
        assert np.abs(got["sentence_embedding"] - features).max() <= TOLERANCE
        emb = got["sentence_embedding"]
        cos = (emb * features).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(features, axis=1)
        assert cos.min() >= 0.9999
        if model.sentence is not None and model.sentence.normalize:  # the source normalises: so does the graph
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def _optimum_python() -> str:
    """An interpreter with optimum's ONNX Runtime models: TOAST_OPTIMUM_PYTHON, else this one; skip without."""
    python = os.environ.get("TOAST_OPTIMUM_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import optimum.onnxruntime, sentence_transformers"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(
            "optimum's ONNX Runtime models are not installed (optimum-onnx 0.1 needs transformers < 4.58); "
            "set TOAST_OPTIMUM_PYTHON to an interpreter that has them"
        )
    return python


@pytest.fixture(scope="module")
def text_exports(tmp_path_factory):
    """A tiny sentence-transformers model (MiniLM's config and module files) compressed with an identity plan
    (plain: a sentence-transformers chosen/) and a linear one (toast format), exported and run by onnxruntime
    in a process where toast cannot be imported."""
    from test_sentence import IDENTITY_PLAN, TOAST_PLAN, run_without_toast, save_tiny_st

    root = tmp_path_factory.mktemp("text-onnx")
    lm = load_model(str(save_tiny_st("minilm", root / "source")))
    cases = {}
    for layout, text in (("plain", IDENTITY_PLAN), ("toast", TOAST_PLAN)):
        plan = Plan.parse(text, lm.num_blocks)
        model = CompressedModel.from_model(lm, plan, _fitted(lm, plan)).eval()
        cases[layout] = (model, model.save_pretrained(root / layout, processor=lm.processor))
    manifest = _export_text_cases(cases, root)
    return cases, manifest, run_without_toast(ORT_CHECK, manifest, root), root


def test_a_text_encoder_exports_the_scored_sentence_embedding(text_exports):
    cases, manifest, result, _ = text_exports
    _check_text_exports(cases, manifest, result)


def test_optimum_and_the_sentence_transformers_onnx_backend_load_the_export(text_exports):
    from test_sentence import run_without_toast

    cases, manifest, _, root = text_exports
    result = run_without_toast(OPTIMUM_CHECK, manifest, root, python=_optimum_python())
    assert result["toast_modules"] == [] and result["plain"]["class"] == "ORTModelForFeatureExtraction"
    got = np.load(manifest["cases"]["plain"]["onnx"] + ".optimum.npz")
    hidden, features = _pytorch_outputs(cases["plain"][0], manifest["cases"]["plain"]["inputs"])
    assert np.abs(got["last_hidden_state"] - hidden).max() <= TOLERANCE
    assert np.abs(got["sentence_embedding"] - features).max() <= TOLERANCE  # encode's batches: same texts


@pytest.mark.slow
def test_the_real_minilm_exports_its_sentence_embedding(tmp_path):
    """all-MiniLM-L6-v2 with two blocks removed: onnxruntime gives the normalised embedding the search scored."""
    from test_sentence import minilm_dir, run_without_toast

    lm = load_model(str(minilm_dir()))
    model = CompressedModel.from_model(lm, Plan.parse("-1→0:identity,2→3:identity", lm.num_blocks)).eval()
    cases = {"minilm": (model, model.save_pretrained(tmp_path / "chosen", processor=lm.processor))}
    manifest = _export_text_cases(cases, tmp_path)
    _check_text_exports(cases, manifest, run_without_toast(ORT_CHECK, manifest, tmp_path))
