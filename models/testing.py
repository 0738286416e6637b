"""`check_family(name, directory, inputs)`: the conformance suite every registered model family passes.

A family is found by `register_family`; this suite says that it runs its parts as the stock Transformers model
does. It takes a saved model of the family (a tiny one, built from a config that carries the hub checkpoint's real
fields, is enough: random weights) and inputs its processor would make, and checks against the stock model itself:

- the model loads through the real loading path and is handled by `name`;
- with an empty plan, every hidden state `h_0 … h_L` and the forward's output equal the stock model's, exactly;
- a plan with one block replaced by `identity` equals the stock model with that layer deleted from its layer list;
- a compressed model saved with `save_pretrained` loads back (`CompressedModel.from_pretrained`) with the same
  output, and a plan of identities is a plain checkpoint that Transformers' own class loads with the same output.

`tests/models/test_family_conformance.py` runs it over every registered family, so a new family is checked on arrival.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["check_family"]


def _stock_states(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[list[torch.Tensor], object]:
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return list(out.hidden_states), out


def _stock_output(out: object) -> torch.Tensor | None:
    """What `CompressedModel.forward` returns for a model with a head: the logits, else the pooler's output."""
    for name in ("logits", "pooler_output"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    return None


def check_family(name: str, directory: str | Path, inputs: Mapping[str, torch.Tensor], *, block: int = 1) -> None:
    """Raise `AssertionError` naming the first check family `name` fails on the model saved in `directory`, run on
    `inputs` (a batch its processor would make); `block` is the block the one-block check replaces."""
    from toast.spaces import Plan

    from ._compressed import CompressedModel
    from ._families import get_family
    from ._loading import load_model
    from ._plain import load_plain

    family = get_family(name)
    loaded = load_model(str(directory))
    assert loaded.family is family, f"{directory} is handled by {loaded.family.name!r}, not {name!r}"
    L = loaded.num_blocks
    assert L >= 2 and 0 <= block < L, f"the suite needs a model of two blocks or more and a block in 0 … {L - 1}"

    # the empty plan: every state and the output, exactly
    original = CompressedModel.from_model(loaded, Plan((), L))
    with torch.no_grad():
        states, _ = original.hidden_states(inputs)
        output = original(**inputs)
    stock_states, stock = _stock_states(loaded.model, inputs)
    assert len(states) == L + 1 == len(stock_states), (
        f"{name}: {len(states)} states, the stock model {len(stock_states)}"
    )
    for k, (ours, theirs) in enumerate(zip(states, stock_states)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=lambda m, k=k: f"{name}: h_{k} differs: {m}")
    expected = _stock_output(stock)
    if expected is not None and original.head is not None:
        torch.testing.assert_close(output, expected, rtol=0, atol=0, msg=lambda m: f"{name}: the output differs: {m}")

    # one block replaced by identity: the stock model with that layer deleted
    plan = Plan.parse(f"{block - 1}→{block}:identity", L)
    compressed = CompressedModel.from_model(loaded, plan)
    shorter = copy.deepcopy(loaded.model)
    layers = family.parts(shorter).blocks
    del layers[block]
    shorter.config.num_hidden_layers = L - 1
    if isinstance(getattr(shorter.config, "layer_types", None), list):
        del shorter.config.layer_types[block]
    with torch.no_grad():
        ours = compressed.hidden_states(inputs)[0][-1]
    theirs = _stock_states(shorter, inputs)[0][-1]
    torch.testing.assert_close(
        ours, theirs, rtol=1e-6, atol=1e-6, msg=lambda m: f"{name}: block {block} removed differs from the stock: {m}"
    )

    # save and load: the toast path and, for a plan of identities, Transformers' own class
    with tempfile.TemporaryDirectory() as tmp:
        folder = compressed.save_pretrained(Path(tmp) / "saved", processor=loaded.processor)
        again = CompressedModel.from_pretrained(folder)
        with torch.no_grad():
            torch.testing.assert_close(
                again(**inputs), compressed(**inputs), rtol=0, atol=0, msg=lambda m: f"{name}: save/load: {m}"
            )
            plain = load_plain(folder, compressed.model_class).eval()
            reloaded = _stock_states(plain, inputs)[0][-1]
        torch.testing.assert_close(
            reloaded, ours, rtol=1e-6, atol=1e-6, msg=lambda m: f"{name}: the plain checkpoint differs: {m}"
        )
