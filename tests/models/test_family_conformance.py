"""Every registered model family passes `check_family` (`toast.models.testing`) on each of its tiny models (its
`tiny_models`: a new family brings its own and is checked against its stock Transformers model on arrival); the
suite itself catches broken families; a family is one module, and no code outside the families asks for a modality."""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from lm_hub import LM_HUB
from test_hub_layouts import HUB
from test_plain_checkpoint import MINILM_CONFIG

from toast.models import Family, get_family, list_families, register_family, registered_families
from toast.models import _family as registry
from toast.models.families import BertFamily, ClipVisionFamily, ViTFamily
from toast.models.testing import (
    check_cost,
    check_empty_plan,
    check_example_inputs,
    check_family,
    check_one_block_removed,
    check_plain_export,
    check_save_load,
    family_case,
    family_checks,
    run_without_toast,
)

ROOT = Path(__file__).resolve().parents[2]
#: where a modality may be compared: what a dataset holds (data loading), whether a dataset suits the model, and the
#: model card's task tag and loading snippet
ALLOWED = ("data/", "capture/_calibration.py", "search/_card.py")
#: every tiny model of every registered family: (family, tiny case)
TINY = [(f.name, case) for f in registered_families() for case in f.tiny_models]
CASES = [
    pytest.param(family, case, check, id=f"{case}-{check.__name__.removeprefix('check_')}")
    for family, case in TINY
    for check in family_checks(family)
]


@pytest.fixture(scope="module")
def cases():
    """Each tiny model saved and loaded once for the module's checks."""
    with ExitStack() as stack:
        yield {
            case: stack.enter_context(family_case(family, get_family(family).tiny_config(case)))
            for family, case in TINY
        }


def test_every_registered_family_has_a_tiny_model():
    missing = [f.name for f in registered_families() if not f.tiny_models]
    assert not missing, f"families without a tiny test model (tiny_models): {missing}"


@pytest.mark.parametrize(("family", "case", "check"), CASES)
def test_every_family_passes_the_suite(family, case, check, cases):
    torch.manual_seed(0)
    check(cases[case])


def test_check_family_runs_the_checks_on_a_config(monkeypatch):
    """The importable entry point (a family's own tests call it): a config in, the checks asked for run on it, a
    broken family caught."""
    checks = (check_empty_plan, check_one_block_removed)
    check_family("bert", get_family("bert").tiny_config(), checks=checks)
    monkeypatch.setitem(registry._REGISTRY, "bert", _MaskLessBert())
    with pytest.raises(AssertionError, match="bert: h_1 differs"):
        check_family("bert", checks=checks)


def test_the_tiny_configs_carry_the_hub_checkpoints_fields():
    """A tiny config is the reference checkpoint's config.json with tiny sizes: every other published field the
    same (CLIP's tiny model keeps openai's quick_gelu, which laion's checkpoints replace with gelu)."""
    sizes = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size"}
    sizes |= {"patch_size", "vocab_size", "max_position_embeddings", "projection_dim"}
    meta = {"architectures", "id2label", "label2id", "_name_or_path", "transformers_version", "torch_dtype"}
    meta |= {"gradient_checkpointing", "position_embedding_type"}  # fields Transformers 5 no longer reads
    meta |= {"model_type"}  # facebook/deit-small-patch16-224 is a ViT checkpoint: its fields are DeiT's as well
    clip = HUB["laion/CLIP-ViT-B-16-laion2B-s34B-b88K"][0]["vision_config"]
    references = {
        "vit-cls": HUB["google/vit-base-patch16-224"][0],
        "deit": HUB["facebook/deit-small-patch16-224"][0],
        "dinov2": HUB["facebook/dinov2-base"][0],
        "clip": {**clip, "hidden_act": "quick_gelu"},
        "bert": MINILM_CONFIG,
    }
    for case, hub in references.items():
        family = next(f for f in registered_families() if case in f.tiny_models)
        config = family.tiny_config(case).to_dict()
        differ = {k: (v, config.get(k)) for k, v in hub.items() if k not in sizes | meta and config.get(k) != v}
        assert not differ, f"{case}: (hub, tiny) {differ}"


#: the fields a tiny decoder config may shrink (`CausalLMFamily.tiny_sizes`; GPT-2 names them its own way)
DECODER_SIZES = {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size"}
DECODER_SIZES |= {"head_dim", "vocab_size", "sliding_window", "n_embd", "n_layer", "n_head", "n_positions", "n_ctx"}


@pytest.mark.parametrize("case", list(LM_HUB))
def test_the_decoder_tiny_configs_carry_the_hub_checkpoints_fields(case):
    """A decoder's tiny config is its checkpoint's config.json as its config class reads it (`rope_scaling` and
    `rope_theta` become `rope_parameters`, Gemma 3's `sliding_window_pattern` its `layer_types`) with tiny sizes,
    every other field the same, and the checkpoint's token ids moved into the tiny vocabulary (`id mod vocab_size`)."""
    hub_id, hub = LM_HUB[case]
    family = next(f for f in registered_families() if case in f.tiny_models)
    assert set(family.tiny_sizes) <= DECODER_SIZES, f"{family.name} shrinks fields that are no sizes"
    tiny = family.tiny_config(case)
    assert tiny.architectures == hub["architectures"], f"{case}: not {hub_id}'s class"
    meta = {"_name_or_path", "auto_map", "architectures", "transformers_version", "torch_dtype", "dtype"}
    ids = {"bos_token_id", "eos_token_id", "pad_token_id"}
    sizes = {k: v for k, v in family.tiny_sizes.items() if hub.get(k) is not None}
    read = type(tiny)(**{**{k: v for k, v in hub.items() if k not in meta}, **sizes}).to_dict()
    ours = tiny.to_dict()
    differ = {k: (v, ours.get(k)) for k, v in read.items() if k not in meta | ids and ours.get(k) != v}
    assert not differ, f"{case}: (hub {hub_id}, tiny) {differ}"
    vocab = ours["vocab_size"]
    for key in ids:
        published = hub.get(key)
        wrapped = [i % vocab for i in published] if isinstance(published, list) else published
        wrapped = wrapped % vocab if isinstance(wrapped, int) else wrapped
        assert ours.get(key) == wrapped, f"{case}: {key} {ours.get(key)}, not {hub_id}'s {published} in the tiny vocab"


# ---- the suite catches broken families -------------------------------------------------------------------------
class _MaskLessBert(BertFamily):
    """Its blocks never see the attention mask: padded tokens are attended to."""

    def block_kwargs(self, config, hidden, mask, *, rotary=None):
        return {}


class _PreNormLessClip(ClipVisionFamily):
    """Leaves CLIP's norm before the first block out of the embeddings."""

    def find_embeddings(self, backbone):
        return backbone.embeddings


class _ExtraInputViT(ViTFamily):
    """Its example inputs carry a name the model does not take."""

    def example_inputs(self, config, *, batch=1, seq_len=None, processor=None):
        return {**super().example_inputs(config, batch=batch, processor=processor), "pixel_mask": torch.ones(batch)}


class _AllLayersViT(ViTFamily):
    """Makes its checkpoints' config for every layer, not for the kept ones."""

    def kept_config(self, config, kept):
        return super().kept_config(config, range(config.num_hidden_layers))


class _UnevenViT(ViTFamily):
    """Runs a block marked `twice` two times: blocks of one weight shape that cost differently (the cost table
    traces one block of each shape)."""

    def run_block(self, block, hidden, kwargs):
        out = super().run_block(block, hidden, kwargs)
        return super().run_block(block, out, kwargs) if getattr(block, "twice", False) else out


@pytest.fixture
def swap(monkeypatch):
    """Put a broken family in a registered one's place for one test (the registry is restored afterwards)."""

    def put(cls: type[Family]) -> None:
        monkeypatch.setitem(registry._REGISTRY, cls.name, cls())

    return put


@pytest.mark.parametrize(
    ("cls", "case", "check", "message"),
    [
        (_MaskLessBert, "bert", check_empty_plan, r"bert: h_1 differs"),
        (_MaskLessBert, "bert", check_one_block_removed, r"bert: block 1 removed differs"),
        (_PreNormLessClip, "clip", check_empty_plan, r"clip-vision: h_0 differs"),
        (_ExtraInputViT, "vit", check_example_inputs, r"vit: example_inputs .* not the family's inputs"),
        (_AllLayersViT, "vit", check_save_load, r"cannot save a plain Transformers checkpoint"),
        (_AllLayersViT, "vit", check_plain_export, r"vit: a plan of identities saved as 'toast'"),
        (_UnevenViT, "vit", check_cost, r"vit: plan 'empty' costs \d+ FLOPs, fvcore counts \d+"),
    ],
)
def test_the_suite_catches_a_broken_family(swap, cls, case, check, message):
    swap(cls)
    family = get_family(cls.name)
    with family_case(family.name, family.tiny_config(case)) as made:
        made.loaded.parts.blocks[-1].twice = True  # read by _UnevenViT only
        with pytest.raises((AssertionError, ValueError), match=message):
            check(made)


def test_scripts_run_in_one_process_without_toast(tmp_path):
    """`check_plain_export`'s process: its arguments as `sys.argv`, `import toast` failing there, a script's failure
    raised with its traceback, and the same process for the next script."""
    pid = tmp_path / "pid"
    run_without_toast("import os, sys; open(sys.argv[1], 'w').write(f'{os.getpid()} {sys.argv[2]}')", pid, "a")
    with pytest.raises(AssertionError, match="toast is not importable in this check"):
        run_without_toast("import toast.models")
    run_without_toast("import os, sys; assert open(sys.argv[1]).read() == f'{os.getpid()} a'", pid)


def test_an_unknown_family_is_named():
    from toast.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=r"unknown model family 'no-such' \(known: vit"):
        check_family("no-such")


def test_a_model_type_is_claimed_once():
    class AnotherViT(Family):
        name = "another-vit"
        modality = "image"
        input_names = ("pixel_values",)
        model_types = ("vit",)

    with pytest.raises(ValueError, match="already 'vit'"):
        register_family(AnotherViT)
    assert "another-vit" not in list_families()


def test_a_family_names_what_it_leaves_unset():
    class Nameless(Family):
        model_types = ("nameless",)

    with pytest.raises(TypeError, match="does not set name, modality, input_names"):
        register_family(Nameless)


def test_no_code_tests_a_modality_outside_the_families():
    """How a model is called is its family's business: no `modality == "text"` (or "image") branch in the packages
    outside `models/families/`. `ALLOWED` read a dataset's or a family's modality for what the inputs or the outputs
    are, not for how the model runs."""
    pattern = re.compile(r"""modality\s*(==|!=)\s*["']|["']\s*(==|!=)\s*\S*modality""")
    found = []
    for folder in ("search", "models", "data", "capture", "spaces", "objectives", "runners", "toast", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where.startswith("models/families/") or where.startswith(ALLOWED):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{where}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
