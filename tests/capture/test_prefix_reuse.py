"""Prefix reuse (issue 12, item 3): a trial starts from the stored state of the deepest prefix it shares with the
original model or an earlier trial, and scores exactly what the whole forward scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toast.capture._prefix import SUFFIX
from toast.search import SearchSettings
from toast.search._context import SearchContext
from toast.spaces import Plan

L = 4
PLANS = ("1→2:linear", "1→2:linear,2→3:identity", "0→1:identity,2→3:linear", "-1→0:linear,1→3:linear", "2→3:linear")


@pytest.fixture(scope="module")
def text_dataset_dir(tmp_path_factory):
    import datasets

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 2, n)
        texts = [" ".join(f"w{rng.integers(0, 40) + 40 * y}" for _ in range(rng.integers(2, 12))) for y in labels]
        feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
        return datasets.Dataset.from_dict({"text": texts, "label": labels.tolist()}, features=feats)

    path = tmp_path_factory.mktemp("texts") / "words"
    datasets.DatasetDict({"train": make(48), "test": make(24)}).save_to_disk(str(path))
    return path


def settings_for(model, dataset, root, **kw) -> SearchSettings:
    return SearchSettings.from_flat(
        model=str(model),
        dataset=str(dataset),
        out=root / "run",
        cache_dir=root / "cache",
        calib_samples=16,
        probe_samples=40,
        eval_samples=20,
        batch_size=6,  # a short last batch
        device="cpu",
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module", params=["vit", "bert"])
def contexts(request, tiny_dirs, image_dataset_dir, text_dataset_dir, tmp_path_factory):
    torch.set_num_threads(1)
    data = image_dataset_dir if request.param == "vit" else text_dataset_dir
    root = tmp_path_factory.mktemp(f"prefix-{request.param}")
    base = settings_for(tiny_dirs[request.param], data, root)
    return (
        SearchContext.build(base.updated(prefix_cache_gb=0), progress=False),
        SearchContext.build(base.updated(prefix_cache_gb=1.0), progress=False),
    )


SCORES = ("accuracy", "fidelity", "gflops")


def test_a_trial_from_stored_states_scores_what_the_whole_forward_scores(contexts):
    whole, reusing = contexts
    assert whole.prefix_store is None and reusing.prefix_store.nbytes > 0  # the original's states, from the baseline
    for text in PLANS:
        plan = Plan.parse(text, L)
        a, b = whole.evaluate(plan), reusing.evaluate(plan)
        assert {k: a[k] for k in SCORES} == {k: b[k] for k in SCORES}, text
        samples = len(whole.probe_labels) + len(whole.eval_labels)
        kept = len(plan.kept) * samples
        assert a["forward_blocks"] == kept and a["forward_blocks_reused"] == 0
        assert b["forward_blocks"] + b["forward_blocks_reused"] == kept
        first = plan.spans[0].source  # the span reads h_source: blocks 0 … source-1 are the original's, stored
        assert b["forward_blocks_reused"] >= first * samples, text


def test_a_later_plan_starts_at_an_earlier_trials_compressed_prefix(contexts):
    _, reusing = contexts
    reusing.evaluate(Plan.parse("0→1:linear,2→3:identity", L))
    b = reusing.evaluate(Plan.parse("0→1:linear,2→3:linear", L))  # same steps up to the second translator
    samples = len(reusing.probe_labels) + len(reusing.eval_labels)
    assert b["forward_blocks"] == 0 and b["forward_blocks_reused"] == 2 * samples  # blocks 0 and 2 not run again


def test_another_kind_on_the_same_span_is_another_prefix(contexts):
    whole, reusing = contexts
    for text in (
        "0→1:linear,2→3:linear",
        "0→1:identity,2→3:linear",
        "0→2:linear,2→3:linear",
        "0→2:identity,2→3:linear",
    ):
        plan = Plan.parse(text, L)  # the state before 2→3 differs with the first span's kind
        a, b = whole.evaluate(plan), reusing.evaluate(plan)
        assert {k: a[k] for k in SCORES} == {k: b[k] for k in SCORES}, text
        model = reusing.model_for(plan)
        np.testing.assert_array_equal(whole.outputs(whole.model_for(plan)), reusing.outputs(model))


def test_the_cap_bounds_the_store_and_a_damaged_state_is_recomputed(contexts, tmp_path):
    whole, reusing = contexts
    store = reusing.prefix_store
    entry = next(store.directory.glob(f"*{SUFFIX}"))
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    for text in PLANS:
        plan = Plan.parse(text, L)
        assert whole.evaluate(plan)["accuracy"] == reusing.evaluate(plan)["accuracy"], text
    small = reusing.settings.updated(prefix_cache_gb=store.nbytes / 3 / 1024**3)
    capped = SearchContext.build(small, progress=False)  # the same folder, a third of its size allowed
    for text in PLANS:
        capped.evaluate(Plan.parse(text, L))
        on_disk = sum(f.stat().st_size for f in capped.prefix_store.directory.glob(f"*{SUFFIX}"))
        assert on_disk <= capped.prefix_store.cap_bytes
    tiny = reusing.settings.updated(prefix_cache_gb=1e-9, cache_dir=tmp_path / "cache")  # room for no state
    nothing = SearchContext.build(tiny, progress=False)
    b = nothing.evaluate(Plan.parse(PLANS[0], L))
    assert b["forward_blocks_reused"] == 0 and not list(nothing.prefix_store.directory.iterdir())  # no temp left


def test_the_subset_stage_and_the_full_sets_agree_with_a_single_stage(
    tiny_dirs, image_dataset_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr("toast.search._context.MIN_SUBSET", 5)  # a subset of 10 evaluation samples is enough here
    base = settings_for(tiny_dirs["vit"], image_dataset_dir, tmp_path, prefix_cache_gb=0)
    staged = SearchContext.build(base.updated(fidelity_fraction=0.5, eval_samples=20), progress=False)
    assert [len(r) for _, r in staged.groups["eval"]] == [10, 10]
    plan = Plan.parse("1→2:linear", L)
    full = staged.evaluate(plan)
    promoted = staged.evaluate(plan, promote=lambda scores, n: None)
    stopped = staged.evaluate(plan, promote=lambda scores, n: 3)
    assert promoted["scored_on"] == "full" and promoted["accuracy"] == full["accuracy"]
    assert stopped["scored_on"] == "subset" and stopped["dominated_by"] == 3
    assert stopped["accuracy"] == promoted["subset_accuracy"] and stopped["subset_eval_samples"] == 10
    assert stopped["forward_blocks"] * 2 == full["forward_blocks"]  # half of the probe and half of the eval rows
    assert promoted["forward_blocks"] == full["forward_blocks"]  # the subset's forward reused by the full sets


def test_a_block_a_span_folds_into_is_never_taken_from_the_original_states(tiny_dirs, image_dataset_dir, tmp_path):
    """A folded span changes its source block: the state after it is not the original's, so a stored state of the
    original after that block must not stand in for it (it once did, and a folded plan scored as the identity)."""
    torch.set_num_threads(1)
    base = settings_for(tiny_dirs["vit"], image_dataset_dir, tmp_path, translators=("identity", "linear", "folded"))
    whole = SearchContext.build(base.updated(prefix_cache_gb=0), progress=False)
    reusing = SearchContext.build(base.updated(prefix_cache_gb=1.0), progress=False)
    for text in ("1→2:folded", "0→1:folded,2→3:linear", "1→2:linear,2→3:identity"):
        plan = Plan.parse(text, L)
        reusing.evaluate(plan)  # stores its own states: a second evaluation may start from them
        a, b = whole.evaluate(plan), reusing.evaluate(plan)
        assert {k: a[k] for k in ("fidelity", "cosine")} == {k: b[k] for k in ("fidelity", "cosine")}, text
    folded, identity = (reusing.evaluate(Plan.parse(f"1→2:{kind}", L)) for kind in ("folded", "identity"))
    assert folded["cosine"] != identity["cosine"]
