"""Bad input for a causal LM (issue 23): each case one `toast-search` command line that ends in exit status 2 with
one line on stderr naming what is wrong and what to do, no traceback, and no run directory.

Run in this process through `main` (the CLI's own code path), on a tiny Llama and copies of it with a defect, a
tiny BERT encoder, and small local text corpora. A tokenizer without a pad token is no defect: packed sequences
are full, nothing is ever padded (`--dry-run` goes through).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_main, save_tiny

pytestmark = pytest.mark.slow

LM_RUN = ["--seq-len", "32", "--calib-samples", "8", "--eval-samples", "8", "--trials", "2", "--no-progress"]


def _without(source: Path, target: Path, *, keys: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> Path:
    """A copy of the model folder `source` whose tokenizer_config.json lacks `keys`, or without the `files`."""
    shutil.copytree(source, target)
    config = json.loads((target / "tokenizer_config.json").read_text())
    (target / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in keys}))
    for name in files:
        for path in target.glob(name):
            path.unlink()
    return target


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    import datasets

    root = tmp_path_factory.mktemp("lm-bad")
    llama = save_tiny("llama", root / "llama")
    short = root / "short.txt"  # 12 paragraphs: 11 to train, 1 held out, a few hundred tokens in all
    short.write_text("\n\n".join(f"Paragraph {i} is short." for i in range(12)))
    no_text = root / "no-text"
    split = datasets.Dataset.from_dict({"value": [1, 2, 3], "label": [0, 1, 0]})
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(no_text))
    return {
        "root": root,
        "cache": root / "cache",
        "llama": llama,
        "bert": save_tiny("bert", root / "bert"),
        "no-eos": _without(llama, root / "no-eos", keys=("eos_token",)),
        "no-pad": _without(llama, root / "no-pad", keys=("pad_token",)),
        "no-tokenizer": _without(llama, root / "no-tokenizer", files=("tokenizer*",)),
        "short": short,
        "no-text": no_text,
    }


#: case -> (model, dataset, extra flags, a phrase the error line must hold)
CASES = {
    "encoder with an LM objective": (
        "bert",
        "python-docs",
        ["--objectives", "perplexity,gflops"],
        "'perplexity' scores a causal language model's next-token predictions",
    ),
    "LM with accuracy": ("llama", None, ["--objectives", "accuracy,gflops"], "needs labelled samples"),
    "LM with --head original": ("llama", None, ["--head", "original"], "--head original: model"),
    "LM with --head zero-shot": ("llama", None, ["--head", "zero-shot"], "leave --head out"),
    "LM with --probe adam": ("llama", None, ["--probe", "adam"], "leave --probe out"),
    "corpus shorter than --seq-len": ("llama", "short", ["--seq-len", "512"], "fewer than one sequence of --seq-len"),
    "test split shorter than --seq-len": ("llama", None, ["--seq-len", "100000"], "split 'test'"),
    "--seq-len 1": ("llama", None, ["--seq-len", "1"], "--seq-len must be at least 2"),
    "tokenizer without EOS": ("no-eos", None, [], "no end-of-sequence token (eos_token)"),
    "no tokenizer": ("no-tokenizer", None, [], "has no saved tokenizer"),
    "LM with an image dataset": ("llama", "digits", [], "is a causal language model: give it text"),
    "LM with a dataset without text": ("llama", "no-text", [], "no text column"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_lm_bad_input_is_one_line_exit_2(world, name):
    model, dataset, extra, phrase = CASES[name]
    out = world["root"] / "runs" / name.replace(" ", "-")
    args = ["--model", str(world[model]), "--cache-dir", str(world["cache"]), "--out", str(out), *LM_RUN]
    if dataset is not None:
        args += ["--dataset", str(world.get(dataset, dataset))]
    code, stdout, stderr = run_main([*args, *extra])
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("toast-search: error: "), stderr
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout
    assert not out.exists()


def test_a_tokenizer_without_a_pad_token_is_fine(world, tmp_path):
    """Packed sequences are full: no padding, no pad token needed."""
    out = tmp_path / "run"
    args = ["--model", str(world["no-pad"]), "--cache-dir", str(world["cache"]), "--out", str(out), *LM_RUN]
    code, stdout, stderr = run_main([*args, "--dry-run"])
    assert code == 0, stderr
    assert "would run" in stdout and not out.exists()
