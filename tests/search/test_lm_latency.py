"""A causal LM's latency in both modes (`--latency-mode prefill|decode`): the decode table times one new token per
sequence after `--latency-seq-len` cached ones, each step puts the cache back (every call sees the same cache), and the end-to-end decoding step of a compressed model runs with its own cache. No timed
assertions: values are only checked for being positive and consistent."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny

from toast.models import CompressedModel, load_model
from toast.search._latency import latency_inputs, measure_end_to_end, measure_latency_table
from toast.spaces import Plan


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(str(save_tiny("llama", tmp_path_factory.mktemp("llama") / "llama")), device="cpu")
    torch.set_num_threads(n)


def test_decode_table_is_keyed_apart_from_prefill_and_cached(llama, tmp_path):
    kw = {"kinds": ["identity", "linear"], "batch_size": 2, "seq_len": 16, "cache_dir": tmp_path, "repeats": 3}
    decode, measured = measure_latency_table(llama, mode="decode", **kw)
    assert measured and decode.mode == "decode" and "one decoding step after 16 cached tokens" in decode.describe()
    assert all(ms > 0 for ms in (decode.embed_ms, *decode.blocks_ms)) and decode.translator("linear") >= 0
    prefill, measured = measure_latency_table(llama, mode="prefill", **kw)
    assert measured and prefill.mode == "prefill"  # another cache entry: not the decode table read back
    again, measured = measure_latency_table(llama, mode="decode", **kw)
    assert not measured and again == decode


def test_end_to_end_decode_step_leaves_the_cache_as_it_found_it(llama, monkeypatch):
    lengths = []
    step = CompressedModel.decode_step

    def recording(self, input_ids, cache):
        lengths.append(cache.get_seq_length(int(self.family.attention(self.blocks[str(self.plan.kept[0])]).layer_idx)))
        return step(self, input_ids, cache)

    monkeypatch.setattr(CompressedModel, "decode_step", recording)
    inputs = latency_inputs(llama, batch_size=2, seq_len=16)
    for text in ("", "0→2:identity", "-1→0:identity"):
        lengths.clear()
        plan = Plan.parse(text, llama.num_blocks) if text else Plan((), llama.num_blocks)
        model = CompressedModel.from_model(llama, plan)
        ms = measure_end_to_end(model, inputs, warmup=1, repeats=3, mode="decode")
        assert ms > 0
        assert lengths[0] == 0 and len(lengths) >= 5  # the prompt cached, then warm-up and timed steps
        assert set(lengths[1:]) == {16}, f"{plan}: each decoding step must see the 16 cached tokens, got {lengths}"


def test_decode_latency_of_an_encoder_is_refused_in_one_line(tmp_path, capsys):
    from toast.search.cli import main

    args = ["--model", "demo-vit", "--objectives", "accuracy,latency", "--latency-mode", "decode"]
    assert main([*args, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "--latency-mode decode times a causal language model's decoding step" in err
