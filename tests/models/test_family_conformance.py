"""Every registered model family passes `check_family` (`toast.models.testing`) on a tiny model of it: a new
family must add its tiny model here, and is then checked against its stock Transformers model on arrival."""

from __future__ import annotations

import pytest
import torch
from conftest import example_inputs

from toast.models import list_families
from toast.models.testing import check_family

#: a tiny model (`conftest.FAMILY_NAMES`) of each registered family, and the inputs it takes
TINY = {"vit": "vit", "deit": "deit", "dinov2": "dinov2", "clip-vision": "clip", "bert": "bert"}
#: more layouts of a family than its first tiny model: a classification head, register tokens
MORE = {"vit-cls": "vit", "dinov2-reg": "dinov2"}


def test_every_registered_family_has_a_tiny_model():
    assert set(list_families()) == set(TINY), "add a tiny model of the new family to TINY (and conftest)"


@pytest.mark.parametrize("tiny, family", [*((t, f) for f, t in TINY.items()), *MORE.items()])
def test_the_family_runs_its_parts_as_the_stock_model_does(tiny, family, tiny_dirs):
    torch.manual_seed(0)
    check_family(family, tiny_dirs[tiny], example_inputs("bert" if family == "bert" else "vit"))


def test_a_family_that_breaks_a_rule_fails_the_suite(tiny_dirs, monkeypatch):
    """The suite can fail: a family whose blocks skip the attention mask (BERT's padded batches) is caught."""
    from toast.models import get_family

    bert = get_family("bert")
    monkeypatch.setattr(type(bert), "block_mask", lambda self, config, hidden, mask: None)
    with pytest.raises(AssertionError, match="bert"):
        check_family("bert", tiny_dirs["bert"], example_inputs("bert"))


def test_a_model_type_is_claimed_once():
    from toast.models import Family, register_family

    class AnotherViT(Family):
        name = "another-vit"
        model_types = ("vit",)

    with pytest.raises(ValueError, match="already 'vit'"):
        register_family(AnotherViT)
    assert "another-vit" not in list_families()
