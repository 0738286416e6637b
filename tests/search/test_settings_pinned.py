"""`run_key()`, `identity()` and `settings.json` pinned to the values the flat `SearchSettings` gave before the
settings were split into sections (issue 21): a run directory made before must still be found and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toast.search import SearchSettings

DEMO_JSON = {
    "model": "demo-vit", "dataset": "digits", "out": "/tmp/golden/before/1-demo", "split_train": None,
    "split_test": None, "input_column": None, "label_column": None, "translators": ["identity", "linear"],
    "ranks": ["d/16", "d/8", "d/4"], "max_removed": None, "min_kept": None, "objectives": ["accuracy", "gflops"],
    "probe": "ridge", "head": "probe", "class_names": None, "prompts": "full", "calib_dataset": None,
    "calib_split": None, "probe_samples": 5000, "eval_samples": 2000, "calib_samples": 500, "seq_len": 256, "stats_memory_gb": None,
    "sampler": "tpe-local",
    "seed": 0, "trials": 40, "timeout": None, "budget_gflops": None, "budget_params": None, "budget_fraction": 0.85,
    "budget_latency_ms": None, "latency_batch_size": 1, "latency_seq_len": 128, "latency_mode": "prefill",
    "latency_runtime": "eager", "latency_table": None,
    "lm_eval_tasks": [], "lm_eval_include": None, "lm_eval_limit": 100, "plans": [], "device": "auto",
    "device_map": None, "dtype": "float32", "activation_dtype": "float16", "refit": "independent",
    "cache_dir": "/tmp/golden/before/cache/1-demo", "batch_size": 32, "runner": "local", "ray_address": None,
    "cpus_per_trial": None, "gpus_per_trial": None, "max_concurrent": None, "max_failures": None, "progress": False,
    "seeds_per_study": 10, "fidelity_fraction": 0.25, "fidelity_z": 2.0, "prefix_cache_gb": None, "extra": {},
}  # fmt: skip

CASES = [
    ({"model": "demo-vit", "dataset": "digits"}, "787ef5c1"),
    (
        {
            "model": "demo-vit",
            "dataset": "digits",
            "budget_fraction": 0.85,
            "trials": 40,
            "objectives": ("accuracy", "gflops", "params"),
            "ranks": (48, "d/8"),
            "translators": ("identity", "lowrank"),
            "refit": "sequential",
            "fidelity_fraction": 0.0,
            "latency_batch_size": 4,
        },
        "8c2ae5d5",
    ),
    (
        {
            "model": "facebook/dinov2-base",
            "dataset": "cifar100",
            "split_train": "train[:50%]",
            "head": "zero-shot",
            "prompts": "short",
            "calib_dataset": "mnist",
            "activation_dtype": "bfloat16",
            "dtype": "bfloat16",
            "seed": 7,
            "max_removed": 3,
            "min_kept": 2,
            "runner": "ray",
            "cpus_per_trial": 2.0,
        },
        "781b0e59",
    ),
]


@pytest.mark.parametrize(("flat", "key"), CASES)
def test_run_key_pinned(flat, key):
    settings = SearchSettings.from_flat(**flat)
    assert settings.run_key() == key
    assert settings.out == Path("runs") / f"{Path(flat['model']).name}-{flat['dataset']}-{key}"


def test_demo_settings_json_pinned():
    """The demo's settings.json, key for key and in the same order, and read back to the same settings."""
    settings = SearchSettings.from_flat(
        model="demo-vit",
        dataset="digits",
        budget_fraction=0.85,
        trials=40,
        out="/tmp/golden/before/1-demo",
        cache_dir="/tmp/golden/before/cache/1-demo",
        progress=False,
    )
    doc = settings.to_json()
    assert list(doc) == list(DEMO_JSON)
    assert json.dumps(doc, indent=2) == json.dumps(DEMO_JSON, indent=2)
    assert SearchSettings.from_json(doc) == settings
    assert SearchSettings.from_json(doc).run_key() == settings.run_key() == "787ef5c1"


def test_the_package_reads_sections_not_flat_names(monkeypatch, tmp_path):
    """Each module reads the section it needs (`settings.scoring.head`): the flat fallback (`settings.head`) is for
    users and tests only. A whole run, its export and its report, with every flat read from the package recorded."""
    import sys

    import toast.capture
    import toast.data
    import toast.models
    import toast.runners
    import toast.search
    from toast.search import SearchSettings, run_search

    packages = [Path(m.__file__).resolve().parent for m in (toast.search, toast.models, toast.data, toast.capture)]
    packages.append(Path(toast.runners.__file__).resolve().parent)
    flat = SearchSettings.__getattr__
    reads: list[str] = []

    def recording(self, name):
        caller = sys._getframe(1)
        if any(Path(caller.f_code.co_filename).resolve().is_relative_to(p) for p in packages):
            reads.append(f"{caller.f_code.co_filename}:{caller.f_lineno}: settings.{name}")
        return flat(self, name)

    monkeypatch.setattr(SearchSettings, "__getattr__", recording)
    settings = SearchSettings.from_flat(
        model="demo-vit",
        dataset="digits",
        trials=6,
        budget_fraction=0.85,
        calib_samples=64,
        probe_samples=100,
        eval_samples=60,
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        device="cpu",
        progress=False,
    )
    # the recorder sees a flat read from a package's file (so the check below cannot pass vacuously)
    exec(compile("settings.head", str(packages[0] / "_any.py"), "exec"), {"settings": settings})
    assert len(reads) == 1 and reads.pop().endswith("settings.head")
    result = run_search(settings)
    assert result.chosen is not None
    assert not reads, "\n".join(reads)
