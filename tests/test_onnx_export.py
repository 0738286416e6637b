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
from conftest import example_inputs

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

from toast.search import CompressedModel, load_model  # noqa: E402
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


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _fitted(lm, plan: Plan) -> dict:
    """Every span of `plan` fitted on the tiny model's own hidden states (trained kinds: a few steps)."""
    with torch.no_grad():
        states, mask = CompressedModel.from_model(lm, Plan((), lm.num_blocks)).hidden_states(
            example_inputs("bert" if lm.family.name == "bert" else "vit", batch=16)
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
    assert isinstance(_dims(graph.output[0])[0], str)
    assert graph.output[0].name == report.output_name
    assert (report.output_name == "logits") == (family == "vit-cls")
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
    assert "opset 11 is too old" in _one_line_error(
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
