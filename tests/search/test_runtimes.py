"""The runtimes latency is measured in, and the latency table solved from whole models.

Every registered runtime passes the conformance suite on a tiny image model, a text encoder and a causal LM (the same
outputs as eager, one-line refusals of what it does not run); the probes' solution recovers known parts exactly from
synthetic times, for every depth and kind; and the table estimates a model it never timed within the noise of the
machine is not asserted (no timed assertions: `bench/bench_latency.py` measures the error)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import save_tiny

from toast.errors import SettingsError
from toast.models import CompressedModel, load_model
from toast.search._latency import depth_knots, measure_latency_table, probe_plans, solve_probes, timing_model
from toast.search.runtimes import get_runtime, list_runtimes
from toast.search.runtimes.testing import check_runtime
from toast.spaces import Plan, PlanSpace, list_translators

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {name: load_model(str(save_tiny(name, root / name))) for name in ("vit", "bert", "llama")}


def test_the_registry_lists_the_runtimes_the_issue_names():
    assert list_runtimes()[:3] == ["eager", "compile", "onnxruntime"] and "onnxruntime-tensorrt" in list_runtimes()
    with pytest.raises(SettingsError, match="unknown runtime 'tensorflow': use one of eager"):
        get_runtime("tensorflow")


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime", "onnxruntime-tensorrt"])
@pytest.mark.parametrize("family", ["vit", "bert", "llama"])
def test_runtime_conformance(runtime, family, tiny):
    reason = check_runtime(runtime, tiny[family])
    if runtime == "onnxruntime-tensorrt":  # no GPU here: the suite checked the one-line refusal instead
        assert reason is not None and "onnxruntime-tensorrt" in reason


def test_compile_conformance(tiny):
    """torch.compile on one family (compiling costs seconds per model on this CPU)."""
    assert check_runtime("compile", tiny["vit"]) is None


def test_tensorrt_runs_on_cuda_only():
    with pytest.raises(SettingsError, match="does not run on cpu"):
        get_runtime("onnxruntime-tensorrt").check("cpu")


#: block classes: one (an encoder, Llama), Gemma 2's alternation (sliding first), Gemma 3's five sliding to one full
PATTERNS = {
    "one": lambda i: "block",
    "gemma2": lambda i: "sliding_attention" if (i + 1) % 2 else "full_attention",
    "gemma3": lambda i: "sliding_attention" if (i + 1) % 6 else "full_attention",
}


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("num_blocks", [2, 3, 4, 5, 7, 12, 32])
def test_the_probes_recover_known_parts_exactly(num_blocks, pattern):
    """Times made from known parts (the kept blocks at each knot of depth, a span of each kind, each class's offset)
    are solved back exactly: the probes' design has full rank at every depth, for every registered kind and for
    blocks of one cost class or of Gemma 2's or Gemma 3's attention kinds."""
    kinds = [k if k != "lowrank" else "lowrank:4" for k in list_translators()]
    classes = tuple(PATTERNS[pattern](i) for i in range(num_blocks))
    others = list(dict.fromkeys(classes))[1:]
    knots = depth_knots(num_blocks)
    truth = {
        **{f"kept@{k}": 0.7 + 2.5 * k + 0.1 * k * k for k in knots},  # a block costs more the more are kept
        **{k: 0.1 * (i + 1) for i, k in enumerate(["identity", *kinds])},
        **{f"class:{c}": 1.5 for c in others},  # a full layer past the window: 1.5 ms more than a sliding one
    }
    probes = probe_plans(num_blocks, kinds, classes)
    assert len(probes) == len(knots) + len([k for k in kinds if k != "identity"]) + 1 + len(others)
    for plan, counts in probes.items():  # the counts are the plan's own: kept blocks and spans of each kind
        depth = {int(n.split("@")[1]): w for n, w in counts.items() if n.startswith("kept@")}
        assert sum(depth.values()) == pytest.approx(1.0)
        assert sum(k * w for k, w in depth.items()) == pytest.approx(len(plan.kept))
        assert sum(v for k, v in counts.items() if k in truth and not k.startswith(("kept@", "class:"))) == len(
            plan.spans
        )
    ms = {plan: sum(truth[k] * n for k, n in counts.items()) for plan, counts in probes.items()}
    solved = solve_probes(probes, ms)
    assert solved == pytest.approx({k: truth[k] for k in solved})


def test_full_and_sliding_layers_of_a_gemma_2_get_their_own_cost(tmp_path, monkeypatch):
    """Past its window a decoding step's full layer reads every cached token and a sliding one its window (a small
    Gemma 2 at 2,048 tokens, window 128: a plan without 4 full layers 10.9 ms, without 4 sliding ones 18.1 ms). Made-up
    times with that split are solved into each block's own cost, and every plan of the space is estimated exactly,
    where one cost per block would be off by a third or more."""
    from toast.search import _latency
    from toast.search._latency import block_classes

    loaded = load_model(str(save_tiny("gemma2", tmp_path / "gemma2")))
    L, classes = loaded.num_blocks, block_classes(loaded)
    assert classes == tuple("sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(L))
    cost = {"sliding_attention": 1.0, "full_attention": 2.8}

    def truth(plan):
        return 0.4 + sum(cost[classes[b]] for b in plan.kept) + 0.05 * len(plan.spans)

    monkeypatch.setattr(_latency, "time_models", lambda runtime, models, inputs, **kw: {p: truth(p) for p in models})
    table, _ = measure_latency_table(loaded, kinds=("identity", "linear"), mode="decode", seq_len=8)
    assert table.blocks_ms == pytest.approx(tuple(cost[c] for c in classes))
    space = PlanSpace(num_blocks=L, kinds=("identity", "linear"))
    assert all(table.estimate(p) == pytest.approx(truth(p)) for p in space.enumerate())
    even = dataclasses.replace(table, blocks_ms=(table.original_ms / L,) * L, kept_ms=())
    assert max(abs(even.estimate(p) / truth(p) - 1) for p in space.enumerate()) > 0.3
    assert len(set(block_classes(load_model("demo-lm")))) == 1  # one kind of attention: one class


def test_the_fingerprint_is_the_same_from_the_config_alone_and_from_the_loaded_model(tiny):
    """A table is checked against the config before any weight loads: both must name the same architecture."""
    from toast.models import resolve_model
    from toast.search._latency import architecture_fingerprint

    for name, loaded in tiny.items():
        source = resolve_model(loaded.model_id)
        assert architecture_fingerprint(source.config) == architecture_fingerprint(loaded.config), name
    assert architecture_fingerprint(tiny["vit"].config) != architecture_fingerprint(tiny["bert"].config)


def test_every_probe_is_a_model_the_compressed_model_builds(tiny):
    """A probe of each kind is built at its fitted shapes (folded included: it keeps its source block)."""
    loaded = tiny["vit"]
    kinds = [k if k != "lowrank" else "lowrank:4" for k in list_translators()]
    for plan in probe_plans(loaded.num_blocks, kinds):
        model = timing_model(loaded, plan)
        assert isinstance(model, CompressedModel) and model.plan == plan


def test_a_table_in_another_runtime_is_another_cache_entry(tiny, tmp_path):
    loaded = tiny["vit"]
    kw = {"kinds": ("identity", "linear"), "cache_dir": tmp_path, "repeats": 2, "warmup": 1}
    eager, measured = measure_latency_table(loaded, **kw)
    assert measured and eager.runtime == "eager"
    ort, measured = measure_latency_table(loaded, runtime="onnxruntime", **kw)
    assert measured and ort.runtime == "onnxruntime" and "onnxruntime" in ort.versions
    assert "CPUExecutionProvider" in ort.device and ort.fingerprint == eager.fingerprint
    _, measured = measure_latency_table(loaded, runtime="onnxruntime", **kw)
    assert not measured


def test_onnxruntime_decodes_with_the_cache_as_inputs_and_outputs(tiny):
    """onnxruntime's decoding step: eager's logits, and each kept layer's cache with the new token appended; a past of
    length 0 in the same graph is a prefill (eager's logits for every token)."""
    from toast.search._latency import latency_inputs

    loaded = tiny["llama"]
    inputs = latency_inputs(loaded, batch_size=2, seq_len=8)
    model = timing_model(loaded, Plan.parse("0→1:linear", loaded.num_blocks))
    eager = get_runtime("eager").prepare(model, inputs, mode="decode")()
    logits, *present = get_runtime("onnxruntime").prepare(model, inputs, mode="decode")()
    get_runtime("onnxruntime").release()
    assert torch.allclose(eager, torch.from_numpy(logits), atol=1e-4)
    kept = loaded.num_blocks - 1
    assert len(present) == 2 * kept and model.cache_layers() == tuple(b for b in range(loaded.num_blocks) if b != 1)
    assert all(p.shape[0] == 2 and p.shape[2] == 8 + 1 for p in present)


def test_a_sliding_window_model_decodes_below_its_window_and_is_refused_at_it(tmp_path):
    """Gemma 2 (sliding-window layers alternating with global ones; the tiny config's window is 4): onnxruntime times
    its decode after fewer cached tokens than the window (eager's logits, every kept layer's cache with the new token),
    and refuses one at the window or past it in one line, from the config: the graph's cache keeps every token, so
    there it would read more than the model's own trimmed cache."""
    from toast.errors import UnsupportedModelError
    from toast.models import resolve_model
    from toast.search._latency import latency_inputs

    source = resolve_model(str(save_tiny("gemma2", tmp_path / "gemma2")))
    engine = get_runtime("onnxruntime")
    with pytest.raises(UnsupportedModelError, match="decode step after 4 cached tokens: its sliding-window") as info:
        engine.check_model(source.family, source.config, "decode", seq_len=4)
    assert "\n" not in str(info.value) and "fewer than 4 cached tokens" in str(info.value)
    engine.check_model(source.family, source.config, "prefill", seq_len=4)  # a prefill runs at any length
    engine.check_model(source.family, source.config, "decode", seq_len=3)
    loaded = load_model(str(tmp_path / "gemma2"))
    model = timing_model(loaded, Plan.parse("0→1:identity", loaded.num_blocks))
    inputs = latency_inputs(loaded, batch_size=2, seq_len=3)
    eager = get_runtime("eager").prepare(model, inputs, mode="decode")()
    logits, *present = engine.prepare(model, inputs, mode="decode")()
    engine.release()
    assert torch.allclose(eager, torch.from_numpy(logits), atol=1e-4)
    assert len(present) == 2 * (loaded.num_blocks - 1) and all(p.shape[2] == 3 + 1 for p in present)


def test_decode_in_compile_steps_the_same_cache(tiny):
    """torch.compile's decoding step: the compiled step returns eager's logits on the same cache."""
    loaded = tiny["llama"]
    from toast.search._latency import latency_inputs

    inputs = latency_inputs(loaded, batch_size=2, seq_len=8)
    model = timing_model(loaded, Plan.parse("0→1:linear", loaded.num_blocks))
    eager = get_runtime("eager").prepare(model, inputs, mode="decode")()
    compiled = get_runtime("compile").prepare(model, inputs, mode="decode")()
    get_runtime("compile").release()
    assert torch.allclose(eager, compiled, atol=1e-4)


def test_compile_times_more_models_side_by_side_than_dynamo_holds(tiny):
    """Past dynamo's recompile limit a model would silently run eager: side by side, every model is compiled (one
    graph each), the limit is put back and the caches are cleared after."""
    from torch._dynamo.utils import counters

    from toast.search._latency import latency_inputs, time_models
    from toast.search.runtimes._compile import RECOMPILE_LIMIT

    loaded = tiny["vit"]
    L = loaded.num_blocks
    plans = [Plan((), L), Plan.parse("0→1:identity", L), Plan.parse("0→1:linear", L)]
    inputs = latency_inputs(loaded, batch_size=2)
    runtime = get_runtime("compile")
    with torch._dynamo.config.patch(**{RECOMPILE_LIMIT: 2}):  # fewer graphs than models
        before = counters["stats"]["unique_graphs"]
        ms = time_models(runtime, {p: (lambda p=p: timing_model(loaded, p)) for p in plans}, inputs, repeats=2)
        assert counters["stats"]["unique_graphs"] - before == len(plans)  # none fell back to eager
        assert getattr(torch._dynamo.config, RECOMPILE_LIMIT) == 2
    assert set(ms) == set(plans) and all(t > 0 for t in ms.values())


def test_onnxruntime_sessions_stop_spinning_when_a_run_returns():
    """A session's threads spinning after its run would take the cores from the next session timed side by side."""
    import onnxruntime as ort

    from toast.search.runtimes._onnxruntime import session_options

    assert session_options(ort).get_session_config_entry("session.force_spinning_stop") == "1"
    assert get_runtime("onnxruntime").interleaved and get_runtime("onnxruntime").copies_weights


def test_onnxruntime_refuses_bfloat16_on_the_cpu_before_any_model_and_names_what_runs():
    runtime = get_runtime("onnxruntime")
    for dtype in (torch.bfloat16, "bfloat16"):
        with pytest.raises(SettingsError, match="no bfloat16 kernels") as caught:
            runtime.check("cpu", "prefill", dtype)
        assert "\n" not in str(caught.value) and "float32 or float16 (--dtype)" in str(caught.value)
    for dtype in (None, torch.float32, "float16"):
        runtime.check("cpu", "prefill", dtype)  # nothing to say


@pytest.mark.parametrize("name", ["vit", "llama"])
def test_a_graph_the_provider_has_no_kernels_for_is_one_line(tiny, name):
    """Past the dtype check (a graph in a dtype a provider lacks kernels for: here bfloat16 on the CPU, whose
    refusal `check` makes up front, made anyway), onnxruntime's own error at the session becomes one line naming
    the operator it found no kernel for."""
    from toast.errors import UnsupportedModelError
    from toast.search._latency import latency_inputs

    loaded = dataclasses.replace(tiny[name], model=tiny[name].model.to(torch.bfloat16))
    try:
        model = timing_model(loaded, Plan((), loaded.num_blocks)).to(torch.bfloat16)
        with pytest.raises(UnsupportedModelError, match="cannot run this model in bfloat16") as caught:
            get_runtime("onnxruntime").prepare(model, latency_inputs(loaded, batch_size=1, seq_len=8))
    finally:
        tiny[name].model.to(torch.float32)
    said = str(caught.value)
    assert "\n" not in said and "node" in said and "--dtype" in said
