"""Similarity metrics from `ActivationStats`, each checked against numpy on the raw activations."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from toast.errors import MissingDependencyError
from toast.objectives import SampledSimilarity, SimilarityReport, plot_cka, plot_similarity
from toast.objectives._similarity import block_redundancy, cka_matrix, cosine_cls_matrix, state_names
from toast.spaces import ActivationStats, StatsAccumulator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RTOL = 1e-8


# ---------------------------------------------------------------- helpers


def residual_states(
    seed: int, *, num_states: int = 5, batch: int = 4, tokens: int = 6, dim: int = 8
) -> list[torch.Tensor]:
    """`h_0 … h_{S-1}` of shape (B, N, d), each a residual update of the previous, with a large mean."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, tokens, dim, generator=g, dtype=torch.float64) + 5.0
    states = [h]
    for k in range(1, num_states):
        update = torch.tanh(states[-1] @ torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5)
        states.append(
            states[-1] + (0.2 * k) * update + 0.05 * torch.randn(batch, tokens, dim, generator=g, dtype=torch.float64)
        )
    return states


def accumulate(batches: list[list[torch.Tensor]], masks: list[torch.Tensor] | None = None) -> ActivationStats:
    """Statistics of several batches, products in float64 so that the reference comparison is tight."""
    num_states, dim = len(batches[0]), batches[0][0].shape[-1]
    acc = StatsAccumulator(num_states, dim, product_dtype=torch.float64)
    for b, states in enumerate(batches):
        acc.update(states, mask=None if masks is None else masks[b])
    return acc.result()


def stacked_tokens(batches: list[list[torch.Tensor]], masks: list[torch.Tensor] | None = None) -> list[np.ndarray]:
    """Per state, every real token of every batch stacked as a (T, d) float64 array."""
    out = []
    for k in range(len(batches[0])):
        rows = []
        for b, states in enumerate(batches):
            h = states[k].numpy().astype(np.float64)
            rows.append(h.reshape(-1, h.shape[-1]) if masks is None else h[masks[b].numpy().astype(bool)])
        out.append(np.concatenate(rows))
    return out


def cka_feature_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA, feature-space form, directly on centered activations."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def cka_kernel_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA, sample-space HSIC form (Kornblith et al. 2019, Eq. 3): tr(KHLH)/sqrt(tr(KHKH) tr(LHLH))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    kx, ky = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return np.sum(kx * ky) / np.sqrt(np.sum(kx * kx) * np.sum(ky * ky))


def br_reference(tokens: list[np.ndarray]) -> np.ndarray:
    return np.array([np.nan] + [-np.mean((tokens[k] - tokens[k - 1]) ** 2) for k in range(1, len(tokens))])


@pytest.fixture(scope="module")
def batches() -> list[list[torch.Tensor]]:
    return [residual_states(seed) for seed in (0, 1, 2)]


@pytest.fixture(scope="module")
def stats(batches) -> ActivationStats:
    return accumulate(batches)


# ---------------------------------------------------------------- CKA


def test_cka_equals_numpy_on_stacked_activations(batches, stats):
    tokens = stacked_tokens(batches)
    got = cka_matrix(stats)
    S = len(tokens)
    feature = np.array([[cka_feature_reference(tokens[i], tokens[j]) for j in range(S)] for i in range(S)])
    kernel = np.array([[cka_kernel_reference(tokens[i], tokens[j]) for j in range(S)] for i in range(S)])
    assert got.shape == (S, S) and got.dtype == np.float64
    np.testing.assert_allclose(got, feature, rtol=RTOL, atol=0)
    np.testing.assert_allclose(got, kernel, rtol=RTOL, atol=0)


def test_cka_diagonal_is_one_and_matrix_symmetric(stats):
    got = cka_matrix(stats)
    np.testing.assert_array_equal(np.diag(got), np.ones(stats.num_states))
    np.testing.assert_array_equal(got, got.T)
    off_diagonal = got[~np.eye(stats.num_states, dtype=bool)]
    assert np.all((off_diagonal > 0) & (off_diagonal < 1))


def test_cka_invariant_to_rotation_scaling_and_translation():
    g = torch.Generator().manual_seed(7)
    d = 6
    h0 = torch.randn(5, 4, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    h1 = 2.5 * h0 @ q + 3.0  # rotated, isotropically scaled and shifted copy of h0
    h2 = torch.tanh(h0 @ torch.randn(d, d, generator=g, dtype=torch.float64)) + 0.3 * torch.randn(
        5, 4, d, generator=g, dtype=torch.float64
    )
    h3 = -0.1 * h2 @ q.T  # and of h2
    got = cka_matrix(accumulate([[h0, h1, h2, h3]]))
    assert got[0, 1] == pytest.approx(1.0, rel=RTOL)
    assert got[2, 3] == pytest.approx(1.0, rel=RTOL)
    assert got[0, 2] < 0.99
    for a, b in [((0, 2), (1, 2)), ((0, 2), (0, 3)), ((0, 2), (1, 3))]:
        assert got[a] == pytest.approx(got[b], rel=RTOL)


def test_cka_of_a_constant_state_is_nan():
    states = residual_states(3, num_states=3)
    states[0] = torch.full_like(states[0], 2.0)
    got = cka_matrix(accumulate([states]))
    assert np.all(np.isnan(got[0])) and np.all(np.isnan(got[:, 0]))
    assert np.all(np.isfinite(got[1:, 1:]))


def test_cka_reads_a_memory_mapped_gram(stats, tmp_path):
    stats.save(tmp_path)
    loaded = ActivationStats.load(tmp_path)
    assert isinstance(loaded.gram, np.memmap)
    np.testing.assert_allclose(cka_matrix(loaded), cka_matrix(stats), rtol=1e-12)


# ---------------------------------------------------------------- [CLS] cosine


def test_cosine_cls_equals_numpy_on_cls_tokens(batches, stats):
    cls = [np.concatenate([states[k][:, 0, :].numpy() for states in batches]) for k in range(stats.num_states)]
    unit = [c / np.linalg.norm(c, axis=1, keepdims=True) for c in cls]
    expected = np.array([[np.mean(np.sum(a * b, axis=1)) for b in unit] for a in unit])
    got = cosine_cls_matrix(stats)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(np.diag(got), 1.0, rtol=1e-12)


# ---------------------------------------------------------------- Block Redundancy


def test_block_redundancy_equals_negative_mse_of_consecutive_states(batches, stats):
    got = block_redundancy(stats)
    expected = br_reference(stacked_tokens(batches))
    assert got.shape == (stats.num_states,) and np.isnan(got[0])
    np.testing.assert_allclose(got[1:], expected[1:], rtol=RTOL, atol=0)
    assert np.all(got[1:] < 0)


def test_block_redundancy_is_rba_equation_1_up_to_a_constant(batches, stats):
    """RBA's Eq. 1 averages ‖h_b(x) - h_(b-1)(x)‖² over samples; we divide by d and tokens per sample."""
    h = [torch.cat([states[k] for states in batches]).numpy() for k in range(stats.num_states)]
    eq1 = np.array([-np.mean(np.sum((h[k] - h[k - 1]) ** 2, axis=(1, 2))) for k in range(1, len(h))])
    factor = stats.dim * stats.n / stats.num_samples
    np.testing.assert_allclose(block_redundancy(stats)[1:] * factor, eq1, rtol=RTOL)


def test_identical_consecutive_states_score_zero():
    states = residual_states(4, num_states=3)
    states[2] = states[1].clone()
    assert block_redundancy(accumulate([states]))[2] == pytest.approx(0.0, abs=1e-10)


# ---------------------------------------------------------------- padding mask (text)


def test_only_unmasked_tokens_count():
    g = torch.Generator().manual_seed(11)
    batches, masks = [], []
    for seed, lengths in ((5, [7, 3, 5, 1]), (6, [2, 7, 4, 6])):
        states = residual_states(seed, batch=4, tokens=7)
        mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
        for h in states:  # padding full of large garbage: any leak changes every metric
            h[~mask] = 1e3 * torch.randn(int((~mask).sum()), h.shape[-1], generator=g, dtype=torch.float64)
        batches.append(states)
        masks.append(mask)
    stats = accumulate(batches, masks)
    tokens = stacked_tokens(batches, masks)
    assert stats.n == sum(int(m.sum()) for m in masks) == len(tokens[0])
    S = stats.num_states
    expected_cka = np.array([[cka_feature_reference(tokens[i], tokens[j]) for j in range(S)] for i in range(S)])
    np.testing.assert_allclose(cka_matrix(stats), expected_cka, rtol=RTOL)
    np.testing.assert_allclose(block_redundancy(stats)[1:], br_reference(tokens)[1:], rtol=RTOL)
    unmasked = accumulate(batches)
    assert not np.allclose(cka_matrix(unmasked), expected_cka, rtol=1e-3)


# ---------------------------------------------------------------- report and JSON


def test_report_from_stats_matches_the_functions(stats):
    report = SimilarityReport.from_stats(stats)
    np.testing.assert_array_equal(report.cka, cka_matrix(stats))
    np.testing.assert_array_equal(report.cosine_cls, cosine_cls_matrix(stats))
    np.testing.assert_array_equal(report.block_redundancy, block_redundancy(stats))
    assert report.states == state_names(stats.num_states) == [f"h_{k}" for k in range(stats.num_states)]


def test_report_json_keys_and_nan_as_null(tmp_path):
    states = residual_states(8, num_states=4)
    states[0] = torch.zeros_like(states[0])  # no variance: its CKA row is NaN
    report = SimilarityReport.from_stats(accumulate([states]))
    data = report.to_json()
    assert set(data) == {"states", "cka", "cosine_cls", "block_redundancy"}
    assert data["states"] == ["h_0", "h_1", "h_2", "h_3"]
    assert data["block_redundancy"][0] is None and all(isinstance(v, float) for v in data["block_redundancy"][1:])
    assert data["cka"][0] == [None] * 4 and data["cka"][1][0] is None and data["cka"][1][1] == 1.0
    assert len(data["cosine_cls"]) == 4 and all(len(row) == 4 for row in data["cosine_cls"])
    json.dumps(data, allow_nan=False)

    path = report.save(tmp_path / "similarity.json")
    text = path.read_text()
    assert "NaN" not in text and "null" in text
    assert json.loads(text) == data
    loaded = SimilarityReport.load(path)
    for name in ("cka", "cosine_cls", "block_redundancy"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(report, name))


def test_report_is_frozen_and_validated():
    report = SimilarityReport(cka=np.eye(2), cosine_cls=np.eye(2), block_redundancy=[np.nan, -0.5])
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.cka = np.eye(3)
    with pytest.raises(ValueError):
        report.cka[0, 1] = 0.3
    with pytest.raises(ValueError, match="cka has shape.*cosine_cls has shape"):
        SimilarityReport(cka=np.eye(3), cosine_cls=np.eye(1), block_redundancy=[np.nan, -0.5])
    with pytest.raises(TypeError):
        SimilarityReport(np.eye(2), np.eye(2), [np.nan, -0.5])


# ---------------------------------------------------------------- plots


def test_plot_similarity_writes_a_png(stats, tmp_path):
    path = plot_similarity(SimilarityReport.from_stats(stats), tmp_path / "similarity-report.png", title="tiny model")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


@pytest.mark.parametrize("num_states", [3, 25, 33])
def test_plot_cka_writes_a_png(num_states, tmp_path):
    rng = np.random.default_rng(num_states)
    a = rng.random((num_states, num_states))
    matrix = (a + a.T) / 2
    np.fill_diagonal(matrix, 1.0)
    matrix[0, 1] = matrix[1, 0] = np.nan
    path = plot_cka(matrix, tmp_path / "similarity.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    report = SimilarityReport(cka=matrix, cosine_cls=matrix * 2 - 1, block_redundancy=-rng.random(num_states))
    assert plot_similarity(report, tmp_path / "report.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_cka_rejects_a_non_square_matrix(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plot_cka(np.zeros((2, 3)), tmp_path / "x.png")


def test_missing_matplotlib_gives_an_install_hint(monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match="pip install matplotlib"):
        plot_cka(np.eye(2), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_importing_the_modules_does_not_import_matplotlib():
    code = (
        "import sys, toast.objectives\n"
        "leaked = sorted(m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- sampled CKA (issue 22)


def feed(sampler: SampledSimilarity, batches, masks=None, *, batch_size: int | None = None, numpy: bool = False):
    """Feed `batches` (re-split into batches of `batch_size` samples when given) to `sampler`; return it."""
    if batch_size is not None:
        whole = [torch.cat([states[k] for states in batches]) for k in range(len(batches[0]))]
        mask = None if masks is None else torch.cat(masks)
        batches = [[h[i : i + batch_size] for h in whole] for i in range(0, len(whole[0]), batch_size)]
        masks = None if mask is None else [mask[i : i + batch_size] for i in range(0, len(mask), batch_size)]
    for b, states in enumerate(batches):
        mask = None if masks is None else masks[b]
        if numpy:
            states, mask = [h.numpy() for h in states], None if mask is None else mask.numpy()
        sampler.update(states, mask)
    return sampler


def padded_batches(num_states: int = 5, dim: int = 8) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """Two text-like batches of 4 samples × 7 tokens, padding full of large garbage."""
    g = torch.Generator().manual_seed(11)
    batches, masks = [], []
    for seed, lengths in ((5, [7, 3, 5, 1]), (6, [2, 7, 4, 6])):
        states = residual_states(seed, num_states=num_states, batch=4, tokens=7, dim=dim)
        mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
        for h in states:
            h[~mask] = 1e3 * torch.randn(int((~mask).sum()), dim, generator=g, dtype=torch.float64)
        batches.append(states)
        masks.append(mask)
    return batches, masks


@pytest.mark.parametrize("numpy_inputs", [False, True])
@pytest.mark.parametrize("dim", [8, 64])  # 72 tokens: feature space (n > d), then sample-space kernels (n ≤ d)
def test_sampled_cka_with_every_token_is_the_exact_cka(dim, numpy_inputs):
    batches = [residual_states(seed, batch=4, tokens=6, dim=dim) for seed in (0, 1, 2)]
    sampler = feed(SampledSimilarity(5, tokens_per_sample=None, max_tokens=10**6), batches, numpy=numpy_inputs)
    assert sampler.sampled_tokens == sampler.num_tokens == 72 and sampler.sampled_samples == 12
    exact = accumulate(batches)
    np.testing.assert_allclose(sampler.cka(), cka_matrix(exact), rtol=0, atol=1e-6)
    # tokens_per_sample above the sequence length keeps every token too
    again = feed(SampledSimilarity(5, tokens_per_sample=6, max_tokens=72), batches, numpy=numpy_inputs)
    np.testing.assert_allclose(again.cka(), cka_matrix(exact), rtol=0, atol=1e-6)


def test_sampled_cka_with_every_real_token_ignores_padding():
    batches, masks = padded_batches()
    sampler = feed(SampledSimilarity(5, tokens_per_sample=None, max_tokens=1000), batches, masks)
    exact = accumulate(batches, masks)
    assert sampler.num_tokens == sampler.sampled_tokens == exact.n
    np.testing.assert_allclose(sampler.cka(), cka_matrix(exact), rtol=0, atol=1e-6)
    sampled = feed(SampledSimilarity(5, tokens_per_sample=2, max_tokens=1000), batches, masks)
    assert np.all(np.isfinite(sampled.cka())) and np.nanmax(sampled.cka()) <= 1.0 + 1e-12  # no garbage drawn


def test_exact_cls_cosine_and_block_redundancy_from_the_sampler():
    batches, masks = padded_batches()
    sampler = feed(SampledSimilarity(5, tokens_per_sample=2, max_tokens=8), batches, masks)
    exact = accumulate(batches, masks)
    np.testing.assert_allclose(sampler.cosine_cls(), cosine_cls_matrix(exact), rtol=1e-12)
    np.testing.assert_allclose(sampler.block_redundancy()[1:], block_redundancy(exact)[1:], rtol=1e-10)
    assert np.isnan(sampler.block_redundancy()[0])
    numpy_fed = feed(SampledSimilarity(5, tokens_per_sample=2, max_tokens=8), batches, masks, numpy=True)
    np.testing.assert_allclose(numpy_fed.block_redundancy()[1:], block_redundancy(exact)[1:], rtol=1e-10)


def test_sampled_cka_is_close_on_a_structured_set():
    """64 samples × 50 tokens of a residual stack; 8 tokens of 40 samples (10% of the tokens) land within 0.05."""
    batches = [residual_states(seed, num_states=6, batch=16, tokens=50, dim=16) for seed in range(4)]
    exact = cka_matrix(accumulate(batches))
    sampler = feed(SampledSimilarity(6, tokens_per_sample=8, max_tokens=320, seed=3), batches)
    assert sampler.sampled_tokens == 320 and sampler.sampled_samples == 40
    got = sampler.cka()
    np.testing.assert_array_equal(np.diag(got), 1.0)
    np.testing.assert_array_equal(got, got.T)
    assert np.max(np.abs(got - exact)) < 0.05
    assert not np.allclose(got, exact, atol=1e-6)  # a real sample, not every token


def test_sampled_cka_is_deterministic_and_independent_of_the_batch_size():
    batches, masks = padded_batches()
    results = [
        feed(SampledSimilarity(5, tokens_per_sample=3, max_tokens=12, seed=7), batches, masks, batch_size=size)
        for size in (None, 1, 3, 8)
    ]
    for other in results[1:]:
        assert other.sampled_tokens == results[0].sampled_tokens
        np.testing.assert_array_equal(other.cka(), results[0].cka())
        np.testing.assert_allclose(other.cosine_cls(), results[0].cosine_cls(), rtol=1e-12)
        np.testing.assert_allclose(other.block_redundancy(), results[0].block_redundancy(), rtol=1e-12)
    seeded = feed(SampledSimilarity(5, tokens_per_sample=3, max_tokens=12, seed=8), batches, masks)
    assert not np.array_equal(seeded.cka(), results[0].cka())


def test_the_sample_is_the_budgeted_prefix_of_samples_by_key():
    """Streaming keeps what an offline draw keeps: the samples of smallest key whose tokens fit `max_tokens`."""
    batches = [residual_states(seed, batch=5, tokens=9) for seed in range(6)]  # 30 samples
    sampler = feed(SampledSimilarity(5, tokens_per_sample=4, max_tokens=41, seed=2), batches)
    keys = sorted((float(np.random.default_rng((2, g)).random()), g) for g in range(30))
    assert set(sampler._kept) == {g for _, g in keys[:10]}
    assert sampler.sampled_tokens == 40 and max(sampler._kept) > 15  # late samples get in too


def held_bytes(sampler: SampledSimilarity) -> int:
    return sum(a.nbytes for kept in sampler._kept.values() for a in (kept.tokens, kept.weights))


def cka_peak_bytes(sampler: SampledSimilarity) -> int:
    """What `sampler.cka()` allocates at its peak, beyond what was allocated before (numpy reports to tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sampler.cka()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("dim", "budget", "kernels"),
    [(48, 400, False), (160, 120, True)],  # n > d: one d × d cross-scatter at a time; n ≤ d: S kernels of n × n
)
def test_sampled_memory_is_bounded(dim, budget, kernels):
    S = 5
    batches = [residual_states(seed, num_states=S, batch=30, tokens=30, dim=dim) for seed in range(4)]
    sampler = SampledSimilarity(S, tokens_per_sample=5, max_tokens=budget)
    for states in batches:  # the sample never outgrows the budget, even between updates
        sampler.update(states)
        assert sampler.sampled_tokens <= budget
        assert held_bytes(sampler) == sampler.nbytes <= S * budget * dim * 8 + budget * 8
    assert sampler.sampled_tokens == budget
    bound = SampledSimilarity.memory_bound(S, dim, budget, itemsize=8)
    peak = cka_peak_bytes(sampler)
    assert sampler.nbytes + peak <= bound
    if kernels:
        assert peak >= S * budget * budget * 8
    # at scale, far below the all-pairs Gram: ViT-L (25 × 1024), and an 8B Llama's 33 × 4096, at 4,096 tokens
    for states, width in ((25, 1024), (33, 4096)):
        assert SampledSimilarity.memory_bound(states, width, 4096) < (states * width) ** 2 * 8 / 5


def test_sampler_rejects_bad_settings_and_input():
    with pytest.raises(ValueError, match="max_tokens"):
        SampledSimilarity(3, tokens_per_sample=8, max_tokens=4)
    with pytest.raises(ValueError, match="tokens_per_sample"):
        SampledSimilarity(3, tokens_per_sample=0)
    sampler = SampledSimilarity(3)
    with pytest.raises(ValueError, match="no token was sampled"):
        sampler.cka()
    with pytest.raises(ValueError, match="expected 3 hidden states"):
        sampler.update(residual_states(0, num_states=2))
    sampler.update(residual_states(0, num_states=3))
    with pytest.raises(ValueError, match="width"):
        sampler.update(residual_states(0, num_states=3, dim=4))


def test_report_from_a_sample_says_so_in_its_json(tmp_path, stats):
    batches = [residual_states(seed) for seed in (0, 1, 2)]
    sampler = feed(SampledSimilarity(5, tokens_per_sample=2, max_tokens=16), batches)
    report = SimilarityReport.from_sample(sampler)
    assert report.cka_tokens == "sample:16"
    np.testing.assert_array_equal(report.cka, sampler.cka())
    np.testing.assert_array_equal(report.cosine_cls, sampler.cosine_cls())
    data = report.to_json()
    assert data["cka_tokens"] == "sample:16"
    loaded = SimilarityReport.load(report.save(tmp_path / "similarity.json"))
    assert loaded.cka_tokens == "sample:16"
    np.testing.assert_array_equal(loaded.cka, report.cka)
    given = SimilarityReport.from_sample(sampler, cosine_cls_matrix(stats), block_redundancy(stats))
    np.testing.assert_array_equal(given.cosine_cls, cosine_cls_matrix(stats))
    exact = SimilarityReport.from_stats(stats)
    assert exact.cka_tokens == "all" and "cka_tokens" not in exact.to_json()
    with pytest.raises(ValueError, match="cka_tokens"):
        SimilarityReport(cka=np.eye(2), cosine_cls=np.eye(2), block_redundancy=[np.nan, -0.5], cka_tokens="some")
