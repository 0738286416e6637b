"""Objectives: the registry, the linear probes, fidelity and latency, checked against independent references."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeClassifier
from sklearn.preprocessing import StandardScaler

from toast.errors import NotFittedError, ObjectiveError, ToastError
from toast.objectives import (
    OBJECTIVES,
    AdamProbe,
    Display,
    LatencyResult,
    Objective,
    Role,
    TrialOutputs,
    compute_objectives,
    feature_fidelity,
    get_objective,
    get_objectives,
    list_objectives,
    measure_latency,
    probe_accuracy,
    register_objective,
    task_score,
)
from toast.objectives._objectives import CostObjective
from toast.objectives._probes import DEFAULT_ALPHAS, ProbeResult, RidgeProbe
from toast.objectives.testing import ArrayTrial, random_trial

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread

LABEL_VALUES = np.array([3, 7, 10, 42, 99])  # not contiguous, not starting at 0


# ---------------------------------------------------------------- data


def blobs(n: int, *, k: int = 4, d: int = 12, sigma: float = 1.0, seed: int = 0, skewed: bool = True):
    """Gaussian classes around fixed centers (the same for every call with the same `k` and `d`);
    `skewed`: features on very different scales, with an offset, so that standardization matters."""
    centers = np.random.default_rng(100).normal(size=(k, d))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, k, n)
    X = centers[index] + sigma * rng.normal(size=(n, d))
    if skewed:
        X = X * np.geomspace(0.1, 20.0, d) + 5.0
    return X, LABEL_VALUES[:k][index]


def separable(n: int, *, k: int = 3, d: int = 16, seed: int = 0, skewed: bool = True):
    """Tight, far-apart classes: any sensible linear probe is perfect."""
    return blobs(n, k=k, d=d, sigma=0.05, seed=seed, skewed=skewed)


# ---------------------------------------------------------------- registry


def test_registry_declares_name_direction_unit():
    expected = {
        "accuracy": ("maximize", "%"),
        "fidelity": ("maximize", "CKA"),
        "perplexity": ("minimize", "ppl"),
        "kl": ("minimize", "nats/token"),
        "top1": ("maximize", "%"),
        "gflops": ("minimize", "GFLOPs"),
        "params": ("minimize", "M"),
        "latency": ("minimize", "ms"),
    }
    assert {name: (OBJECTIVES[name].direction, OBJECTIVES[name].unit) for name in expected} == expected
    assert list_objectives()[: len(expected)] == tuple(
        expected
    )  # the built-ins first, in the order of trials.csv's columns
    for name, objective in OBJECTIVES.items():
        assert objective.name == name and objective.description
    with pytest.raises(TypeError):
        OBJECTIVES["new"] = OBJECTIVES["accuracy"]  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        OBJECTIVES["accuracy"].direction = "minimize"


def test_objective_rejects_unknown_direction():
    with pytest.raises(ObjectiveError, match="direction"):
        Objective(name="x", direction="up", unit="", description="")


def test_objective_lists_every_declaration_problem_at_once():
    with pytest.raises(ObjectiveError) as info:
        Objective(name="two words", direction="up", unit="", description="", fields=("two words",), worst=float("nan"))
    message = str(info.value)
    assert all(part in message for part in ("direction", "identifier", "worst", "fields"))
    with pytest.raises(ObjectiveError, match="CostObjective"):
        CostObjective(name="c", direction="minimize", unit="", description="", role=Role.MEASURE)


def test_an_objective_without_compute_says_so():
    with pytest.raises(NotImplementedError, match="implement compute"):
        Objective(name="x", direction="minimize", unit="", description="").compute(random_trial())


def test_objectives_declare_their_display_fields_and_roles():
    assert OBJECTIVES["accuracy"].columns == ("accuracy", "accuracy_std")
    assert OBJECTIVES["fidelity"].columns == ("fidelity", "fidelity_undefined", "cosine")
    assert list_objectives(Role.ACCURACY) == ("accuracy", "perplexity") and list_objectives("cost")[:2] == (
        "gflops",
        "params",
    )
    assert task_score().name == "accuracy" and task_score(["gflops", "perplexity"]).name == "perplexity"
    assert task_score(get_objectives("fidelity,gflops")) is None
    assert [OBJECTIVES[n].worst_value for n in ("accuracy", "fidelity", "gflops", "params", "latency")] == [
        0.0,
        0.0,
        *[float("inf")] * 3,
    ]
    assert Objective(name="x", direction="maximize", unit="", description="").worst_value == float("-inf")
    default = Objective(name="x", direction="maximize", unit="u", description="").display
    assert (default.title, default.axis, default.name, default.unit) == ("x", "x (u)", "x", "u")
    shown = OBJECTIVES["accuracy"].display
    assert shown.format(91.234) == "91.23" and shown.format(float("nan")) == "-"
    assert shown.format_delta(88.75, 90.0) == "-1.25" and shown.format_delta(float("nan"), 90.0) == "-"
    assert Display.plain("number").title == "number" and Display.plain("number").format(12345.0) == "1.234e+04"


def test_the_registry_refuses_clashes_and_a_study_two_task_scores():
    before = list_objectives()
    with pytest.raises(ObjectiveError, match="already registered"):
        register_objective(Objective(name="gflops", direction="minimize", unit="", description=""))
    with pytest.raises(ObjectiveError, match=r"fields \['cosine'\] are already reported by \['fidelity'\]"):
        register_objective(
            Objective(name="agreement", direction="maximize", unit="", description="", fields=("cosine",))
        )
    with pytest.raises(ObjectiveError, match="takes an Objective"):
        register_objective("speed")
    assert list_objectives() == before  # nothing half-registered
    with pytest.raises(ObjectiveError, match="did you mean 'params'"):
        get_objective("param")
    assert get_objective("params") is OBJECTIVES["params"]


# ---------------------------------------------------------------- scoring a trial: which values a trial reports


BUILT_IN_FIELDS = (
    "accuracy",
    "accuracy_std",
    "fidelity",
    "fidelity_undefined",
    "cosine",
    "gflops",
    "params",
    "latency",
)


def reported(names, head="probe"):
    """The trial and the built-in objectives' fields it reports (a plug-in objective may add its own)."""
    trial = random_trial(head=head)
    values = compute_objectives(trial, get_objectives(names))
    return trial, {k: v for k, v in values.items() if k in BUILT_IN_FIELDS}


@pytest.mark.parametrize(
    ("names", "keys"),
    [
        (
            ["accuracy", "gflops"],
            ["accuracy", "fidelity", "cosine", "gflops", "params", "latency"],
        ),  # features computed: fidelity too; latency is counted from the latency table, as GFLOPs from the cost table
        (
            ["fidelity", "params"],
            ["fidelity", "cosine", "gflops", "params", "latency"],
        ),  # accuracy only when it is an objective
        (["gflops", "params"], ["gflops", "params", "latency"]),  # no model pass
        (["params", "latency"], ["gflops", "params", "latency"]),
        (["latency", "accuracy", "gflops"], ["accuracy", "fidelity", "cosine", "gflops", "params", "latency"]),
    ],
)
def test_a_trial_reports_its_objectives_and_those_already_computable(names, keys):
    trial, values = reported(names)
    assert list(values) == keys  # registry order, whatever the objectives' order
    assert ("probe_features" in trial.passes) == ("accuracy" in names)
    assert all(count == 1 for count in trial.passes.values())  # each pass once


def test_the_original_head_takes_features_and_logits_from_one_pass():
    trial, values = reported(["accuracy", "gflops"], head="original")
    assert list(values) == ["accuracy", "fidelity", "cosine", "gflops", "params", "latency"]
    assert trial.passes == {"eval_features": 1, "eval_logits": 1} and "probe" not in trial.seconds
    expected = float((trial.eval_logits.argmax(1) == trial.eval_labels).mean() * 100)
    assert values["accuracy"] == expected
    trial, _ = reported(["fidelity", "gflops"], head="original")
    assert trial.passes == {"eval_features": 1}  # no logits when no objective reads them


def test_the_probe_is_timed_apart_from_the_forward_passes():
    trial, values = reported(["accuracy", "gflops"])
    assert trial.seconds["probe"] > 0 and "forward" in trial.seconds
    assert 0 <= values["accuracy"] <= 100 and "accuracy_std" not in values  # ridge: one run
    trial = random_trial(probe="adam")
    values = compute_objectives(trial, get_objectives(["accuracy", "gflops"]))
    assert values["accuracy_std"] >= 0  # Adam: mean and std over seeds


def test_timed_phases_exclude_the_phases_inside_them():
    trial = random_trial()
    with trial.timed("outer"):
        time.sleep(0.02)
        with trial.timed("inner"):
            time.sleep(0.05)
    assert trial.seconds["inner"] >= 0.05 and 0.02 <= trial.seconds["outer"] < 0.05


def test_lazy_members_are_computed_once_and_reported_available():
    trial = random_trial()
    assert not trial.available("eval_features") and trial.available("plan") and trial.available("labels")
    assert not trial.available("time_batch") and not trial.available("no such member")
    first = trial.eval_features
    assert trial.eval_features is first and trial.passes == {"eval_features": 1} and trial.available("eval_features")
    with pytest.raises(TypeError):
        TrialOutputs(plan=trial.plan, cost=trial.cost)  # abstract: a search or a test provides the outputs


def test_undefined_fidelity_has_no_value_and_says_why():
    base = random_trial()
    trial = ArrayTrial(
        plan=base.plan,
        cost=base.cost,
        eval_features=np.ones_like(base.original_features),  # constant: CKA is 0/0
        probe_features=base.probe_features,
        eval_logits=base.eval_logits,
        eval_labels=base.eval_labels,
        probe_labels=base.probe_labels,
        original_features=base.original_features,
    )
    values = OBJECTIVES["fidelity"].compute(trial)
    assert values["fidelity"] is None and "undefined" in values["fidelity_undefined"]


@pytest.mark.parametrize("names", [["gflops", "accuracy"], ("accuracy", "fidelity", "latency"), "params, accuracy"])
def test_get_objectives_keeps_the_given_order(names):
    expected = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    assert [o.name for o in get_objectives(names)] == expected


def test_get_objectives_lists_every_problem_at_once():
    with pytest.raises(ObjectiveError) as info:
        get_objectives(["acuracy", "acuracy"])
    message = str(info.value)
    assert "unknown objective 'acuracy'" in message
    assert all(name in message for name in OBJECTIVES)  # the known names are listed
    assert "did you mean 'accuracy'" in message
    assert "given 2 times" in message
    assert "at least two" in message
    assert isinstance(info.value, ToastError) and isinstance(info.value, ValueError)
    assert "\n" not in message  # the CLI prints one line


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["gflops", "gflops"], "given 2 times"),
        (["accuracy"], "at least two"),
        ([], "got 0"),
        (["speed", "params"], "'speed'"),
        (["accuracy", "perplexity", "gflops"], "'accuracy' and 'perplexity' are task scores"),
    ],
)
def test_get_objectives_rejects(names, fragment):
    with pytest.raises(ObjectiveError, match=fragment):
        get_objectives(names)


# ---------------------------------------------------------------- ridge probe vs scikit-learn


@pytest.mark.parametrize(
    ("n", "d", "k"), [(300, 12, 4), (300, 12, 2), (40, 60, 3)], ids=["multiclass", "binary", "n<d"]
)
def test_ridge_fixed_alpha_equals_sklearn_ridge_classifier(n, d, k):
    X, y = blobs(n, k=k, d=d, sigma=2.0)
    Xs = StandardScaler().fit_transform(X)
    reference = RidgeClassifier(alpha=3.0).fit(Xs, y)
    probe = RidgeProbe(alpha=3.0).fit(X, y)

    X_new, _ = blobs(200, k=k, d=d, sigma=2.0, seed=1)
    np.testing.assert_array_equal(probe.predict(X_new), reference.predict(StandardScaler().fit(X).transform(X_new)))
    np.testing.assert_array_equal(probe.classes_, reference.classes_)
    coef, intercept = probe.coef_.numpy(), probe.intercept_.numpy()
    if k == 2:  # scikit-learn keeps one column for the positive class; ours are ± each other
        np.testing.assert_allclose(coef[1], reference.coef_.ravel(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(coef[0], -coef[1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(intercept[1], reference.intercept_[0], rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_allclose(coef, reference.coef_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-9, atol=1e-12)


def gcv_reference(X: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """GCV of ridge with an unpenalized intercept from the explicit hat matrix of `[1, Xs]`, in numpy."""
    Xs = StandardScaler().fit_transform(X)
    n, d = Xs.shape
    classes = np.unique(y)
    Y = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
    A = np.hstack([np.ones((n, 1)), Xs])
    penalty = alpha * np.eye(d + 1)
    penalty[0, 0] = 0.0
    H = A @ np.linalg.solve(A.T @ A + penalty, A.T)
    return float(np.mean((Y - H @ Y) ** 2) / (1 - np.trace(H) / n) ** 2)


@pytest.mark.parametrize(("n", "d"), [(200, 10), (30, 50)], ids=["n>d", "n<d"])
def test_ridge_chooses_alpha_by_gcv(n, d):
    X, y = blobs(n, k=3, d=d, sigma=3.0)
    probe = RidgeProbe().fit(X, y)
    reference = [gcv_reference(X, y, a) for a in DEFAULT_ALPHAS]
    np.testing.assert_allclose(probe.cv_errors_, reference, rtol=1e-7)
    assert probe.alpha_ == DEFAULT_ALPHAS[int(np.argmin(reference))]
    fixed = RidgeProbe(alpha=probe.alpha_).fit(X, y)  # the eigen path and the Cholesky path agree
    np.testing.assert_allclose(probe.coef_.numpy(), fixed.coef_.numpy(), rtol=1e-8, atol=1e-12)


def test_ridge_custom_alpha_grid():
    X, y = blobs(100, sigma=3.0)
    assert RidgeProbe(alphas=[0.5, 5.0]).fit(X, y).alpha_ in (0.5, 5.0)
    assert len(RidgeProbe(alphas=[0.5, 5.0]).fit(X, y).cv_errors_) == 2


def test_ridge_separable_data_is_perfect():
    X, y = separable(400)
    X_test, y_test = separable(300, seed=1)
    assert RidgeProbe().fit(X, y).score(X_test, y_test) == 100.0
    assert RidgeProbe(alpha=1.0).fit(X, y).score(X_test, y_test) == 100.0


def test_ridge_random_labels_are_at_chance():
    rng = np.random.default_rng(0)
    X, X_test = rng.normal(size=(1000, 20)), rng.normal(size=(2000, 20))
    y, y_test = rng.integers(0, 4, 1000), rng.integers(0, 4, 2000)
    assert abs(RidgeProbe().fit(X, y).score(X_test, y_test) - 25.0) < 5.0  # binomial sd ≈ 1 point


def test_probe_accepts_torch_and_numpy_alike():
    X, y = blobs(150, sigma=2.0)
    from_numpy = RidgeProbe(alpha=1.0).fit(X, y).predict(X)
    from_torch = (
        RidgeProbe(alpha=1.0).fit(torch.from_numpy(X).float(), torch.from_numpy(y)).predict(torch.from_numpy(X))
    )
    np.testing.assert_array_equal(from_numpy, from_torch)


def test_unseen_test_label_counts_as_wrong():
    X, y = separable(300)
    X_test, y_test = separable(100, seed=1)
    y_test = y_test.copy()
    y_test[:25] = 12345  # never seen in training
    probe = RidgeProbe().fit(X, y)
    assert probe.score(X_test, y_test) == 75.0
    assert set(probe.predict(X_test)) <= set(LABEL_VALUES[:3])


def test_constant_feature_is_harmless():
    X, y = separable(200)
    X = np.hstack([X, np.full((200, 1), 0.1)])  # zero variance: its scale is 1, as StandardScaler's
    probe = RidgeProbe(alpha=1.0).fit(X, y)
    assert probe.scale_[-1] == 1.0 and probe.score(X, y) == 100.0


@pytest.mark.parametrize("probe", [RidgeProbe(), AdamProbe(epochs=1)], ids=["ridge", "adam"])
def test_probe_input_errors(probe):
    X, y = blobs(50)
    with pytest.raises(NotFittedError):
        type(probe)(**probe.get_params()).predict(X)
    with pytest.raises(ObjectiveError, match="one label per sample"):
        probe.fit(X, y[:-1])
    with pytest.raises(ObjectiveError, match="at least two classes"):
        probe.fit(X, np.zeros(50, dtype=int))
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ObjectiveError, match="NaN"):
        probe.fit(bad, y)
    with pytest.raises(ObjectiveError, match="integer class labels"):
        probe.fit(X, y + 0.5)
    with pytest.raises(ObjectiveError, match=r"\(n, d\)"):
        probe.fit(X[:, 0], y)
    probe.fit(X, y)
    with pytest.raises(ObjectiveError, match="fitted on 12"):
        probe.predict(X[:, :5])


def test_bad_probe_settings_are_reported():
    X, y = blobs(50)
    with pytest.raises(ObjectiveError, match="> 0"):
        RidgeProbe(alpha=0.0).fit(X, y)
    with pytest.raises(ObjectiveError, match="not both.*> 0"):
        RidgeProbe(alpha=1.0, alphas=[1.0, -2.0]).fit(X, y)
    with pytest.raises(ObjectiveError, match="lr.*epochs"):
        AdamProbe(lr=-1.0, epochs=0).fit(X, y)
    # numpy scalars are fine settings
    assert RidgeProbe(alpha=np.float32(2.0)).fit(X, y).alpha_ == 2.0
    AdamProbe(lr=np.float64(1e-3), epochs=np.int64(1), seed=np.int32(3)).fit(X, y)


# ---------------------------------------------------------------- adam probe (the papers' protocol)


def test_adam_is_deterministic_given_the_seed_and_leaves_the_global_rng_alone():
    X, y = blobs(600, sigma=1.0)
    state = torch.random.get_rng_state()
    first = AdamProbe(seed=7).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = AdamProbe(seed=7).fit(X, y)
    other = AdamProbe(seed=8).fit(X, y)
    assert torch.equal(first.coef_, second.coef_) and torch.equal(first.intercept_, second.intercept_)
    assert not torch.equal(first.coef_, other.coef_)


@pytest.mark.parametrize("standardize", [False, True])
def test_adam_learns_separable_data(standardize):
    # 5 epochs of batch 256 are few steps: enough samples and width that they move the logits far
    # enough (raw features: no wild scales either)
    X, y = separable(5000, d=64, skewed=standardize)
    X_test, y_test = separable(500, d=64, seed=1, skewed=standardize)
    assert AdamProbe(standardize=standardize).fit(X, y).score(X_test, y_test) > 95.0


def test_probe_accuracy_mean_and_std_over_seeds():
    X, y = blobs(800, sigma=2.5)
    X_test, y_test = blobs(300, sigma=2.5, seed=1)
    result = probe_accuracy(X, y, X_test, y_test, probe="adam", seeds=(0, 1, 2))
    direct = [AdamProbe(seed=s).fit(X, y).score(X_test, y_test) for s in (0, 1, 2)]
    assert result.per_seed == tuple(direct)
    assert result.mean == pytest.approx(np.mean(direct))
    assert result.std == pytest.approx(np.std(direct, ddof=1))  # sample standard deviation
    assert len(set(direct)) > 1  # the seeds really differ


def test_probe_accuracy_ridge_is_one_deterministic_run():
    X, y = blobs(300, sigma=2.0)
    X_test, y_test = blobs(200, sigma=2.0, seed=1)
    result = probe_accuracy(X, y, X_test, y_test)
    assert result == ProbeResult(
        mean=result.per_seed[0], std=0.0, per_seed=(RidgeProbe().fit(X, y).score(X_test, y_test),)
    )
    configured = probe_accuracy(X, y, X_test, y_test, probe=RidgeProbe(alpha=2.0))
    assert configured.mean == RidgeProbe(alpha=2.0).fit(X, y).score(X_test, y_test)


def test_probe_accuracy_uses_a_configured_adam_template():
    X, y = blobs(300, sigma=2.0)
    result = probe_accuracy(X, y, X, y, probe=AdamProbe(lr=1e-2, epochs=2), seeds=(4, 5))
    assert result.per_seed == tuple(AdamProbe(lr=1e-2, epochs=2, seed=s).fit(X, y).score(X, y) for s in (4, 5))


def test_probe_accuracy_rejects_unknown_probe_and_empty_seeds():
    X, y = blobs(50)
    with pytest.raises(ObjectiveError, match="known: ridge, adam"):
        probe_accuracy(X, y, X, y, probe="svm")
    with pytest.raises(ObjectiveError, match="seeds"):
        probe_accuracy(X, y, X, y, probe="adam", seeds=())


def test_ridge_and_adam_rank_feature_sets_alike():
    """Progressively noisier features: the fast default orders them as the papers' protocol does."""
    sigmas = [0.7, 1.5, 2.5, 4.0, 6.0]
    ridge, adam = [], []
    for sigma in sigmas:
        X, y = blobs(2000, k=5, d=32, sigma=sigma, seed=1, skewed=False)
        X_test, y_test = blobs(800, k=5, d=32, sigma=sigma, seed=2, skewed=False)
        ridge.append(probe_accuracy(X, y, X_test, y_test, probe="ridge").mean)
        adam.append(probe_accuracy(X, y, X_test, y_test, probe="adam").mean)
    assert spearmanr(ridge, adam).statistic >= 0.8
    assert ridge == sorted(ridge, reverse=True)


# ---------------------------------------------------------------- fidelity


def cka_reference(X: np.ndarray, Y: np.ndarray) -> float:
    """Kernel form of linear CKA with an explicit centering matrix (Kornblith et al., 2019, Eq. 3–4)."""
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return float(np.trace(K @ L) / np.sqrt(np.trace(K @ K) * np.trace(L @ L)))


def test_identical_features_have_fidelity_one():
    X = np.random.default_rng(0).normal(size=(100, 16)) + 2.0
    assert feature_fidelity(X, X) == pytest.approx({"cka": 1.0, "cosine": 1.0}, abs=1e-12)
    assert feature_fidelity(X, 3.0 * X) == pytest.approx({"cka": 1.0, "cosine": 1.0}, abs=1e-12)


def test_orthogonal_rotation_keeps_cka():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 16))
    Q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    result = feature_fidelity(X, X @ Q)
    assert result["cka"] == pytest.approx(1.0, abs=1e-12)
    assert result["cosine"] < 0.9  # cosine compares the vectors themselves


@pytest.mark.parametrize(("n", "d"), [(80, 10), (20, 64)], ids=["feature-form", "kernel-form"])
def test_cka_and_cosine_equal_numpy_references(n, d):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d)) + 1.0
    Y = 0.6 * X + rng.normal(size=(n, d))
    result = feature_fidelity(torch.from_numpy(X).float(), Y.astype(np.float32))
    X32, Y32 = X.astype(np.float32).astype(np.float64), Y.astype(np.float32).astype(np.float64)
    cosine = np.mean(np.sum(X32 * Y32, axis=1) / (np.linalg.norm(X32, axis=1) * np.linalg.norm(Y32, axis=1)))
    assert result["cka"] == pytest.approx(cka_reference(X32, Y32), rel=1e-10)
    assert result["cosine"] == pytest.approx(cosine, rel=1e-10)
    assert 0.0 < result["cka"] < 1.0


def test_fidelity_rejects_mismatched_shapes():
    with pytest.raises(ObjectiveError, match="same shape"):
        feature_fidelity(np.ones((10, 4)), np.ones((9, 4)))


# ---------------------------------------------------------------- latency


def test_latency_calls_warmup_plus_repeats_and_times_them():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    result = measure_latency(fn, warmup=2, repeats=5)
    assert isinstance(result, LatencyResult) and result.repeats == 5
    assert len(calls) == 7
    assert 2.0 <= result.p10_ms <= result.median_ms <= result.p90_ms


def test_latency_synchronizes_cuda_around_each_timed_call(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    measure_latency(lambda: events.append("call"), warmup=1, repeats=3, device="cuda")
    assert events == ["call"] + ["sync", "call", "sync"] * 3


def test_latency_rejects_bad_settings():
    with pytest.raises(ObjectiveError, match="warmup.*repeats"):
        measure_latency(lambda: None, warmup=-1, repeats=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probes_and_fidelity_on_cuda():
    X, y = separable(5000, d=64, skewed=False)
    X_cuda, y_cuda = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()
    ridge_cpu, ridge_cuda = RidgeProbe().fit(X, y), RidgeProbe().fit(X_cuda, y_cuda)
    assert ridge_cuda.alpha_ == ridge_cpu.alpha_ and ridge_cuda.coef_.is_cuda
    np.testing.assert_allclose(ridge_cuda.coef_.cpu().numpy(), ridge_cpu.coef_.numpy(), rtol=1e-6, atol=1e-9)
    assert AdamProbe(device="cuda").fit(X_cuda, y_cuda).score(X, y) > 95.0
    assert feature_fidelity(X_cuda, X_cuda)["cka"] == pytest.approx(1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_latency_on_cuda():
    x = torch.randn(2048, 2048, device="cuda")
    result = measure_latency(lambda: x @ x, device="cuda")
    assert result.median_ms > 0


def test_results_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ProbeResult(mean=1.0, std=0.0, per_seed=(1.0,)).mean = 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        LatencyResult(median_ms=1.0, p10_ms=1.0, p90_ms=1.0, repeats=1).repeats = 2
