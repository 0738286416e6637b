"""The decoder families beyond the shared suite (`check_family`, run on each of them by test_family_conformance):
the suite catches a decoder that ignores padding, a block's attention kind or its soft-capping, a plain export whose
layers are not renumbered, a KV cache indexed wrong; per-layer fields renumbered, folded maps against the block's
own arithmetic, the tied LM head counted once, last-token features, the tiny tokenizer, one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from toast.errors import UnsupportedModelError
from toast.models import CompressedModel, describe_checkpoint, get_family, list_families
from toast.models import _family as registry
from toast.models.families import CausalLMFamily, Gemma2Family, Gemma3Family, LlamaFamily
from toast.models.testing import (
    check_empty_plan,
    check_generate,
    check_one_block_removed,
    check_plain_export,
    family_case,
    family_checks,
)
from toast.spaces import Plan, translator_class

DECODERS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "gpt2")
#: the decoders whose MLP branch ends in a linear projection a map folds into (Gemma's ends in an RMSNorm)
FOLDABLE = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gpt2")


def _tiny(name: str, seed: int = 0, **overrides) -> tuple[CausalLMFamily, torch.nn.Module]:
    family = get_family(name)
    config = family.tiny_config(**overrides)
    torch.manual_seed(seed)
    return family, getattr(transformers, config.architectures[0])(config).eval()


def test_the_decoders_are_registered_language_models():
    for name in DECODERS:
        family = get_family(name)
        assert name in list_families() and isinstance(family, CausalLMFamily)
        assert family.modality == "causal-lm" and family.generates
        assert check_generate in family_checks(name)
    assert check_generate not in family_checks("bert")  # encoders generate nothing


# ---- the suite catches broken decoders -------------------------------------------------------------------------
class _MaskLessLlama(LlamaFamily):
    """Its blocks never see the padding (no attention mask: causal, but padded tokens attended to)."""

    def causal_masks(self, config, hidden, mask, positions):
        return dict.fromkeys(self.layer_types(config))


class _FullOnlyGemma2(Gemma2Family):
    """Runs every block with the full causal mask, its sliding-window blocks too."""

    def layer_type(self, block):
        return "full_attention"


class _NoSoftcapGemma2(Gemma2Family):
    """Leaves Gemma 2's final logit soft-capping out."""

    def run_head(self, head, kind, normed, mask, config):
        return head(normed)


class _UnrenumberedGemma3(Gemma3Family):
    """Makes a checkpoint of k layers with the attention kinds of the first k layers, not of the kept ones."""

    def kept_config(self, config, kept):
        small = super().kept_config(config, kept)
        small.layer_types = list(config.layer_types[: len(kept)])
        return small


class _UntiedLlama(LlamaFamily):
    """Hands the tied LM head over as a module of its own: the shared matrix counted twice."""

    def find_head(self, model, backbone):
        return model.lm_head, "lm"


@pytest.fixture
def swap(monkeypatch):
    """Put a broken family in a registered one's place for one test (the registry is restored afterwards)."""

    def put(cls):
        monkeypatch.setitem(registry._REGISTRY, cls.name, cls())

    return put


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (_MaskLessLlama, check_empty_plan, r"llama: h_1 differs"),
        (_FullOnlyGemma2, check_empty_plan, r"gemma2: h_1 differs"),
        (_NoSoftcapGemma2, check_empty_plan, r"gemma2: the output differs"),
        (_UnrenumberedGemma3, check_one_block_removed, r"gemma3: block 1 removed differs"),
        (_UnrenumberedGemma3, check_plain_export, r"gemma3: the plain checkpoint's output differs"),
    ],
    ids=lambda p: getattr(p, "__name__", "")[:30],
)
def test_the_suite_catches_a_broken_decoder(swap, cls, check, message):
    swap(cls)
    with family_case(cls.name) as case, pytest.raises(AssertionError, match=message):
        check(case)


def test_the_tied_head_is_counted_once(swap):
    from toast.models.testing import check_cost

    swap(_UntiedLlama)
    with family_case("llama") as case, pytest.raises(AssertionError, match=r"llama: plan 'empty' costs \d+ params"):
        check_cost(case)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_check_generate_catches_a_cache_indexed_by_the_source_layers(monkeypatch, name):
    """A plain checkpoint whose attentions kept their source's indices (0, 2, 3, … with block 1 removed) indexes its
    KV cache past its layers: the check says so in one line."""
    load = transformers.AutoModelForCausalLM.from_pretrained

    def source_indices(*args, **kwargs):
        model = load(*args, **kwargs)
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.layer_idx = i + (i >= 1)
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", source_indices)
    message = rf"{name}: the plain checkpoint does not generate with its KV cache: IndexError"
    with family_case(name) as case, pytest.raises(AssertionError, match=message):
        check_generate(case)


# ---- per-layer fields ------------------------------------------------------------------------------------------
def test_a_kept_config_renumbers_every_per_layer_field():
    """Qwen2 with its sliding window from layer 2 on: the kept layers 0, 2, 3 keep their kinds (full, sliding,
    sliding), the window starts at the kept layer 1, and a model built from it numbers its attentions 0 … 2 with
    the sliding window where its blocks had it."""
    family, model = _tiny("qwen2", use_sliding_window=True, max_window_layers=2)
    config = model.config
    assert list(config.layer_types) == ["full_attention"] * 2 + ["sliding_attention"] * 2
    small = family.kept_config(config, [0, 2, 3])
    assert (small.num_hidden_layers, small.max_window_layers) == (3, 1)
    assert list(small.layer_types) == ["full_attention", "sliding_attention", "sliding_attention"]
    assert config.num_hidden_layers == 4  # the source's config is left as it was
    built = transformers.Qwen2ForCausalLM(small)
    attns = [layer.self_attn for layer in built.model.layers]
    assert [a.layer_idx for a in attns] == [0, 1, 2]
    assert [a.sliding_window for a in attns] == [None, 4, 4]
    gemma = get_family("gemma3").tiny_config()
    assert list(get_family("gemma3").kept_config(gemma, [0, 2, 3, 4, 5]).layer_types) == [
        *("sliding_attention",) * 4,
        "full_attention",
    ]


def test_qwen2_with_its_sliding_window_passes_the_suite():
    """Qwen2's sliding layers (`use_sliding_window`) run, lose a full neighbour and generate as the stock model."""
    config = get_family("qwen2").tiny_config(use_sliding_window=True, max_window_layers=2)
    with family_case("qwen2", config) as case:
        for check in (check_empty_plan, check_one_block_removed, check_generate):
            check(case)


# ---- the MLP branch --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FOLDABLE)
def test_a_folded_map_is_the_mlp_branch_mapped(name):
    """`fold_mlp_output(block, A, b)` computes `h_out - m + (m @ A + b)`, `m` the block's MLP branch (an `nn.Linear`
    or GPT-2's `Conv1D` last): against the unfolded block's own states."""
    family, model = _tiny(name)
    config, block = model.config, family.parts(model).blocks[1]
    g = torch.Generator().manual_seed(0)
    d = config.hidden_size
    h = torch.randn(2, 5, d, generator=g)
    kwargs = family.block_kwargs(config, h, torch.ones(2, 5, dtype=torch.bool))
    branch = []
    hook = family.mlp_branch(block).register_forward_hook(lambda _m, _a, out: branch.append(out))
    with torch.no_grad():
        out = family.run_block(block, h, kwargs)
    hook.remove()
    a = np.random.default_rng(0).normal(size=(d, d)) / d**0.5
    b = np.random.default_rng(1).normal(size=d)
    folded = family.fold_mlp_output(block, a, b)
    with torch.no_grad():
        got = family.run_block(folded, h, kwargs)
    m = branch[0]
    expected = out - m + m @ torch.as_tensor(a, dtype=m.dtype) + torch.as_tensor(b, dtype=m.dtype)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the source block is left as it was
        torch.testing.assert_close(family.run_block(block, h, kwargs), out, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_gemma_refuses_a_folded_map(name):
    family, model = _tiny(name)
    block = family.parts(model).blocks[0]
    assert translator_class("folded").refuse_family(family, block)
    with pytest.raises(UnsupportedModelError, match="no MLP branch to fold"):
        family.fold_mlp_output(block, np.eye(model.config.hidden_size), np.zeros(model.config.hidden_size))


# ---- the head and the features --------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "tied"), [("llama", True), ("gpt2", True), ("mistral", False)])
def test_the_lm_head_shares_the_embeddings_matrix_where_tied(tmp_path, name, tied):
    """A tied head computes with the embeddings' matrix without owning it: the compressed model counts and saves
    it once, as the stock model does; an untied head is the stock `lm_head`."""
    from toast.models import load_model

    family, model = _tiny(name)
    model.save_pretrained(tmp_path / "m")
    family.save_tiny_processor(model.config, tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    compressed = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    assert (compressed.head is not loaded.model.lm_head) == tied
    assert compressed.num_parameters() == loaded.model.num_parameters()
    shorter = CompressedModel.from_model(loaded, Plan.parse("0→1:identity", loaded.num_blocks))
    folder = shorter.save_pretrained(tmp_path / "toast", layout="toast")  # one copy of the matrix saved
    again = CompressedModel.from_pretrained(folder)  # and the tie made again
    assert again.num_parameters() == shorter.num_parameters()
    assert hasattr(again.head, "lm_head") == tied  # a `TiedHead` over the skeleton's tied `lm_head`


def test_features_are_the_last_real_tokens_state():
    """`features` is the final-normed state of each sequence's last real token, with right or left padding."""
    with family_case("llama") as case:
        model = CompressedModel.from_model(case.loaded, Plan((), case.loaded.num_blocks))
        with torch.no_grad():
            states, mask = model.hidden_states(case.inputs)
            normed = model.family.normalize(model.final_norm, states[-1])
            features = model.features(case.inputs)
    assert mask[0, 5] and not mask[0, 6] and not mask[1, 0] and mask[1, -1]  # right, then left padding
    torch.testing.assert_close(features, normed[torch.arange(3), torch.tensor([5, 9, 9])], rtol=0, atol=0)


def test_a_plain_decoder_checkpoint_says_it_generates(tmp_path):
    with family_case("qwen3") as case:
        plan = Plan.parse("0→1:identity", case.loaded.num_blocks)
        folder = CompressedModel.from_model(case.loaded, plan).save_pretrained(tmp_path / "plain")
    assert 'pipeline("text-generation")' in describe_checkpoint(folder)


# ---- tiny tokenizers and refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", DECODERS)
def test_the_tiny_tokenizer_has_the_configs_special_tokens(tmp_path, name):
    family, model = _tiny(name)
    config = model.config
    family.save_tiny_processor(config, tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    first = lambda v: v[0] if isinstance(v, list) else v  # noqa: E731
    assert (tok.bos_token_id, tok.eos_token_id) == (first(config.bos_token_id), first(config.eos_token_id))
    assert tok.pad_token_id == (config.pad_token_id if config.pad_token_id is not None else tok.eos_token_id)
    assert len(tok) == config.vocab_size
    ids = tok("a short sentence, é")["input_ids"]
    assert max(ids) < config.vocab_size and tok.decode(ids) == "a short sentence, é"


def test_a_gpt2_scaled_by_layer_index_is_refused_in_one_line():
    family, model = _tiny("gpt2", scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(UnsupportedModelError, match=r"scale_attn_by_inverse_layer_idx") as err:
        family.parts(model)
    assert "\n" not in str(err.value)


def test_a_bidirectional_gemma3_is_refused_in_one_line():
    family, model = _tiny("gemma3", use_bidirectional_attention=True)
    with pytest.raises(UnsupportedModelError, match=r"not a causal language model") as err:
        family.parts(model)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_a_compiled_decoding_step_and_forward_are_one_graph_each(name):
    """The rotary embedding is built once per model (`rotary_embedding`), not inside a forward, where dynamo cannot
    trace its import and construction: built there, it cut demo-lm's decoding step into 5 graphs. Gemma 3 has one
    rotary embedding per attention kind."""
    from transformers import DynamicCache

    with family_case(name) as case:
        model = CompressedModel.from_model(case.loaded, Plan.parse("1→2:identity", case.loaded.num_blocks)).eval()
        ids = case.inputs["input_ids"][:1]
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model.decode_step(ids, cache)
            torch._dynamo.reset()
            step = torch._dynamo.explain(model.decode_step)(ids[:, -1:], cache)
            torch._dynamo.reset()
            forward = torch._dynamo.explain(model.export_module())(**{k: v[:1] for k, v in case.inputs.items()})
        torch._dynamo.reset()
    assert (step.graph_count, step.graph_break_count) == (1, 0), step.break_reasons
    assert (forward.graph_count, forward.graph_break_count) == (1, 0), forward.break_reasons
