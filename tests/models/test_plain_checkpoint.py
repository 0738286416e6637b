"""`chosen/` as a plain Transformers checkpoint, loaded where toast cannot be imported; the toast format refused.

Tiny models of every family from configs as the hub publishes them (sizes shrunk, random weights) and the
shipped demo-vit are compressed with an identity-only plan and a folded one (pre-norm families), saved, and
loaded in one fresh process where `import toast` fails, with `AutoModel`, `AutoModelForImageClassification`
and `pipeline("image-classification")`. Their outputs are compared here with the compressed model's. A plan
with a fitted `linear` span stays in the toast format, which every Transformers entry point refuses with a
message naming `CompressedModel.from_pretrained`, and which that loads with identical outputs.
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
import transformers as T
from conftest import NO_TOAST
from safetensors import safe_open
from test_hub_layouts import HUB

from toast.models import CompressedModel, load_model
from toast.models._plain import TOAST_MODEL_TYPE, checkpoint_layout, describe_checkpoint
from toast.spaces import FoldedTranslator, LinearTranslator, PairStats, Plan

TOL = 1e-5
TINY = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=4, image_size=32, patch_size=8)
VIT_BASE = HUB["google/vit-base-patch16-224"]
MINILM_CONFIG = {  # sentence-transformers/all-MiniLM-L6-v2's config.json as published
    "_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "transformers_version": "4.8.2",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}


def _shrunk(config: dict, **extra) -> dict:
    """A hub config with the sizes of a tiny model (every other field as published)."""
    out = {**config, **{k: v for k, v in TINY.items() if k in config or k == "num_hidden_layers"}, **extra}
    if "intermediate_size" in config:
        out["intermediate_size"] = 64
    return out


def _vision_processor(processor: dict) -> dict:
    out = dict(processor)
    for key in ("size", "crop_size"):
        if isinstance(out.get(key), int):
            out[key] = 32
        elif isinstance(out.get(key), dict):
            out[key] = {"shortest_edge": 36} if "shortest_edge" in out[key] else {"height": 32, "width": 32}
    return out


def _sources() -> dict[str, tuple[dict, dict | None]]:
    """name → (config.json, preprocessor_config.json or None for a tokenizer)."""
    vit_model = {k: v for k, v in VIT_BASE[0].items() if k not in ("id2label", "label2id")}
    clip, clip_processor = HUB["laion/CLIP-ViT-B-16-laion2B-s34B-b88K"]
    text = {**clip["text_config"], "hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    text.update(intermediate_size=64, vocab_size=100, projection_dim=16)
    clip = {**clip, "projection_dim": 16, "text_config": text, "vision_config": _shrunk(clip["vision_config"])}
    clip["vision_config"]["projection_dim"] = 16
    dinov2, dinov2_processor = HUB["facebook/dinov2-base"]
    return {
        "vit": (_shrunk({**vit_model, "architectures": ["ViTModel"]}), _vision_processor(VIT_BASE[1])),
        "vit-cls": (_shrunk(VIT_BASE[0]), _vision_processor(VIT_BASE[1])),
        "dinov2": (_shrunk(dinov2), _vision_processor(dinov2_processor)),
        "clip": (clip, _vision_processor(clip_processor)),
        "bert": (_shrunk(MINILM_CONFIG, vocab_size=100, max_position_embeddings=64), None),
    }


def _save_source(name: str, config_json: dict, processor_json: dict | None, folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config_json))
    config = T.AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = getattr(T, config.architectures[0])(config)
    if name == "dinov2":  # a layer scale that is not all ones, so the fold of γ into the checkpoint is tested
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in (p for n, p in model.named_parameters() if n.endswith("lambda1")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
    model.save_pretrained(folder)
    if processor_json is None:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]
        (folder / "vocab.txt").write_text("\n".join(vocab))
        T.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    else:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor_json))
    return folder


def _folded(d: int, seed: int) -> FoldedTranslator:
    """A fitted folded translator with a random (well-conditioned) map."""
    rng = np.random.default_rng(seed)
    t = FoldedTranslator()
    t.weight_ = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    t.bias_ = 0.1 * rng.standard_normal(d)
    t.solver_, t.ill_conditioned_ = "cholesky", False
    return t


def _linear(d: int, seed: int) -> LinearTranslator:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((80, d))
    return LinearTranslator().fit(PairStats.from_arrays(x, x @ (np.eye(d) + 0.1 * rng.standard_normal((d, d)))))


def _inputs(lm) -> dict[str, torch.Tensor]:
    """Three samples the family makes for a tiny model (text: one padded sequence)."""
    return lm.family.tiny_inputs(lm.config, batch=3, seed=1)


# every plan renumbers layers (block 0 or a middle block removed); folded spans fold into a kept block
PLANS = {
    4: {"identity": "-1→0:identity,1→2:identity", "folded": "-1→0:identity,1→2:folded"},
    6: {"identity": "0→2:identity,4→5:identity", "folded": "0→2:folded,3→4:identity"},  # demo-vit
}
PRE_NORM = {"vit", "vit-cls", "dinov2", "clip", "demo-vit"}
CASES = [f"{name}:{kind}" for name in ["vit", "vit-cls", "dinov2", "clip", "bert", "demo-vit"] for kind in PLANS[4]]
CASES = [c for c in CASES if c.endswith("identity") or c.split(":")[0] in PRE_NORM]
TOAST_CASES = ["vit-cls", "dinov2", "clip", "bert"]

# Loads every folder of the manifest with Transformers alone, in a process where any `import toast` fails.
CHECK = (
    NO_TOAST
    + r"""
try:
    import toast.search
    importable = True
except ImportError:
    importable = False

import numpy as np, torch, transformers as T
from PIL import Image

manifest = json.loads(open(sys.argv[1]).read())
out = {"toast_importable": importable}
for case, spec in manifest["plain"].items():
    x = torch.load(spec["inputs"])
    res = {}
    with torch.no_grad():
        model, info = T.AutoModel.from_pretrained(spec["dir"], output_loading_info=True)
        o = model.eval()(**x)
        res["auto"] = {"class": type(model).__name__, "layers": model.config.num_hidden_layers,
                       "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
                       "last": o.last_hidden_state, "pooler": getattr(o, "pooler_output", None)}
        if spec["head"]:
            model, info = T.AutoModelForImageClassification.from_pretrained(spec["dir"], output_loading_info=True)
            res["classifier"] = {"class": type(model).__name__, "missing": sorted(info["missing_keys"]),
                                 "logits": model.eval()(**x).logits}
            pipe = T.pipeline("image-classification", model=spec["dir"])
            image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
            pixels = pipe.image_processor(images=image, return_tensors="pt")["pixel_values"]
            scores = pipe(image, top_k=model.config.num_labels)
            res["pipeline"] = {"pixel_values": pixels, "scores": {s["label"]: s["score"] for s in scores}}
    out[case] = res
for case, folder in manifest["toast"].items():
    refused = {}
    for name, load in [
        ("AutoModel", lambda: T.AutoModel.from_pretrained(folder)),
        ("AutoModelForImageClassification", lambda: T.AutoModelForImageClassification.from_pretrained(folder)),
        ("pipeline", lambda: T.pipeline("image-classification", model=folder)),
        ("AutoConfig", lambda: T.AutoConfig.from_pretrained(folder)),
        ("class", lambda: getattr(T, manifest["classes"][case]).from_pretrained(folder)),
    ]:
        try:
            load()
            refused[name] = None
        except Exception as exc:
            refused[name] = f"{type(exc).__name__}: {exc}"
    out["toast:" + case] = refused
out["toast_modules"] = sorted(m for m in sys.modules if m == "toast" or m.startswith("toast."))
torch.save(out, manifest["result"])
"""
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every case compressed, saved and loaded once in the toast-free process: what each side computed."""
    root = tmp_path_factory.mktemp("plain")
    sources = {name: _save_source(name, *spec, root / "src" / name) for name, spec in _sources().items()}
    loaded = {name: load_model(str(folder)) for name, folder in sources.items()}
    loaded["demo-vit"] = load_model("demo-vit")
    cases, manifest = {}, {"plain": {}, "toast": {}, "classes": {}, "result": str(root / "result.pt")}
    for case in CASES:
        name, kind = case.split(":")
        lm = loaded[name]
        plan = Plan.parse(PLANS[lm.num_blocks][kind], lm.num_blocks)
        fitted = {s: _folded(lm.hidden_size, i) for i, s in enumerate(plan.spans) if s.kind == "folded"}
        model = CompressedModel.from_model(lm, plan, fitted).eval()
        folder = model.save_pretrained(
            root / case.replace(":", "-"), processor=lm.processor, extra={"scores": {"accuracy": 1.0}}
        )
        x = _inputs(lm)
        torch.save(x, folder / "inputs.pt")
        head = model.head_kind == "cls"
        cases[case] = {"model": model, "dir": folder, "inputs": x, "loaded": lm}
        manifest["plain"][case] = {"dir": str(folder), "inputs": str(folder / "inputs.pt"), "head": head}
    for name in TOAST_CASES:
        lm = loaded[name]
        plan = Plan.parse("0→2:linear,2→3:identity", lm.num_blocks)
        model = CompressedModel.from_model(lm, plan, {plan.spans[0]: _linear(lm.hidden_size, 0)}).eval()
        folder = model.save_pretrained(root / f"{name}-toast", processor=lm.processor)
        cases["toast:" + name] = {"model": model, "dir": folder, "inputs": _inputs(lm), "loaded": lm}
        manifest["toast"][name] = str(folder)
        manifest["classes"][name] = type(lm.model).__name__
    (root / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CHECK, str(root / "manifest.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cases, torch.load(root / "result.pt", weights_only=False)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


def test_the_check_process_cannot_import_toast(saved):
    _, result = saved
    assert result["toast_importable"] is False
    assert result["toast_modules"] == []


@pytest.mark.parametrize("case", CASES)
def test_automodel_loads_the_plain_checkpoint_with_the_compressed_outputs(saved, case):
    cases, result = saved
    model, folder, x = cases[case]["model"], cases[case]["dir"], cases[case]["inputs"]
    assert checkpoint_layout(folder) == "plain" and "plain Transformers" in describe_checkpoint(folder)
    auto = result[case]["auto"]
    k = len(model.plan.kept)
    assert auto["layers"] == k
    with torch.no_grad():
        h, _, _ = model.run(x)
        last, out = model.family.normalize(model.final_norm, h), model(**x)
    assert _max_diff(auto["last"], last) <= TOL
    if model.head_kind == "cls":  # the backbone of a classifier: transformers adds a pooler the source lacked
        assert all(key.startswith("pooler.") for key in auto["missing"])
        assert all(key.startswith("classifier.") for key in auto["unexpected"])
        cls = result[case]["classifier"]
        assert cls["class"] == model.model_class and cls["missing"] == []
        assert _max_diff(cls["logits"], out) <= TOL
    else:
        assert auto["class"] == model.model_class and auto["missing"] == [] and auto["unexpected"] == []
        assert _max_diff(auto["pooler"], out) <= TOL  # ViT/BERT pooler, DINOv2 [CLS], CLIP's post-normed [CLS]


@pytest.mark.parametrize("name", sorted({c.split(":")[0] for c in CASES if c.endswith("folded")} - {"demo-vit"}))
def test_the_folded_checkpoints_hold_the_folded_weights(saved, name):
    """Same kept blocks, same inputs: the folded plan's checkpoint computes what the identity one does not."""
    _, result = saved
    folded, identity = result[f"{name}:folded"]["auto"]["last"], result[f"{name}:identity"]["auto"]["last"]
    assert _max_diff(folded, identity) > 1e-2


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith(("vit-cls", "demo-vit"))])
def test_the_image_classification_pipeline_gives_the_compressed_scores(saved, case):
    cases, result = saved
    model = cases[case]["model"]
    pipe = result[case]["pipeline"]
    with torch.no_grad():
        probs = model(pixel_values=pipe["pixel_values"]).softmax(-1)[0]
    expected = {model.config.id2label[i]: p.item() for i, p in enumerate(probs)}
    assert pipe["scores"].keys() == expected.keys()
    assert max(abs(pipe["scores"][k] - v) for k, v in expected.items()) <= TOL


@pytest.mark.parametrize("case", CASES)
def test_plain_checkpoint_layout_and_metadata(saved, case):
    cases, _ = saved
    model, folder = cases[case]["model"], cases[case]["dir"]
    k, plan = len(model.plan.kept), model.plan
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == k and config["architectures"] == [model.model_class]
    if "stage_names" in config:  # DINOv2's per-layer backbone fields follow the kept count
        assert config["stage_names"] == ["stem"] + [f"stage{i}" for i in range(1, k + 1)]
        assert config["out_indices"] == [k]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    layers = {int(p) for key in keys for a, p in zip(key.split("."), key.split(".")[1:]) if a in ("layer", "layers")}
    assert layers == set(range(k))
    assert not any(key.startswith(("blocks.", "translators.")) for key in keys)
    meta = json.loads((folder / "toast.json").read_text())
    assert meta["layout"] == "plain" and meta["layers"] == list(plan.kept) and meta["scores"] == {"accuracy": 1.0}
    assert Plan.of(meta["plan"]["spans"], meta["plan"]["num_blocks"]) == plan
    processor = {"AutoTokenizer": "tokenizer_config.json", "AutoImageProcessor": "preprocessor_config.json"}
    processor = processor[model.family.processor_class]
    assert (folder / processor).is_file()


@pytest.mark.parametrize("case", CASES)
def test_compressed_model_loads_the_plain_checkpoint(saved, case):
    cases, _ = saved
    model, x = cases[case]["model"], cases[case]["inputs"]
    again = CompressedModel.from_pretrained(cases[case]["dir"])
    assert again.plan == model.plan and sorted(map(int, again.blocks)) == list(model.plan.kept)
    assert again.num_parameters() == model.num_parameters()
    with torch.no_grad():
        torch.testing.assert_close(again(**x), model(**x), rtol=0, atol=0)
        torch.testing.assert_close(again.features(x), model.features(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", TOAST_CASES)
def test_transformers_refuses_the_toast_format(saved, name):
    cases, result = saved
    folder = cases["toast:" + name]["dir"]
    assert checkpoint_layout(folder) == "toast" and "CompressedModel.from_pretrained" in describe_checkpoint(folder)
    refused = result["toast:" + name]
    assert set(refused) == {"AutoModel", "AutoModelForImageClassification", "pipeline", "AutoConfig", "class"}
    for entry, message in refused.items():
        assert message is not None, f"{entry} loaded a toast-format folder"
        assert "toast.models.CompressedModel.from_pretrained" in message, message
    assert refused["AutoModel"].startswith(
        f"ValueError: The checkpoint you are trying to load has model type `{TOAST_MODEL_TYPE}`"
    )


@pytest.mark.parametrize("name", TOAST_CASES)
def test_compressed_model_loads_the_toast_format(saved, name):
    cases, _ = saved
    case = cases["toast:" + name]
    model, x = case["model"], case["inputs"]
    again = CompressedModel.from_pretrained(case["dir"])
    assert again.plan == model.plan
    with torch.no_grad():
        torch.testing.assert_close(again(**x), model(**x), rtol=0, atol=0)
    meta = json.loads((case["dir"] / "toast.json").read_text())
    assert meta["layout"] == "toast" and meta["source_config"]["num_hidden_layers"] == model.plan.num_blocks


def test_folders_of_the_first_format_still_load(saved, tmp_path):
    """format_version 1: config.json the source's config, toast.json without a layout."""
    from safetensors.torch import save_file

    cases, _ = saved
    for case in ["toast:vit-cls", "dinov2:identity"]:
        model, x = cases[case]["model"], cases[case]["inputs"]
        folder = tmp_path / case.replace(":", "-")
        folder.mkdir()
        model.config.save_pretrained(folder)
        meta = {
            "format_version": 1,
            "family": model.family.name,
            "model_class": model.model_class,
            "head_kind": model.head_kind,
            "plan": {"num_blocks": model.plan.num_blocks, "spans": model.plan.to_json()},
        }
        (folder / "toast.json").write_text(json.dumps(meta))
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        again = CompressedModel.from_pretrained(folder)
        with torch.no_grad():
            torch.testing.assert_close(again(**x), model(**x), rtol=0, atol=0)


def test_layout_can_be_forced_and_plain_is_refused_with_a_module(saved, tmp_path):
    cases, _ = saved
    identity = cases["vit-cls:identity"]
    folder = identity["model"].save_pretrained(tmp_path / "forced", layout="toast")
    assert checkpoint_layout(folder) == "toast"
    with pytest.raises(ValueError, match="Transformers does not recognize"):
        T.AutoConfig.from_pretrained(folder)
    with torch.no_grad():
        x = identity["inputs"]
        torch.testing.assert_close(CompressedModel.from_pretrained(folder)(**x), identity["model"](**x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"translator module \(h1_h3\)"):
        cases["toast:vit-cls"]["model"].save_pretrained(tmp_path / "no", layout="plain")
