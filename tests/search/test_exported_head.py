"""What a run reports is what it ships: `chosen/` carries the head the front was scored with, and scores as reported.

Tiny random-weight models from the hub's own configs (ViT, a ViT classifier, DeiT, DINOv2, DINOv2 with registers,
CLIP) run the real command on a made-up image dataset. With the ridge probe (the default) `chosen/` must be the
task's Transformers classifier holding the probe, and in a fresh process where toast cannot be imported,
`pipeline("image-classification")` must score the test split exactly as `front.json` reports `chosen`; the same
with `--probe adam` (one seed exported), with `--head original` (the source's own classifier, untouched), and for a
plan exported afterwards with `toast-search export RUN --plan`. CLIP's classifier reads other features than the
probe: its probe is a classifier on the pooled features that `CompressedModel.from_pretrained` applies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_main
from safetensors import safe_open
from test_hub_layouts import HUB, IMAGENET_MEAN, IMAGENET_STD
from test_plain_checkpoint import VIT_BASE, _save_source, _shrunk, _sources, _vision_processor
from test_zero_shot import save_tiny_clip

from toast.data import iter_batches, load_split
from toast.models import CompressedModel

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

DEIT = (  # facebook/deit-base-distilled-patch16-224 as published, loaded as its backbone (the class with one head)
    {
        "architectures": ["DeiTModel"],
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": 16,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 768,
        "image_size": 224,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-12,
        "model_type": "deit",
        "num_attention_heads": 12,
        "num_channels": 3,
        "num_hidden_layers": 12,
        "patch_size": 16,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.19.0.dev0",
    },
    {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_processor_type": "DeiTImageProcessor",
        "image_std": IMAGENET_STD,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": 256, "width": 256},
    },
)
COLOURS = {"0": "r", "1": "g", "2": "b"}  # the dataset's ClassLabel names
SMALL = ["--calib-samples", "16", "--probe-samples", "40", "--eval-samples", "12", "--device", "cpu", "--no-progress"]
DEMO_SMALL = ["--calib-samples", "32", "--probe-samples", "200", "--eval-samples", "64", "--no-progress"]
PLANS = ["--plan", "1→2:identity", "--plan", "0→1:identity,2→3:identity", "--budget-fraction", "0.9"]
#: family case -> (source, extra flags, the Transformers class chosen/ must be)
CASES = {
    "vit": ("vit", [], "ViTForImageClassification"),
    "vit-cls": ("vit-cls", [], "ViTForImageClassification"),  # 1000 ImageNet classes replaced by the probe's 3
    "deit": ("deit", [], "DeiTForImageClassification"),
    "dinov2": ("dinov2", [], "Dinov2ForImageClassification"),
    "dinov2-reg": ("dinov2-reg", [], "Dinov2WithRegistersForImageClassification"),
    "vit-adam": ("vit", ["--probe", "adam"], "ViTForImageClassification"),
    "vit-original": ("vit-cls3", ["--head", "original"], "ViTForImageClassification"),
}

# Scores every model folder of the manifest with Transformers alone, where toast cannot be imported.
CHECK = r"""
import importlib.util, json, sys

sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in type(f).__module__ and "__editable__" not in repr(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in repr(h)]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
sys.path_importer_cache.clear()
out = {"toast_spec": repr(importlib.util.find_spec("toast"))}

import datasets, torch, transformers as T

manifest = json.loads(open(sys.argv[1]).read())
for case, spec in manifest["folders"].items():
    test = datasets.load_from_disk(spec["dataset"])
    test = test["test"] if isinstance(test, datasets.DatasetDict) else test
    names = test.features["label"].names
    images, labels = list(test[spec["column"]]), test["label"]
    folder = spec["dir"]
    pipe = T.pipeline("image-classification", model=folder)
    got = pipe(images, top_k=1)
    model = T.AutoModelForImageClassification.from_pretrained(folder)
    out[case] = {
        "accuracy": 100 * sum(g[0]["label"] == names[y] for g, y in zip(got, labels)) / len(labels),
        "class": type(model).__name__,
        "pipeline_class": type(pipe.model).__name__,
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
    }
out["toast_modules"] = sorted(m for m in sys.modules if m == "toast" or m.startswith("toast."))
open(manifest["result"], "w").write(json.dumps(out))
"""


def front(run: Path) -> dict:
    return json.loads((run / "front.json").read_text())


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_dirs) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    hub = _sources()
    three = {str(i): name for i, name in enumerate(COLOURS.values())}
    vit_cls3 = _shrunk({**VIT_BASE[0], "id2label": three, "label2id": {v: int(k) for k, v in three.items()}})
    specs = {
        "vit": hub["vit"],
        "vit-cls": hub["vit-cls"],
        "vit-cls3": (vit_cls3, _vision_processor(VIT_BASE[1])),
        "deit": (_shrunk(DEIT[0]), _vision_processor(DEIT[1])),
        "dinov2": hub["dinov2"],
        "clip": hub["clip"],
    }
    out = {name: _save_source(name, *spec, root / name) for name, spec in specs.items()}
    out["dinov2-reg"] = tiny_dirs["dinov2-reg"]
    assert HUB  # the configs above are the hub's (test_hub_layouts)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sources, image_dataset_dir) -> dict[str, dict]:
    """Every case run once (two identity plans, a budget that takes either), then every chosen/ and the plan
    exported afterwards scored in one toast-free process."""
    root = tmp_path_factory.mktemp("runs")
    cache = root / "cache"
    done: dict[str, dict] = {}

    def run(case: str, source: str, *extra: str) -> dict:
        out = root / case
        args = ["--model", str(sources[source]), "--dataset", str(image_dataset_dir), "--cache-dir", str(cache)]
        code, stdout, stderr = run_main([*args, "--out", str(out), *SMALL, *extra])
        assert code == 0, stderr
        done[case] = {"out": out, "stdout": stdout, "args": args}
        return done[case]

    for case, (source, extra, _) in CASES.items():
        run(case, source, *PLANS, *extra)
    run("clip", "clip", *PLANS)
    # no budget: nothing is exported, and the run says how to export a plan afterwards
    unbudgeted = run("no-budget", "vit", "--plan", "1→2:identity", "--plan", "0→2:linear", "--max-removed", "2")
    code, stdout, stderr = run_main(["export", str(unbudgeted["out"]), "--plan", "0→1:identity"])
    assert code == 0, stderr
    unbudgeted["export_stdout"] = stdout
    # the demo (demo-vit on digits, its default budget), as the issue reported it: 2→4:identity
    demo = root / "demo"
    code, stdout, stderr = run_main(
        [
            "--out",
            str(demo),
            "--plan",
            "2→4:identity",
            "--budget-fraction",
            "0.85",
            "--cache-dir",
            str(cache),
            *DEMO_SMALL,
        ]
    )
    assert code == 0, stderr
    done["demo"] = {"out": demo, "stdout": stdout}
    load_split("digits", "test").dataset.save_to_disk(str(root / "digits-test"))

    def folder(path: Path, dataset: Path = image_dataset_dir, column: str = "img") -> dict:
        return {"dir": str(path), "dataset": str(dataset), "column": column}

    folders = {case: folder(done[case]["out"] / "chosen") for case in CASES}
    folders["exported"] = folder(unbudgeted["out"] / "export" / "0-1-identity")
    folders["demo"] = folder(demo / "chosen", root / "digits-test", "image")
    manifest = {"folders": folders, "result": str(root / "result.json")}
    (root / "manifest.json").write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CHECK, str(root / "manifest.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {**done, "result": json.loads((root / "result.json").read_text()), "root": root}


def test_the_check_process_cannot_import_toast(runs):
    assert runs["result"]["toast_spec"] == "None"
    assert runs["result"]["toast_modules"] == []


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_scores_the_reported_accuracy(runs, case):
    """Transformers' own pipeline, on the whole test split: exactly front.json's chosen accuracy."""
    doc, got = front(runs[case]["out"]), runs["result"][case]
    chosen = doc["chosen"]
    assert chosen is not None and doc["chosen_format"] == "plain"
    assert got["accuracy"] == chosen["accuracy"]
    assert got["class"] == got["pipeline_class"] == CASES[case][2]
    meta = json.loads((runs[case]["out"] / "chosen" / "toast.json").read_text())
    assert meta["scores"]["accuracy"] == chosen["accuracy"] and meta["head"] == doc["head"]
    if "--head" not in CASES[case][1]:
        assert got["id2label"] == COLOURS  # the dataset's class names


@pytest.mark.parametrize("case", list(CASES))
def test_front_json_and_the_console_name_the_head(runs, case):
    doc, stdout = front(runs[case]["out"]), runs[case]["stdout"]
    head = doc["head"]
    n_test = 20  # conftest's image_dataset_dir: 40 train, 20 test samples
    assert head["scored_on"] == f"{n_test} test samples of {runs[case]['args'][3]}" and head["exported"] is True
    if case == "vit-original":
        assert head["kind"] == "original" and "probe" not in head
        assert "accuracy: the source model's own classifier" in stdout
    else:
        assert head["kind"] == "probe" and head["probe"] == ("adam" if case == "vit-adam" else "ridge")
        assert head["fitted_on"].startswith("40 train samples of ")
        assert f"chosen/ carries it as its {CASES[case][2]} classifier" in stdout
    assert f"scored on {n_test} test samples" in stdout


@pytest.mark.parametrize("case", ["dinov2", "dinov2-reg"])
def test_dinov2_reads_the_probe_in_the_cls_half(runs, case):
    with safe_open(str(runs[case]["out"] / "chosen" / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("classifier.weight")
    assert tuple(weight.shape) == (3, 64)
    assert torch.count_nonzero(weight[:, 32:]) == 0 and torch.count_nonzero(weight[:, :32]) > 0


def test_adam_exports_one_seed_and_reports_it(runs):
    doc = front(runs["vit-adam"]["out"])
    assert doc["head"]["seed"] == 0 and "accuracy_std" not in doc["chosen"]
    assert "seed 0's probe" in runs["vit-adam"]["stdout"]


def test_head_original_exports_the_source_classifier(runs, sources):
    with safe_open(str(sources["vit-cls3"] / "model.safetensors"), "pt") as f:
        original = {k: f.get_tensor(k) for k in ("classifier.weight", "classifier.bias")}
    with safe_open(str(runs["vit-original"]["out"] / "chosen" / "model.safetensors"), "pt") as f:
        for key, value in original.items():
            torch.testing.assert_close(f.get_tensor(key), value, rtol=0, atol=0)
    assert runs["result"]["vit-original"]["id2label"] == COLOURS


def test_clip_carries_the_probe_beside_its_plain_checkpoint(runs, image_dataset_dir):
    """CLIPForImageClassification reads the mean of the patch tokens, not the probe's features: chosen/ stays a plain
    CLIPVisionModel, the probe is a classifier file that CompressedModel.from_pretrained applies, scoring as reported."""
    out = runs["clip"]["out"]
    doc = front(out)
    assert doc["head"]["kind"] == "probe" and doc["head"]["exported"] is True
    assert "CLIPForImageClassification" in doc["head"]["note"]
    meta = json.loads((out / "chosen" / "toast.json").read_text())
    assert meta["layout"] == "plain" and meta["classifier"]["file"] == "classifier.safetensors"
    model = CompressedModel.from_pretrained(out / "chosen")
    test = load_split(str(image_dataset_dir), "test")
    hits = 0
    with torch.inference_mode():
        for chunk, inputs in iter_batches(test, list(range(len(test))), model_processor(out / "chosen"), 32):
            hits += int((model(**inputs).argmax(1).numpy() == test.labels[chunk]).sum())
    assert 100 * hits / len(test) == doc["chosen"]["accuracy"]
    assert "CompressedModel.from_pretrained applies" in runs["clip"]["stdout"]


def test_zero_shot_classes_are_exported_as_a_classifier(tmp_path, image_dataset_dir):
    """`--head zero-shot`: the visual projection and the class embeddings folded into one classifier on the pooled
    features; its argmax is CLIP's, so the exported model scores what front.json reports."""
    out = tmp_path / "run"
    args = ["--model", str(save_tiny_clip(tmp_path / "clip")), "--dataset", str(image_dataset_dir), "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--head", "zero-shot", "--prompts", "short", *SMALL, *PLANS]
    code, stdout, stderr = run_main(args)
    assert code == 0, stderr
    doc = front(out)
    assert doc["head"]["kind"] == "zero-shot" and doc["head"]["exported"] is True
    model = CompressedModel.from_pretrained(out / "chosen")
    test = load_split(str(image_dataset_dir), "test")
    hits = 0
    with torch.inference_mode():
        for chunk, inputs in iter_batches(test, list(range(len(test))), model_processor(out / "chosen"), 32):
            hits += int((model(**inputs).argmax(1).numpy() == test.labels[chunk]).sum())
    assert 100 * hits / len(test) == doc["chosen"]["accuracy"]
    assert model.config.id2label == {0: "r", 1: "g", 2: "b"} and "zero-shot CLIP classes" in stdout


def model_processor(folder: Path):
    import transformers as T

    return T.AutoImageProcessor.from_pretrained(folder)


def test_the_demo_ships_what_it_reports(runs):
    """The issue's case: the demo's 2→4:identity, scored by Transformers' pipeline on the 450 digits test images."""
    doc = front(runs["demo"]["out"])
    assert doc["chosen"]["plan"] == "2→4:identity" and doc["chosen_format"] == "plain"
    assert doc["head"]["scored_on"] == "450 test samples of digits"
    got = runs["result"]["demo"]
    assert got["accuracy"] == doc["chosen"]["accuracy"] and got["class"] == "ViTForImageClassification"


def test_a_run_without_budget_says_how_to_export(runs):
    run = runs["no-budget"]
    assert not (run["out"] / "chosen").exists() and front(run["out"])["chosen"] is None
    line = next(x for x in run["stdout"].splitlines() if x.startswith("no budget given"))
    assert "nothing was exported" in line and f"toast-search export {run['out']} --plan " in line
    assert front(run["out"])["head"]["exported"] is False


def test_export_plan_writes_the_plan_with_its_head_and_scores(runs):
    run = runs["no-budget"]
    folder = run["out"] / "export" / "0-1-identity"
    meta = json.loads((folder / "toast.json").read_text())
    assert meta["plan"]["spans"] == [[0, 1, "identity"]] and meta["layout"] == "plain"
    assert meta["head"]["kind"] == "probe" and meta["head"]["scored_on"].startswith("20 test samples")
    assert {"accuracy", "gflops", "params", "fidelity"} <= set(meta["scores"])
    assert runs["result"]["exported"]["accuracy"] == meta["scores"]["accuracy"]
    assert f"-> {folder}" in run["export_stdout"] and "plain Transformers checkpoint" in run["export_stdout"]


def one_line_error(args: list[str]) -> str:
    code, _, err = run_main(args)
    assert code == 2 and err.startswith("toast-search: error: ") and err.count("\n") == 1, err
    return err


def test_export_plan_refusals_are_one_line(runs, tmp_path):
    run = str(runs["no-budget"]["out"])
    assert "exists and is not empty" in one_line_error(["export", run, "--plan", "0→1:identity"])
    (tmp_path / "file").write_text("x")
    assert "is a file" in one_line_error(["export", run, "--plan", "0→1:identity", "--out", str(tmp_path / "file")])
    assert "not in the run's search space" in one_line_error(["export", run, "--plan", "0→1:mlp"])
    assert "--max-removed 2" in one_line_error(["export", run, "--plan", "0→3:identity"])
    assert "not a run directory" in one_line_error(["export", str(tmp_path), "--plan", "0→1:identity"])
    assert "--plan" in one_line_error(["export", run])
    assert not (tmp_path / "out").exists()


def test_the_probe_fold_is_exact():
    """W = coef/scale, b = intercept - (mean/scale)·coefᵀ gives the ridge probe's decision values."""
    from toast.models._head import LinearHead
    from toast.objectives._probes import AdamProbe, RidgeProbe

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (60, 5)) * np.array([1, 10, 0.1, 1, 5])
    y = rng.integers(0, 4, 60)
    for probe in (RidgeProbe().fit(x, y), AdamProbe(standardize=True).fit(x, y)):
        head = LinearHead.from_probe(probe, ["a", "b", "c", "d"])
        np.testing.assert_allclose(head.logits(x), probe.decision_function(x), rtol=1e-10, atol=1e-10)
        assert head.names == ("a", "b", "c", "d") and head.labels == (0, 1, 2, 3)


def test_a_tie_broken_otherwise_in_float32_is_said():
    from toast.search._export import Export

    head = {
        "kind": "probe",
        "probe": "ridge",
        "fitted_on": "40 train samples of d",
        "scored_on": "20 test samples of d",
    }
    export = Export(Path("chosen"), {"accuracy": 95.0}, {**head, "exported": True, "as": "its X classifier"}, 100.0, "")
    first, second = export.lines()
    assert first.startswith("accuracy: a ridge probe fitted on 40 train samples of d, scored on 20 test samples of d")
    assert "chosen/ carries it as its X classifier" in first
    assert "95.00%" in second and "100.00%" in second and "near-ties" in second
    assert Export(Path("chosen"), {"accuracy": 95.0}, head, 95.0, "").lines()[1:] == []
