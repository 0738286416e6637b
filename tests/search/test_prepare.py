"""`prepare`: the one preparation the search, `--dry-run` and `analyze` share, cheapest check first."""

from __future__ import annotations

import json

import pytest

from toast.errors import DatasetError, SettingsError
from toast.search import Prepared, SearchSettings, _prepare, prepare
from toast.search._context import SearchContext
from toast.search.cli import main


@pytest.fixture
def settings(tiny_dirs, image_dataset_dir, tmp_path) -> SearchSettings:
    return SearchSettings.from_flat(
        model=str(tiny_dirs["vit"]),
        dataset=str(image_dataset_dir),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        calib_samples=16,
        probe_samples=30,
        eval_samples=50,
        max_removed=2,
        device="cpu",
        progress=False,
    )


def _forbid(monkeypatch, name: str) -> None:
    def called(*args, **kwargs):
        raise AssertionError(f"{name} ran: a cheaper check should have failed first")

    monkeypatch.setattr(_prepare, name, called)


def test_prepared_is_what_the_search_then_captures_under(settings):
    prepared = prepare(settings)
    assert isinstance(prepared, Prepared)
    assert (prepared.train.split, prepared.test.split) == ("train", "test")
    assert prepared.loaded.num_blocks == 4 and prepared.space.num_blocks == 4 and prepared.space.removal_limit == 2
    assert prepared.costs.original.gflops > 0
    assert len(prepared.spec.sample_ids) == 16 and not prepared.cache_hit
    # the test split holds 20 samples: the evaluation count is cut short, and said so once
    assert prepared.samples_used == {"calib_samples": 16, "probe_samples": 30, "eval_samples": 20}
    assert prepared.notes == (
        f"note: --eval-samples 50 but split 'test' of {settings.dataset!r} holds 20 samples: using 20",
    )

    ctx = SearchContext.build(settings, progress=False)
    assert ctx.captured.directory == prepared.cache.path(prepared.spec)  # the dry run's hit or miss is about this entry
    assert prepare(settings).cache_hit
    assert ctx.samples_used == prepared.samples_used and ctx.space.size() == prepared.space.size()
    assert ctx.costs.original == prepared.costs.original


def test_a_capture_only_reads_one_split_and_measures_nothing(settings, monkeypatch):

    loaded_splits = []
    load_split = _prepare.load_split
    monkeypatch.setattr(
        _prepare,
        "load_split",
        lambda dataset, split, **kw: loaded_splits.append(split) or load_split(dataset, split, **kw),
    )
    _forbid(monkeypatch, "measure_cost_table")
    prepared = prepare(settings.updated(split_train="test", calib_samples=500), search=False)
    assert loaded_splits == ["test"]
    assert prepared.test is prepared.space is prepared.costs is None
    assert prepared.samples_used == {"calib_samples": 20} and len(prepared.spec.sample_ids) == 20


def test_a_bad_path_fails_before_any_data_is_read(settings, monkeypatch, tmp_path):

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _forbid(monkeypatch, "load_split")
    with pytest.raises(SettingsError, match="run directory .* is a file"):
        prepare(settings.updated(out=a_file))
    with pytest.raises(SettingsError, match="output directory .* is a file"):
        prepare(settings.updated(out=a_file), search=False)


def test_the_modality_fails_from_the_config_before_the_weights(settings, tiny_dirs, monkeypatch):

    _forbid(monkeypatch, "load_model")
    with pytest.raises(DatasetError, match="holds image but model .* takes text"):
        prepare(settings.updated(model=str(tiny_dirs["bert"])))


def test_a_worker_skips_the_run_directory_check(settings):
    """A Ray worker's settings name the model by its absolute path: the driver's run directory would refuse them."""

    settings.out.mkdir()
    (settings.out / "settings.json").write_text(json.dumps({**settings.to_json(), "seed": 7}))
    with pytest.raises(SettingsError, match="belongs to another run"):
        prepare(settings)
    assert prepare(settings, check_paths=False).loaded.num_blocks == 4
    assert prepare(settings.updated(out=settings.out / "sub" / "x"), check_paths=False).loaded.num_blocks == 4


def test_analyze_refuses_an_out_that_is_a_file_before_loading(tiny_dirs, image_dataset_dir, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code = main(
        [
            "analyze",
            "--model",
            str(tiny_dirs["vit"]),
            "--dataset",
            str(image_dataset_dir),
            "--out",
            str(a_file),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "output directory (--out)" in err[0] and "is a file" in err[0], err
    assert not (tmp_path / "cache").exists()


def test_mlp_branch_statistics_are_captured_only_for_a_kind_that_needs_them(settings):
    """The folded kind's MLP-branch statistics cost capture time and memory: a run without it skips them (its own
    cache key), a run that may use it (in the space or in a given plan) gathers them."""

    plain = prepare(settings)
    assert not plain.calibration.branches and not plain.spec.branches
    for other in (
        settings.updated(translators=("identity", "linear", "folded")),
        settings.updated(plans=("1->2:folded",)),
    ):
        assert prepare(other).calibration.branches and prepare(other).spec.key != plain.spec.key
    ctx = SearchContext.build(settings, progress=False)
    assert not ctx.captured.stats.has_branches
    folded = SearchContext.build(settings.updated(translators=("identity", "folded")), progress=False)
    assert folded.captured.stats.has_branches


def test_the_capture_holds_the_space_s_pairs_and_the_states_a_trained_kind_or_refit_reads():
    """Issue 22: the pairs of the space (and of `plans`), and the shards only where a trained kind or a refit pass
    reads them."""
    from toast.spaces import PlanSpace, space_branch_pairs, space_pairs

    def needs(**flat):
        settings = SearchSettings.from_flat(model="demo-vit", dataset="digits", **flat)
        space = PlanSpace(num_blocks=6, kinds=settings.space.translators, max_removed=settings.space.max_removed)
        return _prepare.capture_needs(settings, space, 6)

    pairs, branch, states = needs(max_removed=2, translators=("identity", "linear"))
    assert pairs == space_pairs(6, 2) and states == frozenset() and branch == frozenset()
    pairs, branch, states = needs(max_removed=2, translators=("linear",), plans=("0->5:linear", "1->2:folded"))
    assert (1, 6) in pairs and states == frozenset() and branch == {(1, 1), (1, 2), (1, 3)}
    _, branch, _ = needs(max_removed=2, translators=("linear", "folded"))
    assert branch == space_branch_pairs(6, 2) and (0, 3) in branch and (0, 4) not in branch
    _, _, states = needs(max_removed=2, translators=("linear", "mlp"))
    assert states == frozenset(range(7))
    _, _, states = needs(max_removed=2, translators=("linear",), refit="sequential")
    assert states == frozenset(range(7))
    settings = SearchSettings.from_flat(model="demo-vit", dataset="digits")
    assert _prepare.capture_needs(settings, None, 6) == (None, None, frozenset())  # analyze: every pair, no shard


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_stats_memory_must_be_positive(value):
    with pytest.raises(SettingsError, match="stats_memory_gb"):
        SearchSettings.from_flat(model="demo-vit", dataset="digits", stats_memory_gb=value)
