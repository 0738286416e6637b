"""Translator kinds: the registry, then each kind's maths checked against numpy on the raw activations
(least squares, closed-form ridge, brute-force GCV). The suite every registered kind must pass is
`toast.spaces.testing`, run by `tests/spaces/test_translator_conformance.py`."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from toast.spaces import (
    LinearTranslator,
    PairStats,
    PlanError,
    StatsAccumulator,
    _linear,
    _translators,
    create_translator,
    list_translators,
    register_translator,
)
from toast.spaces._identity import IdentityTranslator
from toast.spaces._ridge import RidgeTranslator

D = 6


def paired_data(seed: int, n: int = 60, d: int = D) -> tuple[np.ndarray, np.ndarray]:
    """x with a mean and correlated features; y a noisy nonlinear function of x (no exact fit)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / d**0.5 + rng.standard_normal(d) * 2
    y = x + np.tanh(x @ rng.standard_normal((d, d))) + 0.1 * rng.standard_normal((n, d)) + 1.0
    return x, y


def with_bias_column(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])


def lstsq_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`numpy.linalg.lstsq` on [x, 1]: the reference least squares with bias."""
    coef = np.linalg.lstsq(with_bias_column(x), y, rcond=None)[0]
    return coef[:-1], coef[-1]


def test_registry_lists_the_builtin_kinds():
    assert {"identity", "linear", "ridge"} <= set(list_translators())
    assert list_translators() == sorted(list_translators())
    assert type(create_translator("linear")) is LinearTranslator
    assert create_translator("ridge").kind == "ridge"


def test_unknown_kind_and_duplicate_registration_are_rejected():
    with pytest.raises(PlanError, match=r"unknown translator kind 'no_such_kind' \(known: .*linear"):
        create_translator("no_such_kind")
    with pytest.raises(ValueError, match="'linear' is already registered"):
        register_translator("linear")(type("Another", (LinearTranslator,), {}))
    assert type(create_translator("linear")) is LinearTranslator  # the registry is unchanged


# ================================================================ identity


def test_identity_needs_equal_widths():
    x, y = paired_data(0)
    with pytest.raises(ValueError, match="identity needs equal widths, got 6 → 4"):
        IdentityTranslator().fit(PairStats.from_arrays(x, y[:, :4]))


# ================================================================ linear: least squares from the Gram statistics

BATCHES = [(4, 6), (3, 9), (2, 5)]  # (batch, tokens); the second batch is padded


def accumulated_pair(
    seed: int, *, d: int = 8, offset: float = 0.0, dtype=torch.float32, product_dtype=torch.float32, relation=None
):
    """`PairStats` of h_0 → h_2 from a `StatsAccumulator` fed several batches (one with a padding mask),
    and the real tokens of h_0 and h_2 stacked as float64 arrays."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    mean = torch.randn(d, generator=g, dtype=torch.float64) * 2 + offset
    acc = StatsAccumulator(3, d, product_dtype=product_dtype)
    xs, ys = [], []
    for i, (b, n) in enumerate(BATCHES):
        h0 = torch.randn(b, n, d, generator=g, dtype=torch.float64) @ mix + mean
        h1 = h0 + torch.tanh(h0 @ mix)
        h2 = (
            relation(h0)
            if relation
            else h1 + 0.5 * torch.tanh(h1 @ mix.T) + 0.1 * torch.randn(b, n, d, generator=g, dtype=torch.float64)
        )
        states = [h.to(dtype) for h in (h0, h1, h2)]
        mask = None
        if i == 1:
            mask = torch.ones(b, n, dtype=torch.bool)
            mask[0, 4:] = False
            mask[2, 7:] = False
        acc.update(states, mask=mask)
        keep = np.ones((b, n), bool) if mask is None else mask.numpy()
        xs.append(states[0].double().numpy()[keep])
        ys.append(states[2].double().numpy()[keep])
    return acc.result().pair(0, 2), np.concatenate(xs), np.concatenate(ys)


def test_gram_fit_equals_lstsq_on_stacked_activations():
    stats, x, y = accumulated_pair(0)
    assert stats.n == len(x) == 24 + (27 - 5 - 2) + 10  # the padded tokens are left out
    t = LinearTranslator().fit(stats)
    assert t.solver_ == "cholesky"
    w, b = lstsq_fit(x, y)
    scale = np.abs(w).max()
    np.testing.assert_allclose(t.weight_, w, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(t.bias_, b, rtol=0, atol=2e-5 * (1 + np.abs(b).max()))
    pred = with_bias_column(x) @ np.vstack([w, b])
    np.testing.assert_allclose(t.predict(x), pred, rtol=0, atol=2e-5 * np.abs(pred).max())
    assert t.residual(stats) == pytest.approx(np.mean((y - pred) ** 2), rel=1e-4)


def test_gram_fit_equals_lstsq_with_float64_products():
    stats, x, y = accumulated_pair(1, dtype=torch.float64, product_dtype=torch.float64)
    t = LinearTranslator().fit(stats)
    w, b = lstsq_fit(x, y)
    np.testing.assert_allclose(t.weight_, w, rtol=0, atol=1e-10 * np.abs(w).max())
    np.testing.assert_allclose(t.bias_, b, rtol=0, atol=1e-10 * (1 + np.abs(b).max()))


def _known_relation(d: int = 8):
    g = torch.Generator().manual_seed(123)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64) * 3
    return a, b, (lambda h: h @ a + b)


@pytest.mark.parametrize("kind", ["linear", "ridge"])
@pytest.mark.parametrize("offset", [0.0, 1000.0], ids=["centered", "large-mean"])
def test_known_linear_relation_is_recovered_exactly(kind, offset):
    a, b, relation = _known_relation()
    stats, x, _ = accumulated_pair(
        2, offset=offset, dtype=torch.float64, product_dtype=torch.float64, relation=relation
    )
    t = create_translator(kind, **({"alpha": 0.0} if kind == "ridge" else {})).fit(stats)
    np.testing.assert_allclose(t.weight_, a.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(t.bias_, b.numpy(), rtol=0, atol=1e-6)
    assert t.residual(stats) < 1e-12


def test_shift_keeps_float32_products_precise_with_a_large_mean():
    """Unshifted float32 products of values near 1000 would lose every digit of the covariance."""
    a, b, relation = _known_relation()
    stats, x, _ = accumulated_pair(
        3, offset=1000.0, dtype=torch.float64, product_dtype=torch.float32, relation=relation
    )
    t = LinearTranslator().fit(stats)
    np.testing.assert_allclose(t.weight_, a.numpy(), rtol=0, atol=1e-5)
    exact = relation(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(t.predict(x), exact, rtol=0, atol=1e-6 * np.abs(exact).max())


def _rank_deficient(case: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if case == "fewer-tokens":
        x = rng.standard_normal((5, 8)) + 3
    else:  # a duplicated feature
        x = rng.standard_normal((40, 8)) + 3
        x[:, 7] = x[:, 0]
    y = np.tanh(x) @ rng.standard_normal((8, 8)) + 0.1 * rng.standard_normal(x.shape)
    return x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)


# with seed 6, rounding lets the exactly singular duplicated-feature scatter through Cholesky
@pytest.mark.parametrize("seed", [6, 7])
@pytest.mark.parametrize("case", ["fewer-tokens", "duplicated-feature"])
@pytest.mark.parametrize("source", ["exact", "accumulated"])
def test_rank_deficient_input_falls_back_to_the_minimum_norm_solution(case, source, seed):
    x, y = _rank_deficient(case, seed)
    if source == "exact":
        stats = PairStats.from_arrays(x, y)
    else:  # float32 activations, float32 products
        acc = StatsAccumulator(2, 8)
        acc.update([torch.from_numpy(x).float()[None], torch.from_numpy(y).float()[None]])
        stats = acc.result().pair(0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an expected condition: recorded on the translator, not a Python warning
        t = LinearTranslator().fit(stats)
    assert t.solver_ == "pinv" and t.ill_conditioned_
    assert np.all(np.isfinite(t.weight_)) and np.all(np.isfinite(t.bias_))
    # lstsq's minimum-norm solution fits the training data as well as any: same predictions there
    w, b = lstsq_fit(x, y)
    pred = with_bias_column(x) @ np.vstack([w, b])
    tol = 1e-9 if source == "exact" else 1e-5
    np.testing.assert_allclose(t.predict(x), pred, rtol=0, atol=tol * np.abs(pred).max())
    if source == "exact":
        # with the bias unpenalized, the weights are the minimum-norm solution on centered data
        xc, yc = x - x.mean(0), y - y.mean(0)
        np.testing.assert_allclose(t.weight_, np.linalg.lstsq(xc, yc, rcond=None)[0], rtol=0, atol=1e-9)


# ================================================================ ridge


def ridge_closed_form(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Solve (XcᵀXc + αI) W = XcᵀYc on the raw data; the bias is unpenalized."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return w, my - mx @ w


def test_ridge_hyperparameters_are_keyword_only_and_untouched_until_fit():
    with pytest.raises(TypeError):
        RidgeTranslator(1.0)  # type: ignore[misc]
    t = create_translator("ridge", alpha=2.5)
    assert t.alpha == 2.5 and not t.is_fitted and not hasattr(t, "alpha_")


@pytest.mark.parametrize("alpha", [0.0, 1e-12])
def test_ridge_without_penalty_equals_linear(alpha):
    x, y = paired_data(3)
    stats = PairStats.from_arrays(x, y)
    ridge = RidgeTranslator(alpha=alpha).fit(stats)
    linear = LinearTranslator().fit(stats)
    np.testing.assert_allclose(ridge.weight_, linear.weight_, rtol=0, atol=1e-8 * np.abs(linear.weight_).max())
    np.testing.assert_allclose(ridge.bias_, linear.bias_, rtol=0, atol=1e-8 * np.abs(linear.bias_).max())


@pytest.mark.parametrize("alpha", [0.1, 10.0, 1000.0])
def test_ridge_with_given_alpha_equals_the_closed_form(alpha):
    x, y = paired_data(4)
    t = RidgeTranslator(alpha=alpha).fit(PairStats.from_arrays(x, y))
    assert t.alpha_ == alpha
    w, b = ridge_closed_form(x, y, alpha)
    np.testing.assert_allclose(t.weight_, w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(t.bias_, b, rtol=1e-9, atol=1e-12)


def brute_force_gcv_alpha(x: np.ndarray, y: np.ndarray, alphas) -> float:
    """GCV over `alphas` (relative to the mean eigenvalue of XcᵀXc) with the explicit hat matrix:
    H = 11ᵀ/n + Xc (XcᵀXc + αI)⁻¹ Xcᵀ, GCV(α) = n ||Y - HY||² / (n - tr H)²."""
    n, d = x.shape
    xc = x - x.mean(0)
    gram = xc.T @ xc
    scale = np.trace(gram) / d
    scores = []
    for a in np.asarray(alphas) * scale:
        hat = np.full((n, n), 1.0 / n) + xc @ np.linalg.solve(gram + a * np.eye(d), xc.T)
        scores.append(n * np.sum((y - hat @ y) ** 2) / (n - np.trace(hat)) ** 2)
    scores = np.asarray(scores)
    best = int(np.argmin(scores))
    assert np.sort(scores)[1] > scores[best] * (1 + 1e-6), "the reference has no clear winner"
    return float(np.asarray(alphas)[best] * scale)


def gcv_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy linear relation: GCV picks an interior alpha."""
    rng = np.random.default_rng(seed)
    d = 10
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.5 + 2
    y = x @ (0.3 * rng.standard_normal((d, d))) + 1.5 * rng.standard_normal((n, d))
    return x, y


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("n", "alphas"),
    [
        (40, None),
        (40, (1e-4, 1e-2, 1e-1, 1.0, 10.0)),
        (16, tuple(np.geomspace(1e-3, 10, 25))),  # few tokens, fine grid: the intercept's degree of freedom matters
    ],
    ids=["default-grid", "given-grid", "few-tokens-fine-grid"],
)
def test_gcv_alpha_equals_brute_force_gcv(seed, n, alphas):
    x, y = gcv_data(seed, n)
    t = RidgeTranslator(**({} if alphas is None else {"alphas": alphas})).fit(PairStats.from_arrays(x, y))
    want = brute_force_gcv_alpha(x, y, t.alphas)
    assert t.alpha_ == pytest.approx(want, rel=1e-12)
    xc = x - x.mean(0)
    relative = t.alpha_ / (np.sum(xc * xc) / x.shape[1])
    assert min(t.alphas) < relative < max(t.alphas)  # an interior choice, not a grid edge
    w, b = ridge_closed_form(x, y, t.alpha_)
    np.testing.assert_allclose(t.weight_, w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(t.bias_, b, rtol=1e-9, atol=1e-12)


def test_ill_conditioned_fits_are_reported_once_per_process(caplog, monkeypatch):
    monkeypatch.setattr(_translators, "_reported", set())
    with caplog.at_level(logging.WARNING, logger="toast"):
        for seed in (6, 7):
            for case in ("fewer-tokens", "duplicated-feature"):
                assert LinearTranslator().fit(PairStats.from_arrays(*_rank_deficient(case, seed))).ill_conditioned_
        assert LinearTranslator().fit(PairStats.from_arrays(*paired_data(6))).solver_ == "cholesky"
    assert [(r.name, r.levelname) for r in caplog.records] == [("toast", "WARNING")]
    assert (
        "ill-conditioned" in caplog.records[0].getMessage()
        and "minimum-norm least-squares solution" in caplog.records[0].getMessage()
    )


def test_ill_conditioned_report_is_one_plain_line_on_stderr():
    """With logging unconfigured (as in the CLI): one bare line on stderr, no warning category or source lines."""
    code = (
        "import numpy as np\n"
        "from toast.spaces import LinearTranslator, PairStats\n"
        "rng = np.random.default_rng(0)\n"
        "for _ in range(3):\n"
        "    x = rng.standard_normal((40, 8)); x[:, 7] = x[:, 0]\n"
        "    assert LinearTranslator().fit(PairStats.from_arrays(x, rng.standard_normal((40, 8)))).ill_conditioned_\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [_linear.ILL_CONDITIONED]
