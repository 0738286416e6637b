"""The language-model objectives: `token_scores` against independent references written with torch's own losses,
`reference_rows` / `TokenReference`, and the three objectives' values from a token-scores array."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toast.errors import ObjectiveError
from toast.objectives import (
    OBJECTIVES,
    Role,
    TokenReference,
    compute_objectives,
    get_objectives,
    reference_rows,
    token_scores,
)
from toast.objectives.testing import ArrayTrial, check_objective, random_trial

LM_OBJECTIVES = ("perplexity", "kl", "top1")


def logits_and_ids(batch=3, tokens=9, vocabulary=17, *, scale=2.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(batch, tokens, vocabulary, generator=g, dtype=torch.float64)).to(dtype)
    ids = torch.randint(0, vocabulary, (batch, tokens), generator=g)
    return logits, ids


def compressed_of(original, *, noise=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return original + noise * torch.randn(original.shape, generator=g, dtype=original.dtype)


def exact_kl(original, compressed):
    """Per sequence, Σ over the predicting positions of KL(P ‖ Q) of the full distributions, by torch's kl_div."""
    logp = torch.log_softmax(original[:, :-1].double(), dim=-1)
    logq = torch.log_softmax(compressed[:, :-1].double(), dim=-1)
    return F.kl_div(logq, logp, log_target=True, reduction="none").sum(dim=(1, 2)).numpy()


# ---------------------------------------------------------------- token_scores against references


def test_nll_equals_cross_entropy():
    logits, ids = logits_and_ids()
    scores = token_scores(logits, ids, None)
    expected = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none").sum(dim=1)
    np.testing.assert_allclose(scores[:, 0], expected.numpy(), rtol=1e-12)
    assert scores.dtype == np.float64 and scores.shape == (3, 4)
    assert (scores[:, 3] == 8).all()  # T - 1 predicted tokens a sequence


def test_the_original_itself_has_no_kl_and_agrees_everywhere():
    logits, ids = logits_and_ids()
    scores = token_scores(logits, ids, None)
    assert (scores[:, 1] == 0).all() and (scores[:, 2] == scores[:, 3]).all()
    against_itself = token_scores(logits, ids, reference_rows(logits, k=64))
    np.testing.assert_allclose(against_itself[:, 1], 0.0, atol=1e-6)
    assert (against_itself[:, 2] == against_itself[:, 3]).all()


def test_kl_with_the_whole_vocabulary_equals_kl_div_of_the_full_distributions():
    original, ids = logits_and_ids()
    compressed = compressed_of(original)
    reference = reference_rows(original, k=1000)  # capped at the vocabulary: exact
    assert reference[0].shape == (3, 8, 17)
    scores = token_scores(compressed, ids, reference)
    np.testing.assert_allclose(scores[:, 1] / scores[:, 3], exact_kl(original, compressed) / 8, rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_kl_from_the_top_k_is_a_lower_bound(k):
    original, ids = logits_and_ids(seed=3)
    compressed = compressed_of(original, noise=1.0)
    scores = token_scores(compressed, ids, reference_rows(original, k=k))
    exact = exact_kl(original, compressed)
    assert (scores[:, 1] <= exact + 1e-9).all() and (scores[:, 1] > 0).all()


def test_kl_from_the_top_k_is_close_when_the_original_is_peaked():
    original, ids = logits_and_ids(vocabulary=200, scale=8.0, seed=4)  # most of the mass in a few tokens
    compressed = compressed_of(original, noise=0.3)
    scores = token_scores(compressed, ids, reference_rows(original, k=16))
    exact = exact_kl(original, compressed)
    assert (scores[:, 1] <= exact + 1e-9).all()
    np.testing.assert_allclose(scores[:, 1], exact, rtol=0.02)


def test_top1_agreement_equals_a_direct_argmax_comparison():
    original, ids = logits_and_ids(vocabulary=5, seed=5)
    compressed = compressed_of(original, noise=1.5)
    scores = token_scores(compressed, ids, reference_rows(original, k=2))
    direct = (compressed[:, :-1].argmax(-1) == original[:, :-1].argmax(-1)).sum(dim=1).double().numpy()
    np.testing.assert_array_equal(scores[:, 2], direct)
    assert 0 < direct.sum() < direct.size * 8  # some agree, some do not


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_equals_unchunked(chunk):
    original, ids = logits_and_ids(tokens=12, seed=6)
    compressed = compressed_of(original)
    reference = reference_rows(original, k=5, chunk=chunk)
    np.testing.assert_array_equal(reference[0], reference_rows(original, k=5)[0])
    whole = token_scores(compressed, ids, reference_rows(original, k=5), chunk=10_000)
    np.testing.assert_allclose(token_scores(compressed, ids, reference, chunk=chunk), whole, rtol=1e-12, atol=1e-12)


def test_at_most_a_chunk_of_positions_is_soft_maxed_at_once(monkeypatch):
    original, ids = logits_and_ids(tokens=10, seed=7)
    shapes = []
    log_softmax = torch.log_softmax

    def recorded(x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return log_softmax(x, *args, **kwargs)

    monkeypatch.setattr(torch, "log_softmax", recorded)
    reference = reference_rows(original, k=4, chunk=4)
    token_scores(compressed_of(original), ids, reference, chunk=4)
    assert shapes and all(s[1] <= 4 for s in shapes)
    assert sum(s[1] for s in shapes) == 2 * 9  # every predicting position once, for each function


def test_half_precision_logits_are_scored_in_float32():
    original, ids = logits_and_ids(seed=8)
    compressed = compressed_of(original)
    reference = reference_rows(original, k=6)
    half = token_scores(compressed.half(), ids, reference)
    full = token_scores(compressed.half().double(), ids, reference)
    np.testing.assert_allclose(half, full, rtol=1e-5, atol=1e-5)


def test_non_finite_logits_give_non_finite_sums():
    original, ids = logits_and_ids(seed=9)
    broken = compressed_of(original)
    broken[1, 2, 0] = float("nan")
    scores = token_scores(broken, ids, reference_rows(original, k=4))
    assert np.isnan(scores[1, :2]).all() and np.isfinite(scores[[0, 2], :2]).all()


def test_bad_inputs_name_the_rule():
    logits, ids = logits_and_ids()
    with pytest.raises(ObjectiveError, match="input_ids must be"):
        token_scores(logits, ids[:, :-1], None)
    with pytest.raises(ObjectiveError, match="at least two tokens"):
        token_scores(logits[:, :1], ids[:, :1], None)
    with pytest.raises(ObjectiveError, match="the reference must be"):
        token_scores(logits, ids, reference_rows(logits[:2], k=3))
    with pytest.raises(ObjectiveError, match=r"\(batch, tokens, vocabulary\)"):
        reference_rows(logits[0])


# ---------------------------------------------------------------- the reference


def test_reference_rows_are_the_sorted_top_k_log_probabilities():
    logits, _ = logits_and_ids(seed=10)
    ids, logprobs = reference_rows(logits, k=4)
    assert ids.dtype == np.int32 and logprobs.dtype == np.float32 and ids.shape == logprobs.shape == (3, 8, 4)
    expected = torch.topk(torch.log_softmax(logits[:, :-1], dim=-1), 4)
    np.testing.assert_array_equal(ids, expected.indices.numpy())
    np.testing.assert_allclose(logprobs, expected.values.numpy(), rtol=1e-6)
    assert (np.diff(logprobs, axis=-1) <= 0).all()


def test_token_reference_joins_batches_and_gives_rows_back():
    logits, ids = logits_and_ids(batch=5, seed=11)
    reference = TokenReference.from_batches([reference_rows(logits[:2], k=3), reference_rows(logits[2:], k=3)])
    assert len(reference) == 5 and reference.k == 3
    compressed = compressed_of(logits)
    batched = token_scores(compressed[2:4], ids[2:4], reference.rows(slice(2, 4)))
    np.testing.assert_allclose(batched, token_scores(compressed, ids, reference.rows(slice(None)))[2:4], rtol=1e-12)
    with pytest.raises(ObjectiveError, match="both be"):
        TokenReference(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(ObjectiveError, match="at least one batch"):
        TokenReference.from_batches([])


# ---------------------------------------------------------------- the objectives


def lm_trial(scores):
    base = random_trial()
    return ArrayTrial(
        plan=base.plan,
        cost=base.cost,
        eval_features=base.eval_features,
        probe_features=base.probe_features,
        eval_logits=base.eval_logits,
        eval_labels=base.eval_labels,
        probe_labels=base.probe_labels,
        original_features=base.original_features,
        token_scores=None if scores is None else np.asarray(scores, dtype=np.float64),
    )


def test_the_objectives_read_their_values_from_the_token_scores():
    scores = [[10.0, 0.5, 7.0, 8.0], [6.0, 0.3, 5.0, 8.0]]  # nll, kl, agreements, tokens
    trial = lm_trial(scores)
    values = compute_objectives(trial, get_objectives("perplexity,gflops"))
    assert values["perplexity"] == pytest.approx(math.exp(16.0 / 16.0))
    assert values["kl"] == pytest.approx(0.8 / 16.0) and values["top1"] == pytest.approx(100 * 12 / 16)
    assert [k for k in values if not k.endswith("_se")][:3] == ["perplexity", "kl", "top1"]  # the same pass
    # standard errors from the spread over the two sequences (each one's mean per token), independently computed
    nll, kl, agree = np.array([10.0, 6.0]) / 8, np.array([0.5, 0.3]) / 8, np.array([7.0, 5.0]) / 8
    assert values["perplexity_se"] == pytest.approx(math.exp(1.0) * nll.std(ddof=1) / math.sqrt(2))
    assert values["kl_se"] == pytest.approx(kl.std(ddof=1) / math.sqrt(2))
    assert values["top1_se"] == pytest.approx(100 * agree.std(ddof=1) / math.sqrt(2))
    assert trial.passes == {"token_scores": 1} and trial.read >= {"token_scores"}


def test_non_finite_scores_are_undefined_with_a_reason():
    values = compute_objectives(lm_trial([[math.nan, math.nan, 0.0, 8.0]]), get_objectives("perplexity,kl"))
    assert values["perplexity"] is None and "not finite" in values["perplexity_undefined"]
    assert values["kl"] is None and "not finite" in values["kl_undefined"]
    assert values["top1"] == 0.0
    huge = OBJECTIVES["perplexity"].compute(lm_trial([[1e6, 0.0, 0.0, 8.0]]))
    assert huge["perplexity"] is None and "overflows" in huge["perplexity_undefined"]


def test_no_predicted_token_is_refused():
    with pytest.raises(ObjectiveError, match="at least two tokens"):
        OBJECTIVES["perplexity"].compute(lm_trial(np.zeros((2, 4))))


def test_a_trial_without_token_scores_says_so():
    trial = lm_trial(None)
    assert not trial.available("token_scores")
    with pytest.raises(ObjectiveError, match="no token_scores"):
        OBJECTIVES["kl"].compute(trial)
    values = compute_objectives(trial, get_objectives("fidelity,gflops"))
    assert not set(values) & set(LM_OBJECTIVES)  # not computable without a pass: not reported


@pytest.mark.parametrize("name", LM_OBJECTIVES)
def test_the_lm_objectives_conform(name):
    check_objective(name)
    objective = OBJECTIVES[name]
    assert objective.needs == frozenset({"token_scores"}) and objective.rescored
    assert objective.standard_error(1.0, 100) is None  # per-sequence spread unknown: no early stop


def test_perplexity_is_the_lm_task_score():
    assert OBJECTIVES["perplexity"].role is Role.ACCURACY and OBJECTIVES["perplexity"].direction == "minimize"
    assert OBJECTIVES["kl"].role is Role.MEASURE and OBJECTIVES["top1"].role is Role.MEASURE
    assert OBJECTIVES["top1"].worst_value == 0.0 and OBJECTIVES["kl"].worst_value == math.inf
