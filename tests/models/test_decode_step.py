"""A compressed causal LM decodes with a KV cache (`CompressedModel.decode_step`, the latency of
`--latency-mode decode`): greedy decoding step by step with the cache picks the tokens the model picks recomputing
every token, whatever blocks are removed (the first one included) and whatever stands in for them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_CASES, save_tiny

from toast.models import CompressedModel, load_model
from toast.spaces import Plan, translator_class

LM_CASES = sorted(case for case, family in TINY_CASES.items() if family.modality == "causal-lm")
STEPS = 5


def _translators(plan: Plan, width: int) -> dict:
    """A linear span's map: the identity plus a small random perturbation (as if fitted)."""
    rng = np.random.default_rng(0)
    out = {}
    for span in plan.spans:
        translator = translator_class(span.kind)()
        if span.kind == "linear":
            translator.weight_ = np.eye(width) + 0.05 * rng.standard_normal((width, width))
            translator.bias_ = 0.01 * rng.standard_normal(width)
        out[span] = translator
    return out


@pytest.mark.parametrize("case", LM_CASES)
def test_decode_step_with_a_cache_matches_recomputing(case, tmp_path):
    from transformers import DynamicCache

    loaded = load_model(str(save_tiny(case, tmp_path / case)), device="cpu")
    L = loaded.num_blocks
    for text in ("", "0→1:identity", "-1→0:linear", f"1→{L - 1}:linear"):
        plan = Plan.parse(text, L) if text else Plan((), L)
        model = CompressedModel.from_model(loaded, plan, _translators(plan, loaded.hidden_size)).eval()
        prompt = torch.randint(5, int(loaded.config.vocab_size), (2, 7), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            recomputed = prompt
            for _ in range(STEPS):
                logits = model(input_ids=recomputed, attention_mask=torch.ones_like(recomputed))
                recomputed = torch.cat([recomputed, logits[:, -1:].argmax(-1)], 1)
            cache = DynamicCache(config=loaded.config)
            cached, step = prompt, prompt
            for _ in range(STEPS):
                logits = model.decode_step(step, cache)
                step = logits[:, -1:].argmax(-1)
                cached = torch.cat([cached, step], 1)
        assert torch.equal(cached, recomputed), f"{case} {plan}: decoding with the cache picks other tokens"
