"""`--head zero-shot`: CLIP's text tower embeds the class names in prompt templates; offline, a tiny random CLIP.

The tiny CLIPModel copies the structure of openai/clip-vit-base-patch16's config (text and vision towers,
projections, quick-GELU, 77 positions) at a tiny width, with a byte-level CLIP tokenizer built from a written
vocabulary (no merges) and a CLIPProcessor saved beside it. The empty plan's zero-shot accuracy is checked
against a hand-written computation with `CLIPModel.get_image_features` / `get_text_features`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_main

from toast.search._settings import SearchSettings
from toast.search._zero_shot import FULL_TEMPLATES, PROMPT_SETS, SHORT_TEMPLATES, embeddings_key, read_class_names

pytestmark = pytest.mark.slow

SMALL_RUN = ["--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"]
SMALL_RUN += ["--no-progress", "--batch-size", "8"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's byte-to-character table: every byte as a printable character."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A whole CLIPModel (text and vision towers) with random weights, its tokenizer and processor."""
    import transformers as T

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tokenizer = T.CLIPTokenizer(vocab=vocab, merges=[])
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = T.CLIPConfig(  # openai/clip-vit-base-patch16's fields, tiny
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            max_position_embeddings=77,
            vocab_size=len(vocab),
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=16,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=4,
            image_size=32,
            patch_size=8,
            num_channels=3,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=16,
        ),
        projection_dim=16,
        logit_scale_init_value=2.6592,
    )
    torch.manual_seed(seed)
    T.CLIPModel(config).eval().save_pretrained(directory)
    image_processor = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    T.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture()
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def settings(clip_dir, data, out, cache_dir, **kw) -> SearchSettings:
    base = dict(
        model=str(clip_dir),
        dataset=str(data),
        out=out,
        head="zero-shot",
        objectives=("accuracy", "gflops"),
        calib_samples=16,
        probe_samples=30,
        eval_samples=20,
        device="cpu",
        cache_dir=cache_dir,
        batch_size=8,
        progress=False,
    )
    return SearchSettings.from_flat(**{**base, **kw})


@torch.inference_mode()
def hand_zero_shot(clip_dir: Path, data: Path, class_names, templates) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of the whole test split, by CLIPModel's own `get_image_features` / `get_text_features`,
    and its labels."""
    import datasets
    import transformers as T

    def pooled(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    model = T.CLIPModel.from_pretrained(clip_dir).eval()
    processor = T.CLIPProcessor.from_pretrained(clip_dir)
    test = datasets.load_from_disk(str(data))["test"]
    images = processor(images=[im.convert("RGB") for im in test["img"]], return_tensors="pt")
    img = pooled(model.get_image_features(pixel_values=images["pixel_values"]))
    img = img / img.norm(dim=-1, keepdim=True)
    classes = []
    for name in class_names:
        tokens = processor(text=[t.format(name) for t in templates], padding=True, return_tensors="pt")
        txt = pooled(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        txt = txt / txt.norm(dim=-1, keepdim=True)
        mean = txt.mean(0)
        classes.append(mean / mean.norm())
    return (img @ torch.stack(classes).T).numpy(), np.asarray(test["label"])


def test_the_template_sets_are_the_clip_papers():
    assert len(FULL_TEMPLATES) == 80 and len(set(FULL_TEMPLATES)) == 80
    assert set(SHORT_TEMPLATES) <= set(FULL_TEMPLATES) and len(SHORT_TEMPLATES) == 7
    assert all(t.count("{}") == 1 for t in FULL_TEMPLATES)
    assert PROMPT_SETS == {"full": FULL_TEMPLATES, "short": SHORT_TEMPLATES}


def test_class_names_file_skips_blank_lines(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("red\n\n  green \nblue\n")
    assert read_class_names(path) == ("red", "green", "blue")


@pytest.mark.parametrize("prompts", ["short", "full"])
def test_empty_plan_equals_clip_get_image_and_text_features(prompts, clip_dir, image_dataset_dir, cache_dir, tmp_path):
    from toast.search._context import SearchContext

    s = settings(clip_dir, image_dataset_dir, tmp_path / "run", cache_dir, prompts=prompts)
    ctx = SearchContext.build(s, progress=False)
    sims, labels = hand_zero_shot(clip_dir, image_dataset_dir, ("r", "g", "b"), PROMPT_SETS[prompts])
    assert ctx.zero_shot.embeddings.shape == (3, 16)
    plan_logits = _context_logits(ctx)
    order = _eval_order(ctx)  # the evaluation samples are a seeded draw of the test split: the hand values in its order
    np.testing.assert_allclose(plan_logits, sims[order], atol=1e-5)
    expected = float((sims.argmax(1) == labels).mean() * 100)
    assert ctx.baseline["accuracy"] == pytest.approx(expected)
    np.testing.assert_array_equal(ctx.eval_labels, labels[order])
    # the vision tower's cost alone; the text tower's reported apart
    vision_params = sum(p.numel() for p in ctx.loaded.model.parameters())
    assert ctx.costs.original.mparams == pytest.approx(vision_params / 1e6, rel=1e-6)
    text = ctx.zero_shot_cost
    clip = ctx.loaded.text[0]
    n_text = sum(p.numel() for p in clip.text_model.parameters()) + clip.text_projection.weight.numel()
    assert text["mparams"] == pytest.approx(n_text / 1e6) and text["gflops_per_prompt"] > 0
    assert text["prompts"] == 3 * len(PROMPT_SETS[prompts])


def _eval_order(ctx) -> np.ndarray:
    from toast.data import sample_ids

    s = ctx.settings
    return np.asarray(sample_ids(len(ctx.test), s.eval_samples, s.seed + 2))


def _context_logits(ctx) -> np.ndarray:
    from toast.spaces import Plan

    model = ctx.model_for(Plan((), ctx.loaded.num_blocks))
    _, logits = ctx.outputs(model, "eval", logits=True)
    return logits


def test_class_embeddings_are_cached_by_model_names_and_templates(clip_dir, image_dataset_dir, cache_dir, tmp_path):
    from toast.search._context import SearchContext

    first = SearchContext.build(settings(clip_dir, image_dataset_dir, tmp_path / "a", cache_dir, prompts="short"))
    assert not first.zero_shot.cached
    again = SearchContext.build(settings(clip_dir, image_dataset_dir, tmp_path / "b", cache_dir, prompts="short"))
    assert again.zero_shot.cached
    np.testing.assert_array_equal(first.zero_shot.embeddings.numpy(), again.zero_shot.embeddings.numpy())
    names = tmp_path / "names.txt"
    names.write_text("red\ngreen\nblue\n")
    other = SearchContext.build(
        settings(clip_dir, image_dataset_dir, tmp_path / "c", cache_dir, prompts="short", class_names=names)
    )
    assert not other.zero_shot.cached  # other names: another entry
    spec = first.zero_shot.spec
    assert embeddings_key("m", "r", spec, "float32") != embeddings_key("m", "r2", spec, "float32")
    assert len([p for p in (cache_dir / "zero_shot").iterdir() if (p / "embeddings.npy").is_file()]) == 2


@pytest.mark.parametrize("damage", ["permuted rows", "flipped bits", "truncated", "mis-shaped", "a file"])
def test_a_damaged_class_embedding_entry_is_said_and_recomputed(
    damage, clip_dir, image_dataset_dir, cache_dir, tmp_path, recwarn
):
    """The cache entry is verified (checksum, shape, finite float32): a valid .npy with its rows permuted would
    silently change every zero-shot score; each damage is said in one line and the embeddings are computed again."""
    from toast.search._context import SearchContext

    first = SearchContext.build(settings(clip_dir, image_dataset_dir, tmp_path / "a", cache_dir, prompts="short"))
    (entry,) = (cache_dir / "zero_shot").iterdir()
    path = entry / "embeddings.npy"
    good = np.load(path)
    if damage == "permuted rows":
        np.save(path, good[::-1].copy())
    elif damage == "flipped bits":
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0x40
        path.write_bytes(bytes(raw))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "mis-shaped":
        np.save(path, good[:2])
    else:
        import shutil

        shutil.rmtree(entry)
        entry.write_text("not a folder")
    again = SearchContext.build(settings(clip_dir, image_dataset_dir, tmp_path / "b", cache_dir, prompts="short"))
    assert not again.zero_shot.cached
    np.testing.assert_array_equal(first.zero_shot.embeddings.numpy(), again.zero_shot.embeddings.numpy())
    said = [str(w.message) for w in recwarn if "zero-shot class embeddings" in str(w.message)]
    assert len(said) == 1 and "recomputing" in said[0] and "\n" not in said[0]
    third = SearchContext.build(settings(clip_dir, image_dataset_dir, tmp_path / "c", cache_dir, prompts="short"))
    assert third.zero_shot.cached  # the recomputed entry is whole again


def test_search_runs_end_to_end_with_the_zero_shot_head(clip_dir, image_dataset_dir, cache_dir, tmp_path):
    out = tmp_path / "search"
    args = ["--model", str(clip_dir), "--dataset", str(image_dataset_dir), "--out", str(out)]
    args += ["--cache-dir", str(cache_dir), "--head", "zero-shot", "--prompts", "short", *SMALL_RUN]
    code, stdout, err = run_main([*args, "--trials", "6", "--sampler", "random"])
    assert code == 0, err
    assert "zero-shot head: 3 classes" in stdout and "text tower" in stdout
    doc = json.loads((out / "front.json").read_text())
    assert doc["probe"] == "zero-shot-head"
    assert doc["zero_shot"]["classes"] == 3 and doc["zero_shot"]["templates"] == 7
    assert doc["zero_shot"]["text_tower"]["mparams"] > 0
    assert 0 <= doc["baseline"]["accuracy"] <= 100
    saved = json.loads((out / "settings.json").read_text())
    assert saved["head"] == "zero-shot" and saved["prompts"] == "short"


def test_plan_mode_reports_zero_shot_accuracy_per_plan(clip_dir, image_dataset_dir, cache_dir, tmp_path):
    import csv

    out = tmp_path / "plans"
    args = ["--model", str(clip_dir), "--dataset", str(image_dataset_dir), "--out", str(out)]
    args += ["--cache-dir", str(cache_dir), "--head", "zero-shot", "--prompts", "short", *SMALL_RUN]
    code, stdout, err = run_main([*args, "--plan", "0->2:linear", "--plan", "1->3:identity"])
    assert code == 0, err
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["plan"] for r in rows) == ["0→2:linear", "1→3:identity"]
    assert all(r["state"] == "COMPLETE" and 0 <= float(r["accuracy"]) <= 100 for r in rows)
    assert "0→2:linear" in stdout or "1→3:identity" in stdout


def test_the_clip_alias_loads_the_whole_model_only_for_the_zero_shot_head(clip_dir):
    from toast.models import load_model

    vision = load_model(str(clip_dir))
    assert vision.text is None and type(vision.model).__name__ == "CLIPVisionModel"
    whole = load_model(str(clip_dir), text_tower=True)
    clip, _ = whole.text
    assert type(clip).__name__ == "CLIPModel" and type(whole.model).__name__ == "CLIPVisionModel"
    tower = whole.model if whole.model is clip.vision_model else whole.model.vision_model
    assert tower is clip.vision_model  # shared, not copied
    assert whole.revision == vision.revision and whole.hidden_size == vision.hidden_size


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("vit", [], "needs a whole CLIP model"),
        ("clip-vision", [], "needs a whole CLIP model"),
        ("clip", ["--class-names", "/nonexistent/names.txt"], "cannot be read"),
        ("clip", ["--class-names", "NAMES2"], "label 2 of dataset"),
        ("probe-head", ["--class-names", "NAMES2"], "--class-names needs --head zero-shot"),
        ("probe-head", ["--prompts", "full"], "--prompts needs --head zero-shot"),  # the default, said explicitly
        ("clip", ["--class-names", "NAMES4"], "has 4 names but the labels"),
        ("clip", ["--class-names", "DUPLICATES"], "more than once"),
    ],
)
def test_bad_zero_shot_inputs_are_one_line_exit_2(
    model, extra, message, clip_dir, tiny_dirs, image_dataset_dir, tmp_path
):
    files = {"NAMES2": "r\ng\n", "NAMES4": "r\ng\nb\ny\n", "DUPLICATES": "r\ng\nr\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    extra = [str(tmp_path / a) if a in files else a for a in extra]
    where = {"vit": tiny_dirs["vit"], "clip-vision": tiny_dirs["clip"]}.get(model, clip_dir)
    head = [] if model == "probe-head" else ["--head", "zero-shot"]
    args = ["--model", str(where), "--dataset", str(image_dataset_dir), "--out", str(tmp_path / "run")]
    args += ["--cache-dir", str(tmp_path / "cache"), *head, *extra, *SMALL_RUN]
    code, _, err = run_main(args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "run").exists()


def test_a_resume_is_bound_to_the_class_names_files_content(clip_dir, image_dataset_dir, cache_dir, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("red\ngreen\nblue\n")
    out = tmp_path / "named"
    args = ["--model", str(clip_dir), "--dataset", str(image_dataset_dir), "--out", str(out), "--class-names"]
    args += [str(names), "--cache-dir", str(cache_dir), "--head", "zero-shot", "--prompts", "short", *SMALL_RUN]
    code, _, err = run_main([*args, "--plan", "0->2:linear"])
    assert code == 0, err
    code, _, err = run_main([*args, "--plan", "0->2:linear"])  # the same file: the same run
    assert code == 0, err
    names.write_text("scarlet\nemerald\nnavy\n")  # the same path, other names: another run
    before = (out / "study.journal").read_bytes()
    code, _, err = run_main([*args, "--plan", "0->2:linear"])
    assert code == 2 and "belongs to another run" in err and "class_names_sha256" in err
    assert (out / "study.journal").read_bytes() == before
