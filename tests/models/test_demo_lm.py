"""The shipped demo LM (`models/demo-lm/`, alias `demo-lm`): loads offline as a plain Transformers causal LM, is deep
and small, and its held-out perplexity is what its training log says."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import socket
import sys
from pathlib import Path

import pytest
import tomllib
import torch
import torch.nn.functional as F

from toast.data import load_split, packed_tokens
from toast.models import LOCAL_ALIASES, load_model, resolve_model, resolve_model_name

REPO = Path(__file__).resolve().parents[2]
DEMO_LM = LOCAL_ALIASES["demo-lm"]
DEMO_LM_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "training_log.json",
    "README.md",
)
SEQ_LEN = 256


def _no_network(*args, **kwargs):
    raise OSError("network access attempted while loading the demo LM")


@pytest.fixture(scope="module")
def offline():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        yield


@pytest.fixture(scope="module")
def model(offline):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(DEMO_LM).eval()


@pytest.fixture(scope="module")
def tokenizer(offline):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_LM)


@pytest.fixture(scope="module")
def log() -> dict:
    return json.loads((DEMO_LM / "training_log.json").read_text())


@pytest.fixture(scope="module")
def test_rows(tokenizer) -> torch.Tensor:
    data = load_split("python-docs", "test")
    return torch.as_tensor(packed_tokens(list(data.dataset["text"]), tokenizer, SEQ_LEN))


def test_alias_resolves_to_the_shipped_folder(offline):
    assert Path(resolve_model_name("demo-lm")) == DEMO_LM
    assert DEMO_LM.parent == Path(sys.modules["toast.models._loading"].__file__).resolve().parent
    source = resolve_model("demo-lm")
    assert source.is_local and Path(source.where) == DEMO_LM
    assert source.family.name == "llama"
    assert source.config.architectures == ["LlamaForCausalLM"]


def test_ships_small_with_every_file():
    for name in DEMO_LM_FILES:
        assert (DEMO_LM / name).is_file(), name
    total = sum(p.stat().st_size for p in DEMO_LM.iterdir() if p.is_file())
    assert total < 10 * 2**20  # "a few MB in the package"


def test_package_data_is_declared():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "demo-lm/*" in pyproject["tool"]["setuptools"]["package-data"]["toast.models"]


def test_loads_as_a_deep_llama(model):
    from transformers import LlamaForCausalLM

    assert isinstance(model, LlamaForCausalLM)
    cfg = model.config
    assert cfg.num_hidden_layers == len(model.model.layers) >= 12
    assert cfg.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert next(model.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) < 2.5e6


def test_tokenizer_adds_bos_and_has_eos(tokenizer, model):
    cfg = model.config
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        cfg.bos_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
    )
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert len(tokenizer) == cfg.vocab_size
    text = "for x in range(3):\n    print(x)  # byte-level: é ∑"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(ids) < len(text)  # BPE merges, not bytes


def test_loads_with_the_projects_loader(offline):
    loaded = load_model("demo-lm")
    assert loaded.family.name == "llama"
    assert loaded.num_blocks == loaded.config.num_hidden_layers >= 12
    assert loaded.model_id == str(DEMO_LM) and loaded.revision.startswith("sha256:")


def test_held_out_perplexity_matches_the_log(model, test_rows, log):
    """exp of the mean next-token cross-entropy over the packed test split, counted here with the model's own
    `labels` loss (every sequence is full, so the batch mean is the mean over every predicted token)."""
    assert test_rows.shape[1] == SEQ_LEN and len(test_rows) >= 10
    with torch.no_grad():
        loss = model(input_ids=test_rows, labels=test_rows).loss
    ppl = math.exp(float(loss))
    claimed = log["test_ppl"]
    # the corpus is the running Python's docs: another Python's test split differs a little
    same_python = _same_python(log)
    if same_python:
        assert len(test_rows) == log["test_sequences"]
    tolerance = 0.02 if same_python else 0.1  # 3.10 to 3.13: within 3.2%
    assert abs(ppl - claimed) <= tolerance * claimed, (ppl, claimed)
    assert ppl < 0.25 * log["epochs"][0]["test_ppl"]  # trained, far below the first epoch's
    assert ppl < 100


def test_readme_states_the_logged_figures(log):
    readme = (DEMO_LM / "README.md").read_text()
    match = re.search(r"^Held-out perplexity: ([0-9.]+) ", readme, re.M)
    assert match, "models/demo-lm/README.md must state 'Held-out perplexity: NN.NNN'"
    assert float(match.group(1)) == pytest.approx(log["test_ppl"], abs=5e-4)
    assert log["command"] in readme
    assert log["seq_len"] == SEQ_LEN
    assert [row["epoch"] for row in log["epochs"]] == list(range(1, len(log["epochs"]) + 1))
    assert {"python", "torch", "transformers", "tokenizers"} <= set(log["versions"])


def test_greedy_generation_gives_tokens(model, tokenizer):
    prompt = tokenizer("The for statement", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :]
    assert 0 < len(new) <= 12
    assert tokenizer.decode(new, skip_special_tokens=True).strip()


def _training_script():
    spec = importlib.util.spec_from_file_location("train_demo_lm", REPO / "scripts" / "train_demo_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_windows_are_packed_as_the_search_packs(tokenizer):
    """The script's windows at offset 0 are `packed_tokens`' sequences: trained as the search scores."""
    script = _training_script()
    texts = list(load_split("python-docs", "test").dataset["text"])
    rows = script.windows(script.token_stream(texts, tokenizer), 0, tokenizer.bos_token_id, SEQ_LEN)
    assert torch.equal(rows, torch.as_tensor(packed_tokens(texts, tokenizer, SEQ_LEN)))
    shifted = script.windows(script.token_stream(texts, tokenizer), 7, tokenizer.bos_token_id, SEQ_LEN)
    assert torch.equal(shifted[:, 0], torch.full((len(shifted),), tokenizer.bos_token_id))
    assert torch.equal(shifted[0, 1:9], rows[0, 8:16])


def test_script_perplexity_is_the_models_loss(model, test_rows):
    """The perplexity the log records (the script's `perplexity`, summed per token) is the model's own loss."""
    script = _training_script()
    rows = test_rows[:4]
    with torch.no_grad():
        logits = model(input_ids=rows).logits[:, :-1]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
    assert script.perplexity(model, rows, batch_size=3) == pytest.approx(math.exp(float(nll)), rel=1e-5)


def _same_python(log: dict) -> bool:
    return log["versions"]["python"].rsplit(".", 1)[0] == f"{sys.version_info.major}.{sys.version_info.minor}"
