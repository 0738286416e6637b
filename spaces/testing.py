"""The conformance suite every translator kind must pass (as scikit-learn's `check_estimator`).

    from toast.spaces.testing import check_translator
    check_translator("linear")  # raises AssertionError naming the broken rule

or, one pytest case per check (as scikit-learn's `parametrize_with_checks`)::

    @pytest.mark.parametrize(("kind", "check"), [(k, c) for k in list_translators() for c in translator_checks(k)])
    def test_kind(kind, check):
        check(kind)

The checks fit through `fit_span` on an in-memory `ArraySpanData` of random activations (its `stats` real
`PairStats`, so a closed-form kind is fitted by `fit(stats)`; a trained kind, `needs_activations`, trains on
its batches; its `branch_stats` the same pairs, so a kind fitted on a block's MLP branch, `folded`, reads x
as the branch output and y as what the target adds to the residual stream), so a new kind is tested on arrival. fvcore
(through `toast.objectives`) is imported inside the cost check only: importing this module stays as
light as `import toast.spaces`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import NotFittedError
from . import _translators
from ._span_data import ArraySpanData, SpanData
from ._stats import PairStats, StatsAccumulator
from ._translators import Translator, create_translator, load_translator, translator_class

__all__ = ["check_identity_is_exact", "check_translator", "translator_checks"]

D = 6  # the width the checks fit at
Check = Callable[[str], None]


def paired_data(seed: int, n: int = 60, d: int = D) -> tuple[np.ndarray, np.ndarray]:
    """x with a mean and correlated features; y a noisy nonlinear function of x (no exact fit)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / d**0.5 + rng.standard_normal(d) * 2
    y = x + np.tanh(x @ rng.standard_normal((d, d))) + 0.1 * rng.standard_normal((n, d)) + 1.0
    return x, y


def accumulated_data(seed: int, d: int = D) -> SpanData:
    """h_0 → h_1 of two float32 batches of random tokens, one padded: the real tokens (5 samples) as arrays,
    with the `PairStats` a `StatsAccumulator` gives for them."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    acc = StatsAccumulator(2, d)
    xs, ys, samples = [], [], []
    for first, (b, n) in [(0, (3, 9)), (3, (2, 7))]:
        h0 = torch.randn(b, n, d, generator=g) @ mix + 1.5
        h1 = h0 + torch.tanh(h0 @ mix) + 0.1 * torch.randn(b, n, d, generator=g)
        mask = torch.ones(b, n, dtype=torch.bool)
        mask[0, n - 2 :] = False
        acc.update([h0, h1], mask=mask)
        xs.append(h0[mask].numpy())
        ys.append(h1[mask].numpy())
        samples.append((first + torch.arange(b)[:, None].expand(b, n))[mask].numpy())
    stats = acc.result().pair(0, 1)
    return ArraySpanData(np.concatenate(xs), np.concatenate(ys), np.concatenate(samples), stats=stats, branch=stats)


def accumulated_stats(seed: int, d: int = D) -> PairStats:
    """`PairStats` of h_0 → h_1 from a `StatsAccumulator` fed two float32 batches of random tokens, one padded."""
    return accumulated_data(seed, d).stats


def span_data(seed: int, n: int = 60, d: int = D) -> ArraySpanData:
    """`paired_data` as a `SpanData`: 5 tokens per sample, its exact `PairStats`."""
    x, y = paired_data(seed, n, d)
    data = ArraySpanData(x, y, np.arange(n) // 5)
    # a kind fitted on the MLP branch (`folded`) reads x as the branch output m and y as h_{e+1} - r
    data._branch = data.stats
    return data


def _data() -> tuple[np.ndarray, np.ndarray, ArraySpanData]:
    data = span_data(0)
    return data.x, data.y, data


def _fitted(kind: str, d: int = D) -> Translator:
    return create_translator(kind).fit_span(span_data(0, d=d))


def _residual_input(kind: str, data: SpanData) -> SpanData | PairStats:
    """What `residual` reads: the statistics, or the activations for a trained kind."""
    return data if translator_class(kind).needs_activations else data.stats


def _fitted_values(t: Translator) -> dict[str, object]:
    """The learned attributes (ending in `_`), a dict of arrays (a module's state) flattened as `name.key`."""
    out: dict[str, object] = {}
    for name, value in vars(t).items():
        if not name.endswith("_"):
            continue
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out


def _tokens(seed: int, shape: tuple[int, ...] = (2, 7, D)) -> torch.Tensor:
    """Fresh random float32 tokens, with a mean, as a model's hidden states."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1


@contextlib.contextmanager
def _raises(error: type[Exception], match: str) -> Iterator[None]:
    """Like `pytest.raises(error, match=...)`, without needing pytest."""
    import re

    try:
        yield
    except error as e:
        assert re.search(match, str(e)), f"{type(e).__name__} said {str(e)!r}, expected it to match {match!r}"
    else:
        raise AssertionError(f"expected {error.__name__} matching {match!r}")


# ================================================================ the checks


def check_fit_returns_self(kind: str) -> None:
    """`fit_span` (and, for a closed-form kind, `fit`) returns the translator itself, fitted, with finite learned
    arrays (`weight_ (d, d)` and `bias_ (d,)` for an affine kind); a trained kind's `fit(stats)` says to use
    `fit_span`."""
    for data in (_data()[2], accumulated_data(0)):
        t = create_translator(kind)
        assert not t.is_fitted
        assert t.fit_span(data) is t
        assert t.is_fitted
        if hasattr(t, "weight_"):
            assert t.weight_.shape == (D, D) and t.bias_.shape == (D,)
        arrays = [v for v in _fitted_values(t).values() if isinstance(v, np.ndarray)]
        assert arrays and all(np.all(np.isfinite(a)) for a in arrays)
        other = create_translator(kind)
        if translator_class(kind).needs_activations:
            with _raises(TypeError, r"fit_span\(data\)"):
                other.fit(data.stats)
        else:
            assert other.fit(data.stats) is other and other.is_fitted


def check_unfitted_use_raises(kind: str) -> None:
    """`predict`, `residual`, `to_module` and `save` of an unfitted translator raise `NotFittedError`."""
    x, _, data = _data()
    t = create_translator(kind)
    with tempfile.TemporaryDirectory() as tmp:
        for use in (
            lambda: t.predict(x),
            lambda: t.residual(_residual_input(kind, data)),
            t.to_module,
            lambda: t.save(tmp),
        ):
            with _raises(
                NotFittedError, rf"this {type(t).__name__} is not fitted yet: call fit(\(stats\)|_span\(data\)) first"
            ):
                use()


def check_predict_keeps_shapes(kind: str) -> None:
    """`predict` maps rows, (batch, tokens, d) arrays and single vectors, in float64."""
    x, _, data = _data()
    t = create_translator(kind).fit_span(data)
    assert t.predict(x).shape == x.shape
    assert t.predict(x).dtype == np.float64
    tokens = x[:30].reshape(3, 10, D)  # (batch, tokens, d)
    out = t.predict(tokens)
    assert out.shape == tokens.shape
    np.testing.assert_allclose(out.reshape(-1, D), t.predict(x[:30]), rtol=1e-12)
    assert t.predict(x[0]).shape == (D,)


def check_module_equals_predict(kind: str) -> None:
    """`to_module` keeps shapes and dtype (float32, and float64 once moved) and computes `predict`.

    A kind that folds into its source block (`needs_source_block`, `folded`) maps the block's MLP branch, not
    the state: its module is the identity step after the folded block (checked here), and the folded block's
    output is checked against a Transformers model in tests/spaces/test_folded.py."""
    _, _, data = _data()
    t = create_translator(kind).fit_span(data)
    module = t.to_module()
    assert isinstance(module, nn.Module)
    h = _tokens(1)
    if translator_class(kind).needs_source_block:
        with torch.no_grad():
            assert torch.equal(module(h), h)
        return
    with torch.no_grad():
        out = module(h)
    assert out.shape == h.shape and out.dtype == torch.float32
    want = t.predict(h.double().numpy())
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    with torch.no_grad():
        out64 = module.to(torch.float64)(h.double())
    assert out64.shape == h.shape and out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy(), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def check_empty_module_loads_the_fitted_state(kind: str) -> None:
    """`empty_module(d)` loads the fitted module's saved `state_dict` (strict) and then computes the same."""
    import io

    module = _fitted(kind).to_module()
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = translator_class(kind).empty_module(D)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    h = _tokens(2, (3, 5, D))
    with torch.no_grad():
        assert torch.equal(fresh(h), module(h))


def check_needs_fit_is_honest(kind: str) -> None:
    """A kind with `needs_fit = False` is built from the width alone: its empty module already computes the fitted map."""
    cls = translator_class(kind)
    assert isinstance(cls.needs_fit, bool)
    if cls.needs_fit:
        return
    t = _fitted(kind)
    h = _tokens(3)
    with torch.no_grad():
        assert torch.equal(cls.empty_module(D)(h), t.to_module()(h))


def check_residual_is_the_mean_squared_error(kind: str) -> None:
    """`residual(stats)` (a trained kind: `residual(data)`) is the mean squared error per token and feature on
    the statistics' own samples."""
    x, y, data = _data()
    t = create_translator(kind).fit_span(data)
    mse = np.mean((y - t.predict(x)) ** 2)
    got = t.residual(_residual_input(kind, data))
    # a trained kind's residual reads the float32 batches a model's activations come in
    rtol = 1e-6 if translator_class(kind).needs_activations else 1e-9
    assert abs(got - mse) <= rtol * abs(mse), (got, mse)


def check_refit_replaces_the_learned_values(kind: str) -> None:
    """Fitting again forgets the first fit: the result equals a fresh fit on the second statistics."""
    _, _, data = _data()
    other = span_data(5)
    t = create_translator(kind).fit_span(data).fit_span(other)
    fresh = create_translator(kind).fit_span(other)
    got, want = _fitted_values(t), _fitted_values(fresh)
    assert got.keys() == want.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def check_fit_is_quiet_on_well_conditioned_data(kind: str) -> None:
    """No Python warning and no `toast` log line when the data are well conditioned."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("toast")
    reported, level = set(_translators._reported), logger.level
    _translators._reported.clear()  # a condition reported earlier in the process would be silent here
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = create_translator(kind).fit_span(span_data(6))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        _translators._reported.clear()
        _translators._reported.update(reported)
    assert not getattr(t, "ill_conditioned_", False)
    assert not records, [r.getMessage() for r in records]


def check_cost_equals_fvcore(kind: str) -> None:
    """`cost(d, tokens)` is fvcore's count (papers' handles) and the exact params of the fitted and the empty module."""
    from toast.objectives import count_flops, count_params

    cls = translator_class(kind)
    for d, tokens in [(D, 7), (16, 197)]:
        want = cls.cost(d, tokens)
        assert isinstance(want.flops, int) and isinstance(want.params, int), want
        h = torch.zeros(1, tokens, d)
        for module in (_fitted(kind, d).to_module(), cls.empty_module(d)):
            got = (count_flops(module, (h,)), count_params(module))
            assert got == (want.flops, want.params), (
                f"{kind}.cost({d}, {tokens}) = {want}, fvcore counts {got} on {module}"
            )


_LOAD_IN_A_FRESH_PROCESS = """
import importlib, sys
import numpy as np, torch
importlib.import_module(sys.argv[2])  # the module that registers the kind
from toast.spaces import load_translator
directory = sys.argv[1]
t = load_translator(directory)
x = np.load(directory + "/x.npy")
np.save(directory + "/predict.npy", t.predict(x))
with torch.no_grad():
    np.save(directory + "/module.npy", t.to_module()(torch.from_numpy(x).float()).numpy())
print(t.kind)
"""


def check_save_load_round_trip(kind: str) -> None:
    """`save` then `load_translator` (here and in a fresh process) restores the kind, its settings and its outputs."""
    t = _fitted(kind)
    x = _tokens(4).double().numpy()
    with torch.no_grad():
        module_out = t.to_module()(torch.from_numpy(x).float()).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        assert t.save(tmp) == Path(tmp)
        json.loads((Path(tmp) / _translators.CONFIG_NAME).read_text())  # plain JSON beside the arrays
        here = load_translator(tmp)
        assert type(here) is type(t) and here.get_params() == t.get_params()
        restored = _fitted_values(here)
        for name, value in _fitted_values(t).items():
            np.testing.assert_array_equal(restored[name], value, err_msg=name)
        np.save(Path(tmp) / "x.npy", x)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS, tmp, type(t).__module__],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [kind]
        np.testing.assert_allclose(np.load(Path(tmp) / "predict.npy"), t.predict(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.load(Path(tmp) / "module.npy"), module_out, rtol=1e-6, atol=1e-6)


def translator_checks(kind: str) -> list[Check]:
    """The checks a translator kind must pass, each called as `check(kind)` (one test case each)."""
    translator_class(kind)  # an unknown kind fails here, naming the known ones
    return [
        check_fit_returns_self,
        check_unfitted_use_raises,
        check_predict_keeps_shapes,
        check_module_equals_predict,
        check_empty_module_loads_the_fitted_state,
        check_needs_fit_is_honest,
        check_residual_is_the_mean_squared_error,
        check_refit_replaces_the_learned_values,
        check_fit_is_quiet_on_well_conditioned_data,
        check_cost_equals_fvcore,
        check_save_load_round_trip,
    ]


def check_translator(kind: str) -> None:
    """Run every check on `kind`; the first broken rule raises `AssertionError`."""
    for check in translator_checks(kind):
        check(kind)


def check_identity_is_exact() -> None:
    """The `identity` kind, the reference every span is compared against, is exact: `y = x` bit for bit, free."""
    x, y, data = _data()
    stats = data.stats
    t = create_translator("identity").fit(stats)
    np.testing.assert_array_equal(t.weight_, np.eye(D))
    np.testing.assert_array_equal(t.bias_, np.zeros(D))
    np.testing.assert_array_equal(t.predict(x), x)
    module = t.to_module()
    assert isinstance(module, nn.Identity) and not list(module.parameters())
    h = torch.randn(2, 3, D)
    assert torch.equal(module(h), h)
    mse = np.mean((y - x) ** 2)
    assert abs(t.residual(stats) - mse) <= 1e-12 * mse
    assert tuple(translator_class("identity").cost(768, 257)) == (0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        np.testing.assert_array_equal(load_translator(t.save(tmp)).predict(x), x)
