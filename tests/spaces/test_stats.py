"""`ActivationStats` accumulated batch by batch, checked against float64 numpy on the stacked activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toast.spaces import ActivationStats, PairStats, StatsAccumulator

S, D = 4, 6  # hidden states h_0 … h_3, width 6
SHAPES = [(3, 5), (2, 7), (4, 5)]  # (batch, tokens) of each accumulated batch


def make_batches(seed: int, *, offset: float = 0.0, dtype=torch.float32) -> list[list[torch.Tensor]]:
    """Random hidden states per batch, with per-state means (plus `offset`) and correlated states."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(S, D, generator=g, dtype=torch.float64) * 3 + offset
    mix = torch.randn(D, D, generator=g, dtype=torch.float64) / D**0.5
    batches = []
    for b, n in SHAPES:
        h = torch.randn(b, n, D, generator=g, dtype=torch.float64)
        states = []
        for k in range(S):
            states.append((means[k] + h).to(dtype))
            h = h + 0.5 * torch.tanh(h @ mix) + 0.1 * torch.randn(b, n, D, generator=g, dtype=torch.float64)
        batches.append(states)
    return batches


def make_masks(seed: int) -> list[torch.Tensor]:
    """Padding masks: the [CLS] token (index 0) is always real; the second batch is fully real."""
    g = torch.Generator().manual_seed(seed)
    masks = []
    for i, (b, n) in enumerate(SHAPES):
        mask = torch.ones(b, n, dtype=torch.bool) if i == 1 else torch.rand(b, n, generator=g) > 0.4
        mask[:, 0] = True
        masks.append(mask)
    return masks


def accumulate(batches, masks=None, product_dtype=torch.float32) -> ActivationStats:
    acc = StatsAccumulator(S, D, product_dtype=product_dtype)
    for i, states in enumerate(batches):
        acc.update(states, mask=None if masks is None else masks[i])
    return acc.result()


def stacked(batches, masks=None) -> list[np.ndarray]:
    """Per state, every real token of every batch as a (T, d) float64 array."""
    out = []
    for k in range(S):
        rows = []
        for i, states in enumerate(batches):
            h = states[k].numpy().astype(np.float64)
            rows.append(h.reshape(-1, D) if masks is None else h[masks[i].numpy()])
        out.append(np.concatenate(rows))
    return out


def cls_cosines(batches) -> np.ndarray:
    """Σ over samples of cos(h_i[cls], h_j[cls]), directly."""
    total = np.zeros((S, S))
    for states in batches:
        cls = [s[:, 0, :].numpy().astype(np.float64) for s in states]
        for i in range(S):
            for j in range(S):
                num = np.sum(cls[i] * cls[j], axis=1)
                total[i, j] += np.sum(num / (np.linalg.norm(cls[i], axis=1) * np.linalg.norm(cls[j], axis=1)))
    return total


def token_cosines(batches, masks) -> np.ndarray:
    """Mean over real tokens of cos(h_i[t], h_j[t]), directly (the peers' signal: ShortGPT, ReplaceMe)."""
    tokens = stacked(batches, masks)
    unit = [t / np.linalg.norm(t, axis=1, keepdims=True) for t in tokens]
    return np.array([[np.mean(np.sum(unit[i] * unit[j], axis=1)) for j in range(S)] for i in range(S)])


# float64 products are exact up to summation order; float32 products to float32 precision
PRECISION = {torch.float64: 1e-10, torch.float32: 2e-6}


@pytest.mark.parametrize("masked", [False, True], ids=["all-tokens", "padding-mask"])
@pytest.mark.parametrize("product_dtype", [torch.float64, torch.float32], ids=["f64-products", "f32-products"])
@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["small-mean", "large-mean"])
def test_statistics_equal_direct_numpy(masked, product_dtype, offset):
    batches = make_batches(0, offset=offset, dtype=torch.float64)
    masks = make_masks(1) if masked else None
    stats = accumulate(batches, masks, product_dtype)
    tokens = stacked(batches, masks)
    rtol = PRECISION[product_dtype]

    n = len(tokens[0])
    assert stats.n == n == (sum(int(m.sum()) for m in masks) if masked else sum(b * t for b, t in SHAPES))
    assert stats.num_samples == sum(b for b, _ in SHAPES)
    assert (stats.num_states, stats.dim) == (S, D)
    for i in range(S):
        np.testing.assert_allclose(stats.mean(i), tokens[i].mean(0), rtol=1e-12, atol=1e-12 * (1 + offset))
        for j in range(S):
            xc, yc = tokens[i] - tokens[i].mean(0), tokens[j] - tokens[j].mean(0)
            scatter = xc.T @ yc
            np.testing.assert_allclose(stats.scatter(i, j), scatter, rtol=0, atol=rtol * np.abs(scatter).max())
            ssd = np.sum((tokens[j] - tokens[i]) ** 2)
            assert stats.sum_sq_diff(i, j) == pytest.approx(ssd, rel=rtol, abs=rtol * n)
    np.testing.assert_allclose(stats.cls_cosine_sum, cls_cosines(batches), rtol=1e-12)
    np.testing.assert_allclose(stats.token_cosine(), token_cosines(batches, masks), rtol=0, atol=1e-6)
    # the lower blocks of the Gram matrix mirror the upper ones; diagonal blocks are symmetric to precision
    for i in range(S):
        block = stats.block(i, i)
        np.testing.assert_allclose(block, block.T, rtol=0, atol=rtol * np.abs(block).max())
        for j in range(i + 1, S):
            np.testing.assert_array_equal(stats.block(j, i), stats.block(i, j).T)


def test_float32_activations_accumulate_like_their_float64_values():
    batches = make_batches(2)  # float32 tensors, as a model produces them
    stats = accumulate(batches)
    tokens = stacked(batches)
    xc = tokens[3] - tokens[3].mean(0)
    np.testing.assert_allclose(stats.scatter(3, 3), xc.T @ xc, rtol=0, atol=2e-6 * np.abs(xc.T @ xc).max())


def test_pair_equals_pair_stats_from_arrays():
    batches = make_batches(3, offset=50.0, dtype=torch.float64)
    masks = make_masks(4)
    stats = accumulate(batches, masks, torch.float64)
    tokens = stacked(batches, masks)
    for i, j in [(0, 1), (0, 3), (2, 2), (3, 1)]:
        got, want = stats.pair(i, j), PairStats.from_arrays(tokens[i], tokens[j])
        assert got.n == want.n
        for field in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
            a, b = getattr(got, field), getattr(want, field)
            assert a.shape == b.shape, field
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max(), err_msg=field)


def test_pair_stats_from_arrays_definition():
    """The reference itself, on a case small enough to check by hand."""
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    y = np.array([[1.0], [3.0]])
    p = PairStats.from_arrays(x, y)
    assert p.n == 2
    np.testing.assert_array_equal(p.mean_x, [1.0, 2.0])
    np.testing.assert_array_equal(p.mean_y, [2.0])
    np.testing.assert_array_equal(p.sxx, [[2.0, 2.0], [2.0, 2.0]])  # (-1,-1) and (1,1)
    np.testing.assert_array_equal(p.sxy, [[2.0], [2.0]])
    np.testing.assert_array_equal(p.syy, [[2.0]])


def test_save_load_round_trip(tmp_path):
    stats = accumulate(make_batches(5), make_masks(6))
    names = stats.save(tmp_path)
    assert sorted(names) == sorted(p.name for p in tmp_path.iterdir())
    loaded = ActivationStats.load(tmp_path)
    assert isinstance(loaded.gram, np.memmap)  # read lazily, block by block
    assert not loaded.gram.flags.writeable
    assert (loaded.n, loaded.num_samples) == (stats.n, stats.num_samples)
    for field in ("shift", "sums", "gram", "cls_cosine_sum", "token_cosine_sum"):
        np.testing.assert_array_equal(np.asarray(getattr(loaded, field)), getattr(stats, field), err_msg=field)
    for i, j in [(0, 3), (2, 1)]:
        a, b = loaded.pair(i, j), stats.pair(i, j)
        for field in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        assert loaded.sum_sq_diff(i, j) == stats.sum_sq_diff(i, j)


def test_statistics_saved_before_token_cosines_load_without_them(tmp_path):
    """An older capture's `stats.npz` has no token cosines: it loads, and says it has none (the peers then ask
    for a new capture in one line)."""
    stats = accumulate(make_batches(5))
    stats.save(tmp_path)
    with np.load(tmp_path / "stats.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "token_cosine_sum"}
    np.savez(tmp_path / "stats.npz", **arrays)
    loaded = ActivationStats.load(tmp_path)
    assert loaded.token_cosine_sum is None and loaded.token_cosine() is None
    np.testing.assert_array_equal(loaded.cls_cosine_sum, stats.cls_cosine_sum)


@pytest.mark.parametrize("i, j", [(0, S), (S, 0), (-1, 0), (1, -2), (S + 3, S + 3)])
def test_out_of_range_state_raises_index_error(i, j):
    stats = accumulate(make_batches(7))
    bad = next(k for k in (i, j) if not 0 <= k < S)
    message = rf"hidden state h_{bad} does not exist \(states h_0 … h_{S - 1}\)"
    with pytest.raises(IndexError, match=message):
        stats.pair(i, j)
    with pytest.raises(IndexError, match=message):
        stats.sum_sq_diff(i, j)


def test_accumulator_rejects_a_wrong_number_of_states_and_an_empty_result():
    acc = StatsAccumulator(S, D)
    with pytest.raises(ValueError, match="no batch was accumulated"):
        acc.result()
    with pytest.raises(ValueError, match=f"expected {S} hidden states, got {S - 1}"):
        acc.update(make_batches(8)[0][:-1])


# ---------------------------------------------------------------- pairs only (issue 22)


def test_space_pairs_are_the_spans_the_diagonal_and_the_adjacent_pairs():
    from toast.spaces import Span, space_pairs

    L = 6
    got = space_pairs(L, 2, extra=[(0, 6)])
    spans = [Span(s, e) for s in range(-1, L - 1) for e in range(s + 1, L) if e - s <= 2]
    want = {(k, k) for k in range(L + 1)} | {(k - 1, k) for k in range(1, L + 1)}
    want |= {(sp.source, sp.target) for sp in spans} | {(0, 6)}
    assert got == want
    assert space_pairs(L, L) == {(i, j) for i in range(L + 1) for j in range(i, L + 1)}


def test_pairs_accumulator_matches_the_all_pairs_gram_and_says_what_is_missing(tmp_path):
    from toast.errors import MissingStatsError
    from toast.spaces import plan_passes

    batches, masks = make_batches(5), make_masks(6)
    full = accumulate(batches, masks)
    wanted = [(0, 0), (1, 1), (3, 3), (0, 1), (1, 3)]
    acc = StatsAccumulator(S, D, pairs=wanted)
    for states, mask in zip(batches, masks):
        acc.update(states, mask)
    part = acc.result()
    assert part.gram is None and part.held_pairs == frozenset(wanted) and not part.all_pairs
    for i, j in [(0, 1), (3, 1), (1, 1)]:
        a, b = part.pair(i, j), full.pair(i, j)
        for field in ("mean_x", "mean_y", "sxx", "sxy", "syy"):
            b_ = getattr(b, field)  # float32 products: the split runs round apart from the all-pairs row
            np.testing.assert_allclose(getattr(a, field), b_, rtol=1e-6, atol=1e-6 * np.abs(b_).max(), err_msg=field)
    with pytest.raises(MissingStatsError, match=r"no pair \(h_0, h_3\)"):
        part.pair(0, 3)
    # saved one file per pair, read back memory-mapped
    names = part.save(tmp_path)
    assert "pairs/1-3.npy" in names and "gram.npy" not in names
    loaded = ActivationStats.load(tmp_path)
    assert isinstance(loaded.pairs[1, 3], np.memmap)
    np.testing.assert_array_equal(loaded.block(3, 1), part.block(3, 1))
    # grouped into passes of at most the budget, in row order
    assert plan_passes(wanted, D, 2 * D * D * 8) == [[(0, 0), (0, 1)], [(1, 1), (1, 3)], [(3, 3)]]
    assert plan_passes(wanted, D, 0) == [[p] for p in sorted(wanted)]
