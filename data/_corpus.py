"""Text for language models: corpora of documents, tokenized and packed into fixed-length token sequences.

A causal LM is calibrated and scored on running text, not on labelled samples: the documents of a split are
tokenized, joined end to end with the tokenizer's end-of-sequence token after each document, and cut into
sequences of exactly `seq_len` tokens (the rest, shorter than one sequence, dropped), as the depth-pruning papers
(ShortGPT, SLEB, ReplaceMe, EvoPress) draw their calibration and perplexity sequences from wikitext-2 or C4. Every
sequence is full, so no padding ever enters the model and a forward pass numbers positions as `generate()` does.
The calibration, probe and evaluation draws are then seeded draws of these sequences (`sample_ids`).

Where the documents come from (`load_split`):

- `python-docs` (`PYTHON_DOCS`), the offline default of an LM: the topics of the Python language reference that
  ship with every Python (`pydoc_data.topics`, the text `help("if")` prints), one document per topic, every tenth
  topic (in name order) held out as the `test` split;
- a local `.txt` / `.md` file (its blank-line separated paragraphs are the documents) or a folder of them (one
  document per file), split the same way, every tenth document to `test`;
- a `datasets` folder, parquet or Hub id with a text column (wikitext-2, C4 or FineWeb samples for users with
  the Hub), each row a document, with the dataset's own splits.

The packed sequences are kept in the cache (`tokens/<key>/tokens.npy`, written atomically and verified on read),
keyed by the documents' fingerprint, the tokenizer and `seq_len`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._artifacts import read_or_discard, spec_key, write_artifact
from ..errors import DatasetError
from ._split import IMAGE_SUFFIXES, LabeledSplit

__all__ = [
    "PYTHON_DOCS",
    "TEXT_SUFFIXES",
    "TOKENS",
    "check_tokenizer",
    "corpus_split",
    "pack_split",
    "packed_tokens",
    "python_docs_documents",
    "split_documents",
]

PYTHON_DOCS = "python-docs"
#: The modality of packed token sequences: what a causal LM family takes (`CausalLMFamily.modality`).
TOKENS = "causal-lm"
TEXT_SUFFIXES = (".txt", ".md", ".rst")
#: the files of the other local datasets (`load_split`'s parquet and image folders): a folder of these is not text
DATA_SUFFIXES = (".parquet", ".arrow", *IMAGE_SUFFIXES)
HELD_OUT_EVERY = 10  # every tenth document (in order) is the `test` split of a corpus with no splits of its own
FORMAT_VERSION = 1
FILE = "tokens.npy"


def python_docs_documents() -> dict[str, str]:
    """The Python language reference's topics as `help()` prints them, by topic name (`pydoc_data.topics`)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a Python built without its docs
        raise DatasetError(
            f"dataset {PYTHON_DOCS!r}: this Python has no pydoc_data.topics (built without its docs); pass `dataset`, "
            "a local text file or folder"
        ) from None
    return {name: str(topics[name]) for name in sorted(topics)}


def split_documents(documents: Sequence[str], split: str, *, name: str) -> list[str]:
    """The documents of `split` (`train` or `test`) of a corpus that has no splits of its own: every tenth document
    (positions 9, 19, …) is held out as `test`, the others are `train`."""
    if split not in ("train", "test"):
        raise DatasetError(
            f"dataset {name!r} has the splits train and test (every {HELD_OUT_EVERY}th document held out), not "
            f"{split!r}: pass `split_train` / `split_test` as train / test"
        )
    held = [i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 for i in range(len(documents))]
    return [d for d, h in zip(documents, held) if h == (split == "test")]


def _text_documents(path: Path) -> list[str]:
    """A text file's blank-line separated paragraphs, or a folder's text files (sorted, each one document)."""
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    return [t for t in (p.read_text(encoding="utf-8", errors="replace").strip() for p in files) if t]


def is_text_source(path: Path) -> bool:
    """A local text file, or a folder whose first data file (in sorted walk order) is a text file and that holds no
    `save_to_disk` dataset (what `corpus_split` reads). The walk stops at the first data file: cheap on a huge image
    folder."""
    if path.is_file():
        return path.suffix.lower() in TEXT_SUFFIXES
    if not path.is_dir() or (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return False
    data = (*TEXT_SUFFIXES, *DATA_SUFFIXES)
    for _, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            suffix = os.path.splitext(name)[1].lower()
            if suffix in data:
                return suffix in TEXT_SUFFIXES
    return False


def corpus_split(name: str, split: str) -> LabeledSplit | None:
    """The `split` of the offline corpus or of a local text file / folder, as a text split of documents (column
    `text`, no labels); None when `name` is neither (a dataset `load_split` reads)."""
    import datasets

    if name == PYTHON_DOCS:
        documents = list(python_docs_documents().values())
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        label = PYTHON_DOCS
    else:
        path = Path(name).expanduser()
        if not is_text_source(path):
            return None
        documents = _text_documents(path)
        version = "local"
        label = str(path.resolve())
    if not documents:
        raise DatasetError(f"dataset {name!r} holds no text: give it text files or paragraphs")
    chosen = split_documents(documents, split, name=name)
    digest = hashlib.sha256(json.dumps(chosen).encode()).hexdigest()[:16]
    data = datasets.Dataset.from_dict({"text": chosen})
    return LabeledSplit(data, label, split, "text", None, "text", source_fingerprint=f"{version}-{digest}")


def check_tokenizer(tokenizer: Any, model: str) -> None:
    """A tokenizer packing can use: it has an end-of-sequence token (the separator of documents)."""
    if tokenizer is None:
        raise DatasetError(f"model {model!r} has no saved tokenizer: save one next to the weights")
    if getattr(tokenizer, "eos_token_id", None) is None:
        raise DatasetError(
            f"the tokenizer of model {model!r} has no end-of-sequence token (eos_token): packing separates documents "
            "with it; set `eos_token` in its tokenizer_config.json"
        )


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(tokenizer)
    special = {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "add_bos_token")}
    return hashlib.sha256((text + json.dumps(special, sort_keys=True, default=str)).encode()).hexdigest()[:16]


def packed_tokens(texts: Sequence[str], tokenizer: Any, seq_len: int) -> np.ndarray:
    """`(n, seq_len)` int64 token ids: each text tokenized without special tokens and followed by the EOS token,
    all joined end to end and cut into full sequences (the rest dropped); each sequence starts with the BOS token
    where the tokenizer adds one (Llama's), so a sequence reads as the tokenizer's own encoding of a text does."""
    eos = int(tokenizer.eos_token_id)
    bos = getattr(tokenizer, "bos_token_id", None)
    prefix = [int(bos)] if bos is not None and _adds_bos(tokenizer) else []
    body = seq_len - len(prefix)
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    n = len(stream) // body
    if n == 0:
        return np.zeros((0, seq_len), dtype=np.int64)
    rows = np.asarray(stream[: n * body], dtype=np.int64).reshape(n, body)
    if prefix:
        rows = np.concatenate([np.full((n, 1), prefix[0], dtype=np.int64), rows], axis=1)
    return rows


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS token before a text it encodes (Llama's do, GPT-2's and Qwen's do not)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


@dataclass(frozen=True)
class PackSpec:
    """What determines the packed sequences; its hash is the cache key."""

    documents: str  # the text split's fingerprint
    split: str
    column: str
    tokenizer: str
    seq_len: int
    version: int = FORMAT_VERSION


def pack_split(
    split: LabeledSplit, tokenizer: Any, seq_len: int, cache_root: str | Path, *, model: str
) -> LabeledSplit:
    """`split`'s documents packed into `seq_len`-token sequences (`packed_tokens`), as a split of modality
    `causal-lm` whose samples are the sequences (column `input_ids`); cached under `cache_root/tokens/`.
    `DatasetError` when the split holds fewer tokens than one sequence."""
    import datasets

    check_tokenizer(tokenizer, model)
    spec = PackSpec(split.fingerprint, split.split, split.input_column, _tokenizer_fingerprint(tokenizer), seq_len)
    key = spec_key(spec)
    folder = Path(cache_root) / "tokens" / key
    what = f"packed token sequences {folder}"

    def read(directory: Path) -> np.ndarray:
        from .._artifacts import read_artifact

        read_artifact(directory, key, what)
        return np.load(directory / FILE)

    rows = read_or_discard(folder, read, redo="packing the text again")
    if rows is None:
        texts = [str(t) for t in split.dataset[split.input_column] if t is not None and str(t).strip()]
        rows = packed_tokens(texts, tokenizer, seq_len)
        if len(rows) == 0:
            total = sum(len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
            raise DatasetError(
                f"split {split.split!r} of dataset {split.name!r} holds {total} tokens, fewer than one sequence of "
                f"`seq_len` {seq_len}: lower `seq_len` or give it more text"
            )
        with write_artifact(folder, key, what) as w:
            np.save(w.directory / FILE, rows)
            w.manifest.update(spec=json.loads(json.dumps(spec.__dict__)), sequences=len(rows))
    data = datasets.Dataset.from_dict({"input_ids": rows.tolist()})
    return replace(
        split,
        dataset=data,
        input_column="input_ids",
        label_column=None,
        modality=TOKENS,
        source_fingerprint=f"{split.fingerprint}|{key}",
    )
