"""Text for language models: the offline corpus, local text files, and packing into token sequences."""

from __future__ import annotations

import numpy as np
import pytest

from toast.data import PYTHON_DOCS, TOKENS, iter_batches, load_split, pack_split, packed_tokens
from toast.errors import DatasetError
from toast.models.families._causal import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    from conftest import TINY_CASES

    return tiny_tokenizer(TINY_CASES["llama"].tiny_config("llama"))


def test_python_docs_is_offline_and_holds_out_every_tenth_topic():
    from pydoc_data.topics import topics

    train, test = load_split(PYTHON_DOCS, "train"), load_split(PYTHON_DOCS, "test")
    names = sorted(topics)
    assert len(train) + len(test) == len(names)
    assert test.dataset["text"] == [topics[n] for i, n in enumerate(names) if i % 10 == 9]
    assert set(train.dataset["text"]).isdisjoint(test.dataset["text"])
    assert train.modality == "text" and train.label_column is None
    assert load_split(PYTHON_DOCS, "train").fingerprint == train.fingerprint  # deterministic
    with pytest.raises(DatasetError, match="splits train and test"):
        load_split(PYTHON_DOCS, "validation")


def test_local_text_file_and_folder(tmp_path):
    paragraphs = [f"paragraph {i} " + "words " * i for i in range(1, 21)]
    (tmp_path / "one.txt").write_text("\n\n".join(paragraphs))
    split = load_split(str(tmp_path / "one.txt"), "test")
    assert split.dataset["text"] == [p.strip() for i, p in enumerate(paragraphs) if i % 10 == 9]
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.md").write_text(f"document {i}")
    assert load_split(str(folder), "train").dataset["text"] == [f"document {i}" for i in range(12) if i % 10 != 9]


def test_packed_tokens_join_documents_with_eos_and_cut_full_sequences(tokenizer):
    texts = ["abc def", "ghij", "klmnopq rs"]
    rows = packed_tokens(texts, tokenizer, 5)
    stream = []
    for t in texts:
        stream += tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    bos = tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id if tokenizer.bos_token_id is not None else False
    body = 4 if bos else 5
    expected = np.asarray(stream[: len(stream) // body * body]).reshape(-1, body)
    if bos:
        expected = np.concatenate([np.full((len(expected), 1), tokenizer.bos_token_id), expected], axis=1)
    assert rows.shape == (len(stream) // body, 5)
    np.testing.assert_array_equal(rows, expected)


def test_pack_split_caches_and_batches_full_sequences(tmp_path, tokenizer):
    split = load_split(PYTHON_DOCS, "test")
    packed = pack_split(split, tokenizer, 64, tmp_path, model="tiny")
    assert packed.modality == TOKENS and packed.input_column == "input_ids"
    again = pack_split(split, tokenizer, 64, tmp_path, model="tiny")  # from the cache
    assert again.fingerprint == packed.fingerprint
    assert again.dataset["input_ids"] == packed.dataset["input_ids"]
    assert pack_split(split, tokenizer, 32, tmp_path, model="tiny").fingerprint != packed.fingerprint
    chunk, batch = next(iter_batches(packed, [0, 3], tokenizer, 8))
    assert batch["input_ids"].shape == (2, 64) and bool(batch["attention_mask"].all())
    assert batch["input_ids"][1].tolist() == packed.dataset["input_ids"][3]


def test_pack_split_refuses_a_corpus_shorter_than_one_sequence(tmp_path, tokenizer):
    (tmp_path / "short.txt").write_text("\n\n".join(f"p{i}" for i in range(10)))
    split = load_split(str(tmp_path / "short.txt"), "train")
    with pytest.raises(DatasetError, match="fewer than one sequence of `seq_len` 4096"):
        pack_split(split, tokenizer, 4096, tmp_path / "cache", model="tiny")


def test_pack_split_refuses_a_tokenizer_without_eos(tmp_path, tokenizer):
    import copy

    broken = copy.deepcopy(tokenizer)
    broken.eos_token = None
    with pytest.raises(DatasetError, match="no end-of-sequence token"):
        pack_split(load_split(PYTHON_DOCS, "test"), broken, 64, tmp_path, model="tiny")
