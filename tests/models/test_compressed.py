"""The compressed model against independent references: the original model, hand-written forwards."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FAMILY_NAMES, example_inputs

from toast.errors import UnsupportedModelError
from toast.models import CompressedModel, load_model
from toast.spaces import LinearTranslator, PairStats, Plan


@pytest.fixture(scope="module")
def loaded(tiny_dirs):
    return {name: load_model(str(path)) for name, path in tiny_dirs.items()}


def _reference_output(lm, inputs):
    with torch.no_grad():
        out = lm.model(**inputs)
    if hasattr(out, "logits"):
        return out.logits
    return out.pooler_output


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_empty_plan_equals_original(loaded, name):
    lm = loaded[name]
    model = CompressedModel.from_model(lm, Plan((), lm.num_blocks))
    inputs = example_inputs(name)
    with torch.no_grad():
        ours = model(**inputs)
        states, _ = model.hidden_states(inputs)
        ref_states = lm.model(**inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(ours, _reference_output(lm, inputs), rtol=0, atol=0)
    assert len(states) == lm.num_blocks + 1 == len(ref_states)
    for a, b in zip(states, ref_states):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _hand_forward(name, hf, inputs, removed):
    """A forward written out by hand over the Hugging Face modules, skipping `removed` blocks."""
    if name == "bert":
        from transformers.masking_utils import create_bidirectional_mask

        h = hf.embeddings(input_ids=inputs["input_ids"])
        mask = create_bidirectional_mask(config=hf.config, inputs_embeds=h, attention_mask=inputs["attention_mask"])
        for i, layer in enumerate(hf.encoder.layer):
            if i not in removed:
                h = layer(h, mask)
        m = inputs["attention_mask"].unsqueeze(-1).float()
        return hf.pooler(h), (h * m).sum(1) / m.sum(1)
    if name == "clip":
        h = hf.pre_layrnorm(hf.embeddings(inputs["pixel_values"]))
        for i, layer in enumerate(hf.encoder.layers):
            if i not in removed:
                h = layer(h, None)
        feats = hf.post_layernorm(h[:, 0])
        return feats, feats
    if name == "dinov2":
        h = hf.embeddings(inputs["pixel_values"])
        for i, layer in enumerate(hf.encoder.layer):
            if i not in removed:
                h = layer(h)
        feats = hf.layernorm(h)[:, 0]
        return feats, feats
    if name == "vit":
        h = hf.embeddings(inputs["pixel_values"])
        for i, layer in enumerate(hf.layers):
            if i not in removed:
                h = layer(h)
        normed = hf.layernorm(h)
        return hf.pooler(normed), normed[:, 0]
    raise ValueError(name)


@pytest.mark.parametrize("name", ["vit", "dinov2", "clip", "bert"])
def test_identity_plan_equals_hand_written_skip(loaded, name):
    lm = loaded[name]
    plan = Plan.parse("-1→0:identity,1→3:identity", lm.num_blocks)  # removes blocks 0, 2, 3
    model = CompressedModel.from_model(lm, plan)
    inputs = example_inputs(name)
    with torch.no_grad():
        ref_out, ref_feats = _hand_forward(name, lm.model, inputs, plan.removed)
        torch.testing.assert_close(model(**inputs), ref_out, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.features(inputs), ref_feats, rtol=1e-6, atol=1e-6)


class CountingBlock(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block, self.calls = block, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.block(*args, **kwargs)


def _fitted(lm, plan, inputs):
    """Linear translators fitted on the model's own hidden states for these inputs."""
    with torch.no_grad():
        states, _ = CompressedModel.from_model(lm, Plan((), lm.num_blocks)).hidden_states(inputs)
    out = {}
    for span in plan.spans:
        x = states[span.source].reshape(-1, lm.hidden_size).numpy()
        y = states[span.target].reshape(-1, lm.hidden_size).numpy()
        out[span] = LinearTranslator().fit(PairStats.from_arrays(x, y))
    return out


def test_removed_blocks_never_run(loaded):
    lm = loaded["vit"]
    blocks = lm.parts.blocks
    plan = Plan.parse("0→2:linear", lm.num_blocks)
    inputs = example_inputs("vit", batch=6)
    translators = _fitted(lm, plan, inputs)
    counters = [CountingBlock(b) for b in blocks]
    original = list(blocks)
    try:
        for i, c in enumerate(counters):
            blocks[i] = c
        model = CompressedModel.from_model(lm, plan, translators)
        with torch.no_grad():
            model(**inputs)
        assert [c.calls for c in counters] == [1, 0, 0, 1]
        assert set(model.blocks) == {"0", "3"}
    finally:
        for i, b in enumerate(original):
            blocks[i] = b


def test_linear_translator_is_applied_between_kept_blocks(loaded):
    lm = loaded["dinov2"]
    plan = Plan.parse("0→2:linear", lm.num_blocks)
    inputs = example_inputs("dinov2", batch=6)
    translators = _fitted(lm, plan, inputs)
    model = CompressedModel.from_model(lm, plan, translators)
    hf = lm.model
    with torch.no_grad():
        h = hf.encoder.layer[0](hf.embeddings(inputs["pixel_values"]))
        t = translators[plan.spans[0]]
        h = torch.from_numpy(t.predict(h.reshape(-1, lm.hidden_size).numpy()).astype(np.float32)).reshape(h.shape)
        h = hf.encoder.layer[3](h)
        ref = hf.layernorm(h)[:, 0]
        torch.testing.assert_close(model.features(inputs), ref, rtol=1e-5, atol=1e-5)


def test_missing_translator_is_an_error(loaded):
    lm = loaded["vit"]
    with pytest.raises(ValueError, match="no fitted translator"):
        CompressedModel.from_model(lm, Plan.parse("0→1:linear", lm.num_blocks))


@pytest.mark.parametrize("name", ["vit-cls", "dinov2-reg", "clip", "bert"])
def test_save_load_in_a_fresh_process(loaded, name, tmp_path):
    lm = loaded[name]
    plan = Plan.parse("0→2:linear,2→3:identity", lm.num_blocks)
    inputs = example_inputs(name, batch=4)
    model = CompressedModel.from_model(lm, plan, _fitted(lm, plan, inputs))
    model.save_pretrained(tmp_path / "export", processor=lm.processor)
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs)
    code = (
        "import sys, torch\n"
        "from toast.models import CompressedModel\n"
        "m = CompressedModel.from_pretrained(sys.argv[1])\n"
        "x = torch.load(sys.argv[2])\n"
        "with torch.no_grad(): torch.save(m(**x), sys.argv[3])\n"
        "print(m.plan, m.num_parameters())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "export"), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=0)
    assert proc.stdout.split()[-1] == str(model.num_parameters())
    # only the kept blocks and the translator are stored
    from safetensors import safe_open

    with safe_open(str(tmp_path / "export" / "model.safetensors"), "pt") as f:
        stored = {k.split(".")[1] for k in f.keys() if k.startswith("blocks.")}
    assert stored == {"0"}  # blocks 1-3 are removed


def test_params_shrink_by_removed_blocks_plus_translators(loaded):
    lm = loaded["vit"]
    full = CompressedModel.from_model(lm, Plan((), lm.num_blocks)).num_parameters()
    assert full == sum(p.numel() for p in lm.model.parameters())
    plan = Plan.parse("0→2:linear", lm.num_blocks)
    model = CompressedModel.from_model(lm, plan, _fitted(lm, plan, example_inputs("vit", batch=6)))
    per_block = sum(p.numel() for p in lm.parts.blocks[1].parameters())
    d = lm.hidden_size
    assert model.num_parameters() == full - 2 * per_block + d * d + d


def test_unsupported_architecture_names_the_families(tmp_path):
    import transformers as T

    T.BloomModel(T.BloomConfig(hidden_size=32, n_layer=2, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "bloom")
    with pytest.raises(UnsupportedModelError, match="supported families are vit"):
        load_model(str(tmp_path / "bloom"))


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UnsupportedModelError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_dtypes(tiny_dirs, dtype):
    lm = load_model(str(tiny_dirs["dinov2"]), device="cuda", dtype=dtype)
    plan = Plan.parse("0→2:linear", lm.num_blocks)
    inputs = example_inputs("dinov2", batch=6)
    cpu = load_model(str(tiny_dirs["dinov2"]))
    translators = _fitted(cpu, plan, inputs)
    ref = CompressedModel.from_model(cpu, plan, translators)
    model = CompressedModel.from_model(lm, plan, translators)
    with torch.no_grad():
        out = model(**{k: v.cuda() for k, v in inputs.items()})
        assert out.dtype == dtype and out.device.type == "cuda"
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        torch.testing.assert_close(out.float().cpu(), ref(**inputs), rtol=tol, atol=tol)
