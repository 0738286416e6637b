"""Bad input, table-driven: each case is one `toast-search` command line that must end in exit status 2,
one line on stderr that says what is wrong and what to do, no traceback, and no change to the run and
cache directories that existed before (nor a run directory that did not).

Cases that fail in option parsing run in this process through `main` (the same code path); the others
run as their own `python -m toast.search.cli` (the real exit status and stderr, library warnings
included), a few at a time.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_RUN, run_main

pytestmark = pytest.mark.slow

OFFLINE = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}
PROCESSES_AT_ONCE = 3  # each imports torch, transformers and datasets (~3 s of CPU); the machine has 2 cores


@dataclass(frozen=True)
class Case:
    """One bad command line: its arguments, a phrase the error line must hold, and where it runs."""

    args: list[str]
    phrase: str
    in_process: bool = False
    seconds: float | None = None  # must fail within this many seconds (wall clock)
    untouched: tuple[Path, ...] = field(default=())  # paths that must not change (beside the run and cache directories)


def snapshot(path: Path) -> dict[str, str] | None:
    """sha256 of every file under `path` (or of `path` itself); None when it does not exist."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def run_process(args: list[str]) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "toast.search.cli", *args], capture_output=True, text=True, env=OFFLINE, timeout=300
    )
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - start


# ---------------------------------------------------------------- fixtures: what the cases need on disk


@pytest.fixture(scope="module")
def text_dataset_dir(tmp_path_factory) -> Path:
    import datasets

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 2, n).tolist()
        texts = [f"w{5 + y} w{7 + i % 9} w{20 + y}" for i, y in enumerate(labels)]
        feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
        return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=feats)

    path = tmp_path_factory.mktemp("text") / "sentences"
    datasets.DatasetDict({"train": make(30), "test": make(20)}).save_to_disk(str(path))
    return path


def _broken_copies(vit: Path, root: Path) -> dict[str, Path]:
    """Copies of a tiny model folder whose `model.safetensors` is truncated, has a garbled header, or holds
    flipped bytes (0xFF: NaN in float32) in the first block's attention weights."""
    weights = (vit / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8 : 8 + header_len])
    name = next(k for k in sorted(header) if "layer.0." in k and k.endswith("query.weight"))
    begin, end = (8 + header_len + o for o in header[name]["data_offsets"])
    variants = {
        "truncated": weights[: len(weights) // 2],
        "garbled": weights[:8] + b"\x13" * 64 + weights[72:],
        "flipped": weights[:begin] + b"\xff" * (end - begin) + weights[end:],
    }
    out = {}
    for what, data in variants.items():
        folder = root / f"vit-{what}"
        shutil.copytree(vit, folder)
        (folder / "model.safetensors").write_bytes(data)
        out[what] = folder
    return out


@pytest.fixture(scope="module")
def world(tiny_dirs, image_dataset_dir, text_dataset_dir, tmp_path_factory):
    """A finished run (to resume wrongly), a warm cache, and every broken thing the cases point at."""
    import transformers

    root = tmp_path_factory.mktemp("bad")
    cache = root / "cache"
    good_run = root / "good-run"
    base = [
        "--model",
        str(tiny_dirs["vit"]),
        "--dataset",
        str(image_dataset_dir),
        "--cache-dir",
        str(cache),
        *SMALL_RUN,
    ]
    code, _, err = run_main([*base, "--out", str(good_run), "--trials", "3"])
    assert code == 0, err
    a_file = root / "a-file"
    a_file.write_text("not a directory\n")
    corrupt_study = root / "corrupt-study"
    corrupt_study.mkdir()
    (corrupt_study / "study.db").write_bytes(b"this is not a database" * 100)
    other_db = root / "other-db"
    other_db.mkdir()
    with sqlite3.connect(other_db / "study.db") as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    corrupt_journal = root / "corrupt-journal"
    corrupt_journal.mkdir()
    (corrupt_journal / "study.journal").write_bytes(b"this is not a journal\n" * 100)
    other_journal = root / "other-journal"
    other_journal.mkdir()
    (other_journal / "study.journal").write_text('{"note": "JSON lines, but not an Optuna journal"}\n')
    other_family = root / "bloom"  # an architecture no family registers
    transformers.BloomConfig(n_layer=1, hidden_size=8, n_head=2).save_pretrained(other_family)
    bad_settings = root / "bad-settings"
    bad_settings.mkdir()
    (bad_settings / "settings.json").write_text("{ not json")
    return {
        "root": root,
        "cache": cache,
        "good_run": good_run,
        "base": base,
        "a_file": a_file,
        "corrupt_study": corrupt_study,
        "other_db": other_db,
        "corrupt_journal": corrupt_journal,
        "other_journal": other_journal,
        "other_family": other_family,
        "bad_settings": bad_settings,
        "broken": _broken_copies(tiny_dirs["vit"], root),
        "vit": tiny_dirs["vit"],
        "bert": tiny_dirs["bert"],
        "deit": tiny_dirs["deit"],
        "vit_cls": tiny_dirs["vit-cls"],
        "images": image_dataset_dir,
        "texts": text_dataset_dir,
        "defects": _defective_datasets(root / "defects", tiny_dirs["vit"]),
    }


def _defective_datasets(root: Path, vit: Path) -> dict[str, Path]:
    """One dataset (or model folder) per defect a run must refuse before its capture."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    names = ["r", "g", "b"]

    def images(n: int) -> list:
        return [Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)) for _ in range(n)]

    def saved(name: str, train: dict, test: dict, features: dict) -> Path:
        feats = datasets.Features(features)
        path = root / name
        datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict(train, features=feats),
                "test": datasets.Dataset.from_dict(test, features=feats),
            }
        ).save_to_disk(str(path))
        return path

    image_label = {"img": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    out = {
        "empty test": saved(
            "empty-test", {"img": images(20), "label": [0, 1] * 10}, {"img": [], "label": []}, image_label
        ),
        "empty train": saved(
            "empty-train", {"img": [], "label": []}, {"img": images(8), "label": [0, 1] * 4}, image_label
        ),
        "one class": saved(
            "one-class", {"img": images(20), "label": [1] * 20}, {"img": images(8), "label": [1] * 8}, image_label
        ),
        "string labels": saved(
            "string-labels",
            {"img": images(20), "label": ["cat", "dog"] * 10},
            {"img": images(8), "label": ["cat", "dog"] * 4},
            {"img": datasets.Image(), "label": datasets.Value("string")},
        ),
        "nan labels": saved(
            "nan-labels",
            {"img": images(20), "label": [0.0, 1.0] * 9 + [float("nan"), 1.0]},
            {"img": images(8), "label": [0.0, 1.0] * 4},
            {"img": datasets.Image(), "label": datasets.Value("float64")},
        ),
        "no labels": saved("no-labels", {"img": images(20)}, {"img": images(8)}, {"img": datasets.Image()}),
        "none texts": saved(
            "none-texts",
            {"text": ["w5 w7", None] + ["w6 w8"] * 18, "label": [0, 1] * 10},
            {"text": ["w5 w7"] * 8, "label": [0, 1] * 4},
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])},
        ),
    }
    # undecodable image bytes, in a parquet folder and in an image folder
    parquet = root / "corrupt-parquet"
    parquet.mkdir()
    for split, n in (("train", 20), ("test", 8)):
        rows = []
        for i, im in enumerate(images(n)):
            import io as _io

            buffer = _io.BytesIO()
            im.save(buffer, format="PNG")
            rows.append({"bytes": b"\x89PNG not an image" if i == 3 else buffer.getvalue(), "path": None})
        ds = datasets.Dataset.from_dict(
            {"img": rows, "label": [i % 2 for i in range(n)]},
            features=datasets.Features(image_label),
        )
        ds.to_parquet(str(parquet / f"{split}.parquet"))
    out["corrupt parquet image"] = parquet
    folder = root / "corrupt-folder"
    for split, n in (("train", 12), ("test", 6)):
        for i, im in enumerate(images(n)):
            target = folder / split / names[i % 2] / f"{i}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            if i == 1:
                target.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
            else:
                im.save(target)
    out["corrupt folder image"] = folder
    # a model whose saved processor makes images of another size than its config takes
    mismatched = root / "vit-processor-mismatch"
    shutil.copytree(vit, mismatched)
    config = json.loads((mismatched / "preprocessor_config.json").read_text())
    config["size"] = {"height": 48, "width": 48}
    (mismatched / "preprocessor_config.json").write_text(json.dumps(config))
    out["processor mismatch"] = mismatched
    return out


def cases(w: dict) -> dict[str, Case]:
    """name -> Case. `new(name)` is a run directory that does not exist (and must not after the error)."""
    root, cache = w["root"], w["cache"]

    def new(name: str) -> str:
        return str(root / "new" / name)

    def run(
        out: str | Path, *extra: str, model: Path | str | None = None, dataset: Path | str | None = None, **kw
    ) -> list[str]:
        args = [
            "--model",
            str(model or w["vit"]),
            "--dataset",
            str(dataset or w["images"]),
            "--cache-dir",
            str(kw.get("cache_dir", cache)),
            "--out",
            str(out),
            *SMALL_RUN,
            "--trials",
            "2",
            *extra,
        ]
        return args

    good = w["good_run"]
    unwritable = Path("/sys/toast-search-cache")
    return {
        # models
        "unknown model id": Case(run(new("a"), model="no-such-org/no-such-model"), "cannot load model"),
        "missing model directory": Case(run(new("b"), model="./no/such/model-dir"), "does not exist"),
        "unsupported model family": Case(run(new("c"), model=w["other_family"]), "unsupported architecture 'bloom'"),
        "truncated weights": Case(run(new("d"), model=w["broken"]["truncated"]), "truncated or corrupt"),
        "garbled weights header": Case(run(new("e"), model=w["broken"]["garbled"]), "truncated or corrupt"),
        "weights with flipped bytes": Case(run(new("f"), model=w["broken"]["flipped"]), "weights may be corrupt"),
        "image model, text dataset": Case(run(new("g"), dataset=w["texts"]), "text encoder"),
        "text model, image dataset": Case(run(new("h"), model=w["bert"]), "holds text"),
        "original head without a head": Case(run(new("i"), "--head", "original"), "no classification head"),
        # datasets
        "missing dataset path": Case(run(new("j"), dataset=root / "no-such-data"), "not found"),
        "unknown hub dataset offline": Case(run(new("k"), dataset="no-such-org/no-such-dataset"), "local copy"),
        "unknown label column": Case(run(new("l"), "--label-column", "nope"), "--label-column"),
        "unknown split": Case(run(new("m"), "--split-train", "nope"), "--split-train"),
        # budgets, objectives, plans, options
        "budget below the cheapest plan": Case(run(good, "--budget-gflops", "1e-7"), "cheapest plan"),
        "two budgets in GFLOPs": Case(
            run(new("n"), "--budget-gflops", "1", "--budget-fraction", "0.5"), "not both", in_process=True
        ),
        "negative budget": Case(run(new("o"), "--budget-params", "-3"), "--budget-params", in_process=True),
        "one objective": Case(run(new("p"), "--objectives", "accuracy"), "objective", in_process=True),
        "unknown objective": Case(run(new("q"), "--objectives", "accuracy,bogus"), "bogus", in_process=True),
        "no trials": Case(run(new("r"), "--trials", "0"), "--trials", in_process=True),
        "one calibration sample": Case(run(new("s"), "--calib-samples", "1"), "--calib-samples", in_process=True),
        "unknown sampler": Case(run(new("t"), "--sampler", "annealing"), "--sampler", in_process=True),
        "rank above the width": Case(run(new("ag"), "--translators", "identity,lowrank", "--ranks", "4,64"), "--ranks"),
        "unknown refit": Case(run(new("ah"), "--refit", "greedy"), "--refit", in_process=True),
        "latency batch of zero": Case(
            run(new("ai"), "--latency-batch-size", "0"), "--latency-batch-size", in_process=True
        ),
        "negative latency seq len": Case(
            run(new("aj"), "--latency-seq-len", "-1"), "--latency-seq-len", in_process=True
        ),
        "negative latency budget": Case(
            run(new("ak"), "--budget-latency-ms", "-3"), "--budget-latency-ms", in_process=True
        ),
        "unknown prompt set": Case(run(new("al"), "--prompts", "long"), "--prompts", in_process=True),
        "subset share above one": Case(
            run(new("ba"), "--fidelity-fraction", "2"), "--fidelity-fraction", in_process=True
        ),
        "negative fidelity z": Case(run(new("bb"), "--fidelity-z", "-1"), "--fidelity-z", in_process=True),
        "negative prefix cache": Case(run(new("bc"), "--prefix-cache-gb", "-1"), "--prefix-cache-gb", in_process=True),
        "not a number": Case(run(new("u"), "--trials", "many"), "--trials", in_process=True),
        "backward span": Case(run(new("v"), "--plan", "3→2:linear"), "3→2", in_process=True),
        "unknown translator": Case(run(new("w"), "--plan", "0→1:bogus"), "bogus", in_process=True),
        "overlapping spans": Case(run(new("x"), "--plan", "0→2:linear,1→3:identity"), "overlap", in_process=True),
        "unreadable span": Case(run(new("y"), "--plan", "zero to two"), "cannot read span", in_process=True),
        "span past the last block": Case(run(new("z"), "--plan", "-1->9:identity"), "past the last block"),
        "ray option without ray": Case(run(new("aa"), "--max-concurrent", "2"), "--runner ray", in_process=True),
        "cuda without a GPU": Case(run(new("ab"), "--device", "cuda"), "--device", in_process=False),
        # paths and stored state
        "--out is a file": Case(run(w["a_file"]), "is a file", in_process=True, untouched=(w["a_file"],)),
        "--out under a file": Case(run(w["a_file"] / "run"), "is a file", in_process=True, untouched=(w["a_file"],)),
        "--cache-dir is a file": Case(
            run(new("ac"), cache_dir=w["a_file"]), "--cache-dir", in_process=True, untouched=(w["a_file"],)
        ),
        "--cache-dir under a file": Case(
            run(new("ad"), cache_dir=w["a_file"] / "cache"), "--cache-dir", in_process=True, untouched=(w["a_file"],)
        ),
        "--cache-dir not writable": Case(run(new("ae"), cache_dir=unwritable), "not writable", in_process=True),
        "corrupt study.db": Case(
            run(w["corrupt_study"]), "not an Optuna study", in_process=True, untouched=(w["corrupt_study"],)
        ),
        "study.db of something else": Case(
            run(w["other_db"]), "not an Optuna study", in_process=True, untouched=(w["other_db"],)
        ),
        "corrupt study.journal": Case(
            run(w["corrupt_journal"]), "not an Optuna study journal", in_process=True, untouched=(w["corrupt_journal"],)
        ),
        "study.journal of something else": Case(
            run(w["other_journal"]), "not an Optuna study journal", in_process=True, untouched=(w["other_journal"],)
        ),
        "unreadable settings.json": Case(
            run(w["bad_settings"]), "unreadable", in_process=True, untouched=(w["bad_settings"],)
        ),
        "run directory of another model": Case(run(good, model=w["deit"]), "another run", in_process=True),
        "resume with another seed": Case(run(good, "--seed", "1"), "seed", in_process=True),
        "resume with another activation dtype": Case(
            run(good, "--activation-dtype", "float32"), "activation_dtype", in_process=True
        ),
        "resume with other calibration samples": Case(
            run(good, "--calib-samples", "20"), "calib_samples", in_process=True
        ),
        # every numeric option's domain, NaN and infinities included
        "NaN budget": Case(
            run(new("na"), "--budget-gflops", "nan"), "--budget-gflops must be a finite", in_process=True
        ),
        "infinite latency budget": Case(
            run(new("nb"), "--budget-latency-ms", "inf"), "--budget-latency-ms must be a finite", in_process=True
        ),
        "NaN fidelity z": Case(run(new("nc"), "--fidelity-z", "nan"), "--fidelity-z must be a finite", in_process=True),
        "NaN prefix cache": Case(
            run(new("nd"), "--prefix-cache-gb", "nan"), "--prefix-cache-gb must be a finite", in_process=True
        ),
        "NaN stats memory": Case(
            run(new("sm1"), "--stats-memory-gb", "nan"), "--stats-memory-gb must be a finite", in_process=True
        ),
        "zero stats memory": Case(run(new("sm2"), "--stats-memory-gb", "0"), "--stats-memory-gb", in_process=True),
        "negative stats memory": Case(
            run(new("sm3"), "--stats-memory-gb", "-2"), "--stats-memory-gb must be > 0", in_process=True
        ),
        "huge latency batch": Case(
            run(new("ne"), "--latency-batch-size", "100000"), "--latency-batch-size must be at most", in_process=True
        ),
        "seed past numpy": Case(run(new("nf"), "--seed", str(2**32)), "--seed must be between", in_process=True),
        "negative seed": Case(run(new("ng"), "--seed", "-1"), "--seed must be between", in_process=True),
        # messages name the flag, and blame the right thing
        "no translator kinds": Case(run(new("nh"), "--translators", ""), "--translators must name", in_process=True),
        "max removed above the blocks": Case(run(new("ni"), "--max-removed", "99"), "--max-removed must be between"),
        "model is a file": Case(run(new("nj"), model=w["a_file"]), "is a file", untouched=(w["a_file"],)),
        "prompts without zero-shot": Case(
            run(new("nk"), "--prompts", "short"), "--prompts needs --head zero-shot", in_process=True
        ),
        # the export entry point
        "export: --out over the run's study": Case(
            ["export", str(good), "--format", "onnx", "--out", str(Path(good) / "study.journal")],
            "not an .onnx file",
            in_process=True,
        ),
        "export: an opset no exporter writes": Case(
            ["export", str(good), "--format", "onnx", "--opset", "999", "--out", new("ea") + ".onnx"],
            "give --opset between 18 and",
            in_process=True,
        ),
        "export: a plan outside the run's space": Case(
            ["export", str(good), "--plan", "0→2:mlp", "--out", new("eb")], "mlp", in_process=True
        ),
        "export: a plan into a non-empty folder": Case(
            ["export", str(good), "--plan", "0→1:identity", "--out", str(good)], "not empty", in_process=True
        ),
        "export: NaN is not a plan": Case(["export", str(good), "--plan", "nan", "--out", new("ec")], "nan"),
        # the analyze entry point
        "analyze: model is a file": Case(
            ["analyze", "--model", str(w["a_file"]), "--dataset", str(w["images"]), "--out", new("nl")], "is a file"
        ),
        "analyze: empty split": Case(
            ["analyze", "--model", str(w["vit"]), "--dataset", str(w["defects"]["empty test"]), "--split", "test"]
            + ["--cache-dir", str(cache), "--out", new("nm")],
            "empty",
        ),
        "analyze: over a run's similarity.png": Case(
            ["analyze", "--model", str(w["vit"]), "--dataset", str(w["images"]), "--cache-dir", str(cache)]
            + ["--out", str(w["good_run"])],
            "run directory",
            in_process=True,
        ),
        # dataset defects: found before any capture (a fresh cache each, so no capture can have run)
        "empty test split": Case(run(new("da"), dataset=w["defects"]["empty test"]), "empty"),
        "empty calibration split": Case(run(new("db"), "--calib-dataset", str(w["defects"]["empty train"])), "empty"),
        "a single class": Case(run(new("dc"), dataset=w["defects"]["one class"]), "single class"),
        "string labels": Case(run(new("dd"), dataset=w["defects"]["string labels"]), "are strings"),
        "NaN labels": Case(run(new("de"), dataset=w["defects"]["nan labels"]), "not integer class labels"),
        "no label column": Case(run(new("df"), dataset=w["defects"]["no labels"]), "no label column"),
        "input column of labels": Case(run(new("dg"), "--input-column", "label"), "not images or text"),
        "corrupt image in parquet": Case(
            run(new("dh"), dataset=w["defects"]["corrupt parquet image"]), "cannot be decoded"
        ),
        "corrupt image in a folder": Case(
            run(new("di"), dataset=w["defects"]["corrupt folder image"]), "cannot be decoded"
        ),
        "None texts": Case(run(new("dj"), model=w["bert"], dataset=w["defects"]["none texts"]), "without text"),
        "processor the model cannot take": Case(
            run(new("dk"), model=w["defects"]["processor mismatch"]), "cannot take what its processor"
        ),
        # a cluster that is not there: fails fast, before the run directory exists
        "unreachable Ray cluster": Case(
            run(new("af"), "--runner", "ray", "--ray-address", "127.0.0.1:1"), "127.0.0.1:1", seconds=30
        ),
    }


def _placeholders() -> collections.defaultdict:
    """A stand-in for `world` (any path will do) to list the case names at collection time."""
    paths = collections.defaultdict(lambda: Path("/"))
    return collections.defaultdict(lambda: Path("/"), broken=paths, defects=paths)


CASE_NAMES = list(cases(_placeholders()))


@pytest.fixture(scope="module")
def outcomes(world):
    """Every case's (exit code, stdout, stderr, seconds) and the paths' snapshots before and after."""
    table = cases(world)
    watched = {world["good_run"], world["cache"]} | {p for c in table.values() for p in c.untouched}
    for c in table.values():
        out = Path(c.args[c.args.index("--out") + 1])
        watched.add(out)
    before = {p: snapshot(p) for p in watched}
    results = {}
    for name, c in table.items():
        if c.in_process:
            start = time.perf_counter()
            results[name] = (*run_main(c.args), time.perf_counter() - start)
    with ThreadPoolExecutor(PROCESSES_AT_ONCE) as pool:
        futures = {name: pool.submit(run_process, c.args) for name, c in table.items() if not c.in_process}
        results.update({name: f.result() for name, f in futures.items()})
    after = {p: snapshot(p) for p in watched}
    return {"cases": table, "results": results, "before": before, "after": after}


def test_there_are_at_least_30_cases():
    assert len(CASE_NAMES) >= 30


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(outcomes, name):
    case = outcomes["cases"][name]
    if name == "--cache-dir not writable" and _writable(Path("/sys")):
        pytest.skip("/sys is writable on this machine")
    code, stdout, stderr, seconds = outcomes["results"][name]
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("toast-search: error:"), lines[0]
    assert case.phrase in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout
    if case.seconds is not None:
        assert seconds < case.seconds, f"took {seconds:.1f} s"
    out = Path(case.args[case.args.index("--out") + 1])
    before, after = outcomes["before"], outcomes["after"]
    assert after[out] == before[out], f"{out} changed"
    for path in case.untouched:
        assert after[path] == before[path], f"{path} changed"


def test_nothing_already_computed_is_lost(outcomes, world):
    """The finished run and every cache entry are byte-for-byte what they were before all the cases ran."""
    before, after = outcomes["before"], outcomes["after"]
    assert after[world["good_run"]] == before[world["good_run"]]
    assert all(after[world["cache"]].get(path) == digest for path, digest in before[world["cache"]].items())


def test_budget_error_names_the_cheapest_plan(outcomes, world):
    """The budget error's cheapest plan is the all-identity plan's cost: above the budget asked, at or
    below every plan the finished run found."""
    line = outcomes["results"]["budget below the cheapest plan"][2].strip()
    m = re.search(r"cheapest plan in this space \(([0-9.e+-]+) GFLOPs", line)
    assert m, line
    cheapest = float(m.group(1))
    doc = json.loads((world["good_run"] / "front.json").read_text())
    assert 1e-7 < cheapest < min(r["gflops"] for r in doc["front"]) * (1 + 1e-3)


def _writable(directory: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def test_library_errors_name_settings_fields_and_the_cli_shows_their_flags(tmp_path):
    """`SearchSettings` speaks of its fields (`calib_samples`); the command line of its flags (--calib-samples)."""
    from toast.errors import SettingsError
    from toast.search import SearchSettings
    from toast.search.cli import as_flags

    with pytest.raises(SettingsError) as info:
        SearchSettings.from_flat(
            model="m", dataset="d", out=tmp_path, calib_samples=1, budget_gflops=1.0, budget_fraction=0.5
        )
    message = str(info.value)
    assert "`calib_samples`" in message and "--" not in message
    assert as_flags(message) == (
        "--calib-samples must be at least 2, got 1; give --budget-gflops or --budget-fraction, not both"
    )
    assert as_flags("run `ray start --head` first") == "run `ray start --head` first"  # a command, not a field


def test_every_settings_field_has_the_flag_errors_name():
    from toast.search import SearchSettings
    from toast.search.cli import build_search_parser, flag_of

    text = build_search_parser().format_help()
    internal = {"seeds_per_study", "extra"}  # not options of the command line
    keys = SearchSettings.from_flat(model="m", dataset="d").flat()  # every setting, by its settings.json key
    missing = [k for k in keys if k not in internal and flag_of(k) not in text]
    assert not missing, missing
