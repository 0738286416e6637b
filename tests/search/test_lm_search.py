"""A causal LM's run ships what it reports (issue 23, part 5): tested the way its user loads it.

Tiny random-weight decoders (`conftest.save_tiny`) run the real command on the offline `python-docs` corpus packed
into 32-token sequences, with `--plan` forcing the plans. An identity or folded plan's `chosen/` is a plain
checkpoint of the source class (fewer layers, `layer_types` and each attention's cache entry renumbered; a folded
Llama block's bias held with `mlp_bias` on, the other projections' biases zero): in a fresh
process where toast cannot be imported, `pipeline("text-generation")` generates from it, greedy `generate()` with
the KV cache equals generation without it and the compressed model's own tokens, and its perplexity on the run's
evaluation sequences (the whole packed test split, as the end of a run rescores) equals front.json's. A linear
plan's `chosen/` keeps the toast format, which Transformers refuses in one line naming the toast loader;
`toast-search export RUN --plan` writes the same folder kinds. The model card speaks of text generation and
perplexity.
"""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_main, save_tiny
from huggingface_hub import ModelCard

from toast.data import PYTHON_DOCS, corpus_split, pack_split
from toast.models import CompressedModel, resolve_model_name
from toast.models.testing import run_without_toast
from toast.search._card import CARD_NAME
from toast.search._context import SearchContext
from toast.search._export import export_plan, load_run_settings
from toast.spaces import Plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SEQ_LEN = 32
SMALL = ["--seq-len", str(SEQ_LEN), "--calib-samples", "16", "--eval-samples", "20", "--device", "cpu", "--no-progress"]
PROMPT_TOKENS = 10  # longer than the tiny Gemma-2's sliding window (4): its sliding layers' cache is exercised
NEW_TOKENS = 12
#: case -> (tiny model, flags): an identity and a folded plan (a budget either meets), a linear plan (toast format),
#: and Gemma-2's alternating sliding / full layers with a full-attention block removed.
RUNS = {
    "llama": ("llama", ["--translators", "identity,folded", "--plan", "1→2:identity", "--plan", "0→1:folded"]),
    "llama-linear": ("llama", ["--translators", "identity,linear", "--plan", "0→2:linear"]),
    "gemma2": ("gemma2", ["--translators", "identity", "--plan", "0→1:identity"]),
    # the acceptance: a search (not given plans) on the shipped demo LM, perplexity against GFLOPs within
    # 0.75 of its GFLOPs, with the kinds that keep the architecture (a linear choice would ship in toast format)
    "demo-lm": ("demo-lm", ["--translators", "identity,folded", "--trials", "20", "--budget-fraction", "0.75"]),
}
BUDGET = ["--budget-fraction", "0.8"]  # a case's own flags come after it: its own budget wins
PLAIN = ["llama", "gemma2", "demo-lm"]  # the runs whose chosen/ is a plain checkpoint (checked without toast)

# In a process where `import toast` fails: each plain folder of the manifest loaded with Transformers alone,
# generating through the pipeline, greedy with and without its KV cache, and its perplexity on the saved sequences;
# each toast-format folder refused by AutoModelForCausalLM and the pipeline (the error's first line kept).
CHECK = r"""
import json, math, sys

import numpy as np
import torch
import transformers as T

try:
    import toast  # noqa: F401
    importable = True
except ImportError:
    importable = False

manifest = json.loads(open(sys.argv[1]).read())
out = {"toast_importable": importable}
for case, spec in manifest["plain"].items():
    folder = spec["dir"]
    model = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = T.AutoTokenizer.from_pretrained(folder)
    sequences = torch.from_numpy(np.load(spec["sequences"]))
    prompt = sequences[:2, : manifest["prompt_tokens"]]
    greedy = {"max_new_tokens": manifest["new_tokens"], "do_sample": False, "eos_token_id": None,
              "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0}
    with torch.no_grad():
        cached = model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=True, **greedy)
        uncached = model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=False, **greedy)
        nll, tokens = 0.0, 0
        for batch in sequences.split(32):  # exp(mean NLL) of every next token, log-softmax in float32
            logq = torch.log_softmax(model(input_ids=batch).logits[:, :-1].float(), dim=-1)
            nll += float(-logq.gather(-1, batch[:, 1:, None]).squeeze(-1).double().sum())
            tokens += batch.shape[0] * (batch.shape[1] - 1)
    text = tokenizer.decode(sequences[0, : manifest["prompt_tokens"]], skip_special_tokens=True)
    generated = T.pipeline("text-generation", model=folder)(text, max_new_tokens=8, do_sample=False)
    out[case] = {
        "class": type(model).__name__,
        "layers": model.config.num_hidden_layers,
        "layer_types": getattr(model.config, "layer_types", None),
        "layer_idx": [layer.self_attn.layer_idx for layer in model.model.layers],
        "cached": cached.tolist(),
        "uncached": uncached.tolist(),
        "perplexity": math.exp(nll / tokens),
        "prompt": text,
        "generated": generated[0]["generated_text"],
    }
if "snippet" in manifest:  # the card's loading code, run as written in its folder
    import contextlib, io, os, re
    folder = manifest["snippet"]
    code = re.search(r"```python\n(.*?)```", open(f"{folder}/README.md").read(), re.S).group(1)
    here, printed = os.getcwd(), io.StringIO()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "card", "exec"), {"__name__": "card"})
    finally:
        os.chdir(here)
    out["snippet"] = printed.getvalue()
for case, folder in manifest["toast"].items():
    refused = {}
    for name, load in (("AutoModelForCausalLM", lambda: T.AutoModelForCausalLM.from_pretrained(folder)),
                       ("pipeline", lambda: T.pipeline("text-generation", model=folder))):
        try:
            load()
            refused[name] = None
        except Exception as exc:
            refused[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]  # Transformers' own advice follows
    out[case] = {"refused": refused}
out["toast_modules"] = sorted(m for m in sys.modules if m == "toast" or m.startswith("toast."))
open(manifest["result"], "w").write(json.dumps(out))
"""


def front(run: Path) -> dict:
    return json.loads((run / "front.json").read_text())


def packed_test_split(folder: Path, cache: Path) -> np.ndarray:
    """The run's final evaluation sequences: every sequence of the packed test split, in order (`full_evaluation`)."""
    from transformers import AutoTokenizer

    split = pack_split(
        corpus_split(PYTHON_DOCS, "test"), AutoTokenizer.from_pretrained(folder), SEQ_LEN, cache, model=str(folder)
    )
    return np.asarray(split.dataset["input_ids"], dtype=np.int64)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every case run once, the identity plan of the first exported afterwards, and every folder checked in one
    toast-free process."""
    root = tmp_path_factory.mktemp("lm")
    cache = root / "cache"
    tiny = sorted({m for m, _ in RUNS.values()} - {"demo-lm"})
    sources = {name: save_tiny(name, root / "models" / name) for name in tiny}
    sources["demo-lm"] = Path(resolve_model_name("demo-lm"))  # the shipped checkpoint
    done: dict = {"root": root, "sources": sources}
    for case, (model, flags) in RUNS.items():
        out = root / case
        args = ["--model", str(sources[model]), "--cache-dir", str(cache), "--out", str(out), *SMALL, *BUDGET, *flags]
        code, stdout, stderr = run_main(args)
        assert code == 0, stderr
        done[case] = {"out": out, "stdout": stdout}
    code, stdout, stderr = run_main(["export", str(done["llama"]["out"]), "--plan", "1→2:identity"])
    assert code == 0, stderr
    done["export"] = {"out": done["llama"]["out"] / "export" / "1-2-identity", "stdout": stdout}
    code, stdout, stderr = run_main(["export", str(done["llama-linear"]["out"]), "--plan", "0→2:linear"])
    assert code == 0, stderr
    done["export-linear"] = {"out": done["llama-linear"]["out"] / "export" / "0-2-linear", "stdout": stdout}

    plain = {case: done[case]["out"] / "chosen" for case in PLAIN}
    plain["export"] = done["export"]["out"]
    toast = {"llama-linear": done["llama-linear"]["out"] / "chosen", "export-linear": done["export-linear"]["out"]}
    manifest = {"plain": {}, "toast": {k: str(v) for k, v in toast.items()}, "result": str(root / "result.json")}
    for case, folder in plain.items():
        sequences = root / f"{case}-sequences.npy"
        np.save(sequences, packed_test_split(folder, root / "pack-cache"))
        manifest["plain"][case] = {"dir": str(folder), "sequences": str(sequences)}
    manifest.update(prompt_tokens=PROMPT_TOKENS, new_tokens=NEW_TOKENS, snippet=str(plain["llama"]))
    (root / "manifest.json").write_text(json.dumps(manifest))
    run_without_toast(CHECK, root / "manifest.json")
    done["result"] = json.loads((root / "result.json").read_text())
    done["sequences"] = {case: np.load(spec["sequences"]) for case, spec in manifest["plain"].items()}
    return done


def test_the_check_process_cannot_import_toast(runs):
    assert runs["result"]["toast_importable"] is False and runs["result"]["toast_modules"] == []


@pytest.mark.parametrize("case", PLAIN)
def test_an_identity_or_folded_choice_is_a_plain_checkpoint_of_the_source_class(runs, case):
    doc, got = front(runs[case]["out"]), runs["result"][case]
    chosen = doc["chosen"]
    assert chosen is not None and doc["chosen_format"] == "plain"
    assert doc["probe"] is None and doc["head"] is None  # scored by its own LM head: no probe, no head record
    assert {kind for *_, kind in chosen["spans"]} <= {"identity", "folded"}
    source = json.loads((runs["sources"][RUNS[case][0]] / "config.json").read_text())
    kept = Plan.of(chosen["spans"], source["num_hidden_layers"]).kept
    config = json.loads((runs[case]["out"] / "chosen" / "config.json").read_text())
    assert config["architectures"] == source["architectures"] and got["class"] == source["architectures"][0]
    assert got["layers"] == config["num_hidden_layers"] == len(kept) < source["num_hidden_layers"]
    assert got["layer_idx"] == list(range(len(kept)))  # each attention's KV-cache entry, renumbered
    if any(kind == "folded" for *_, kind in chosen["spans"]) and source.get("mlp_bias") is False:
        assert config["mlp_bias"] is True  # Llama's MLP holds the folded bias; the others' biases are zeros
    if source.get("layer_types"):  # Gemma-2: the kept blocks' own attention kinds, in order
        assert got["layer_types"] == [source["layer_types"][b] for b in kept]
    assert 'transformers.pipeline("text-generation")' in runs[case]["stdout"]


@pytest.mark.parametrize("case", [*PLAIN, "export"])
def test_the_plain_checkpoint_generates_through_the_pipeline_and_with_its_cache(runs, case):
    got = runs["result"][case]
    assert got["generated"].startswith(got["prompt"]) and len(got["generated"]) > len(got["prompt"])
    assert got["cached"] == got["uncached"]
    assert all(len(row) == PROMPT_TOKENS + NEW_TOKENS for row in got["cached"])


@pytest.mark.parametrize("case", [*PLAIN, "export"])
def test_the_plain_checkpoint_scores_the_reported_perplexity(runs, case):
    """Transformers alone, on every sequence of the packed test split: front.json's (and toast.json's) perplexity.
    Not bitwise: Transformers' forward and toast's run the same float32 weights through other kernels and batch
    shapes (rotary and attention computed their own way), so the log-likelihoods agree to float32 rounding."""
    got = runs["result"][case]
    folder = runs["export"]["out"] if case == "export" else runs[case]["out"] / "chosen"
    meta = json.loads((folder / "toast.json").read_text())
    reported = meta["scores"]["perplexity"]
    if case != "export":
        assert front(runs[case]["out"])["chosen"]["perplexity"] == reported
    assert math.isclose(got["perplexity"], reported, rel_tol=1e-5), (got["perplexity"], reported)
    card = ModelCard.load(folder / CARD_NAME).text
    n = len(runs["sequences"][case])
    assert f"{n:,} sequences of {SEQ_LEN} tokens packed from the test split of python-docs" in card


@pytest.fixture(scope="module")
def llama_context(runs) -> SearchContext:
    """The llama run's context, rebuilt from its settings.json and cache, on the whole test split."""
    return SearchContext.build(load_run_settings(runs["llama"]["out"]), progress=False, notes=False).full_evaluation()


def test_the_plain_checkpoint_generates_the_compressed_model_s_tokens(runs, llama_context):
    """The run's own compressed model (rebuilt from its settings and cache), greedy step by step with every token
    recomputed, picks the tokens Transformers' cached generate() does from chosen/."""
    ctx = llama_context
    model = ctx.model_for(Plan.of(front(runs["llama"]["out"])["chosen"]["spans"], ctx.loaded.num_blocks)).eval()
    seq = torch.from_numpy(runs["sequences"]["llama"][:2, :PROMPT_TOKENS])
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq))
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert seq.tolist() == runs["result"]["llama"]["cached"]


@pytest.mark.parametrize("case", ["llama-linear", "export-linear"])
def test_a_linear_plan_keeps_the_toast_format_refused_in_one_line(runs, case):
    folder = runs["export-linear"]["out"] if case == "export-linear" else runs[case]["out"] / "chosen"
    meta = json.loads((folder / "toast.json").read_text())
    assert meta["layout"] == "toast" and meta["plan"]["spans"] == [[0, 2, "linear"]]
    if case == "llama-linear":
        assert front(runs[case]["out"])["chosen_format"] == "toast"
    for loader, message in runs["result"][case]["refused"].items():
        assert message is not None, f"{loader} loaded a toast-format folder"
        assert "toast.models.CompressedModel.from_pretrained" in message, message  # in the error's first line
    # its user's loader (toast's) loads it, and it scores what it reports on the packed test split
    model = CompressedModel.from_pretrained(folder).eval()
    assert model.plan == Plan.of([[0, 2, "linear"]], 4) and model.model_class == "LlamaForCausalLM"
    sequences = torch.from_numpy(packed_test_split(folder, runs["root"] / "pack-cache"))
    nll = 0.0
    with torch.no_grad():
        for batch in sequences.split(32):
            logits = model(input_ids=batch, attention_mask=torch.ones_like(batch))
            logq = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            nll += float(-logq.gather(-1, batch[:, 1:, None]).squeeze(-1).double().sum())
    perplexity = math.exp(nll / (sequences.shape[0] * (sequences.shape[1] - 1)))
    assert math.isclose(perplexity, meta["scores"]["perplexity"], rel_tol=1e-5), (perplexity, meta["scores"])


def test_the_model_card_speaks_of_text_generation_and_perplexity(runs):
    for case, layout in (("llama", "transformers"), ("llama-linear", "toast-search")):
        card = ModelCard.load(runs[case]["out"] / "chosen" / CARD_NAME)
        text = card.text
        assert card.data.pipeline_tag == "text-generation" and card.data.library_name == layout
        assert "for the lowest perplexity at each cost" in text
        assert "- perplexity measured with: the model's own LM head" in text
        assert "Chosen as the plan with the lowest perplexity within" in text
        assert "16 sequences of 32 tokens packed from the train split of python-docs" in text
        for word in ("accuracy", "probe", "AutoImageProcessor", "images"):
            assert word not in text, word
        baseline = front(runs[case]["out"])["baseline"]["perplexity"]
        chosen = front(runs[case]["out"])["chosen"]["perplexity"]
        assert f"{chosen:.3f} ({chosen - baseline:+.3f})" in text
    assert (
        "AutoModelForCausalLM.from_pretrained(path)" in ModelCard.load(runs["llama"]["out"] / "chosen" / CARD_NAME).text
    )


def test_the_card_s_loading_code_runs(runs, monkeypatch):
    """The card's snippet, run as written in its folder: the plain checkpoint's with Transformers alone (in the
    process without toast), the toast format's greedy tokens through CompressedModel (here)."""
    assert runs["result"]["snippet"].strip()
    folder = runs["llama-linear"]["out"] / "chosen"
    code = ModelCard.load(folder / CARD_NAME).text.split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(folder)
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "card", "exec"), {"__name__": "card"})
    assert out.getvalue().strip()


def test_export_plan_writes_the_plain_checkpoint_with_its_scores(runs):
    folder = runs["export"]["out"]
    meta = json.loads((folder / "toast.json").read_text())
    assert meta["layout"] == "plain" and meta["plan"]["spans"] == [[1, 2, "identity"]] and meta["layers"] == [0, 1, 3]
    assert {"perplexity", "kl", "top1", "gflops", "params"} <= set(meta["scores"])
    assert "head" not in meta  # an LM is scored by its own LM head: no head record
    assert f"-> {folder}" in runs["export"]["stdout"] and "text-generation" in runs["export"]["stdout"]


def test_an_export_reports_the_exported_model_s_own_perplexity(runs, llama_context, tmp_path):
    """A record scored elsewhere (search-time, on a subset: a plan chosen from outside the front) is exported with
    the exported model's own scores on the whole test split, what the card says it was scored on."""
    doc = front(runs["llama"]["out"])
    plan = Plan.of(doc["chosen"]["spans"], 4)
    stale = {"spans": doc["chosen"]["spans"], "plan": str(plan), "perplexity": 1.0, "kl": 9.0, "top1": 1.0}
    export = export_plan(llama_context, plan, tmp_path / "again", record=stale)
    scores = json.loads((tmp_path / "again" / "toast.json").read_text())["scores"]
    for key in ("perplexity", "kl", "top1"):
        assert scores[key] == export.record[key] == doc["chosen"][key], key
