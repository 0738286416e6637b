"""`check_family(name, config)`: the conformance suite every registered model family passes.

A family is found by `register_family`; this suite says that it runs its parts as the stock Transformers model
does. It builds a tiny model of the family from `config` (the family's `tiny_config()` by default: the hub
checkpoint's fields with tiny sizes, random weights), saves it with a processor, loads it through the real loading
path and checks it against the stock model itself, on the family's `tiny_inputs` (text: one padded sequence):

- `check_empty_plan`: the model is handled by the family; with an empty plan every state `h_0 … h_L` (what enters
  the first block and what each block outputs in the stock forward), the final-normed last state and the forward's
  output equal the stock model's, exactly;
- `check_one_block_removed`: a plan with one block replaced by `identity` equals the stock model of the same class
  with that layer deleted from its layer list (its config made for the kept layers by `Family.kept_config`);
- `check_cost`: the cost table's per-component counts add up to fvcore's count of the built model
  (`toast.objectives.count_flops`) for an empty plan, an identity span and a linear one, and to its exact params;
- `check_example_inputs`: `Family.example_inputs` (what costing, latency and the ONNX export feed) and
  `Family.synthetic_inputs` run in the compressed and the stock model alike, at two batch sizes, with the family's
  input names; the export module gives one output per `Family.export_outputs` name;
- `check_save_load`: a compressed model saved with `save_pretrained` (plain and toast layouts) loads back with
  `CompressedModel.from_pretrained` with the same output;
- `check_plain_export`: a plan of identities is a plain Transformers checkpoint that its Transformers class loads,
  in another process where `import toast` fails (`NO_TOAST`; one such process serves the session's checks, see
  `run_without_toast`), with the compressed model's output;
- `check_generate` (families whose models generate, `Family.generates`): the plain checkpoint of a plan removing
  one block generates, greedily and with its KV cache, the tokens it generates without the cache, and the tokens
  the compressed model picks step by step (the argmax of its logits, every token recomputed).

`tests/models/test_family_conformance.py` runs it over every registered family's tiny models, so a new family is
checked on arrival; `family_checks` lists a family's checks, each callable on a `FamilyCase` (`family_case`).
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._family import Family, get_family
from ._loading import LoadedModel

__all__ = [
    "NO_TOAST",
    "FamilyCase",
    "check_cost",
    "check_empty_plan",
    "check_example_inputs",
    "check_family",
    "check_generate",
    "check_one_block_removed",
    "check_plain_export",
    "check_save_load",
    "family_case",
    "family_checks",
    "run_without_toast",
]

#: The top of a script run in a fresh process to check an exported model the way its user loads it: every `import
#: toast` fails there, as on a machine without toast-search (its editable install notwithstanding).
NO_TOAST = r"""
import importlib.abc, json, sys

class NoToast(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "toast" or name.startswith("toast."):
            raise ModuleNotFoundError(f"No module named {name!r} (toast is not importable in this check)")
        return None

sys.meta_path.insert(0, NoToast())
"""

#: Loads the plain checkpoint `argv[1]` with the Transformers class its config names, runs it on the inputs saved in
#: `argv[2]` and saves what it outputs to `argv[3]` (run by `run_without_toast`).
_PLAIN_CHECK = r"""
import json, sys

try:
    import toast
    importable = True
except ImportError:
    importable = False

import torch, transformers

folder, inputs, out = sys.argv[1:4]
config = json.loads(open(f"{folder}/config.json").read())
model = getattr(transformers, config["architectures"][0]).from_pretrained(folder, dtype=torch.float32).eval()
with torch.no_grad():
    o = model(**torch.load(inputs))
got = {k: getattr(o, k, None) for k in ("last_hidden_state", "logits", "pooler_output")}
torch.save({"toast_importable": importable, "class": type(model).__name__, "layers": model.config.num_hidden_layers,
            **{k: v for k, v in got.items() if v is not None}}, out)
"""

#: The process `run_without_toast` talks to: `NO_TOAST`, then one script per line of its input (JSON: the script and
#: its arguments), run as `__main__` with those arguments; one line of JSON per script on its output, the script's
#: own prints going to its error stream.
_WORKER = (
    NO_TOAST
    + r"""
import traceback

replies, sys.stdout = sys.stdout, sys.stderr
for line in sys.stdin:
    request = json.loads(line)
    sys.argv = ["-c", *request["argv"]]
    try:
        exec(compile(request["script"], "<script run without toast>", "exec"), {"__name__": "__main__"})
        reply = {"ok": True}
    except BaseException:  # the script's failure is the reply, the process goes on
        reply = {"ok": False, "error": traceback.format_exc()}
    replies.write(json.dumps(reply) + "\n")
    replies.flush()
"""
)


class _NoToastProcess:
    """One Python process where `import toast` fails, started on first use and kept for the session: every script
    it runs pays for importing torch and Transformers once (seconds each on a loaded CPU), not once per check."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.owner: int | None = None  # the process that started it (a forked child starts its own)
        self.log: Any = None

    def run(self, script: str, *argv: str, timeout: float = 600) -> None:
        if self.proc is None or self.proc.poll() is not None or self.owner != os.getpid():
            self.owner = os.getpid()
            self.log = tempfile.TemporaryFile(mode="w+")  # its error stream: warnings never fill a pipe
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
            )
        self.proc.stdin.write(json.dumps({"script": script, "argv": [str(a) for a in argv]}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:  # no reply in time, or the process died: a fresh one next time
            self.close()
            self.log.seek(0)
            raise AssertionError(f"the process without toast gave no reply:\n{self.log.read()[-3000:]}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise AssertionError(reply["error"][-3000:])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self.owner == os.getpid():
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


_NO_TOAST_PROCESS = _NoToastProcess()
atexit.register(_NO_TOAST_PROCESS.close)


def run_without_toast(script: str, *argv: str | Path, timeout: float = 600) -> None:
    """Run `script` (Python source, as `__main__`, `sys.argv[1:]` = `argv`) in another process where every `import
    toast` fails, as on a machine without toast-search; its failure raises `AssertionError` with its traceback. The
    process is started once and serves every call (a script should leave no state another one depends on)."""
    _NO_TOAST_PROCESS.run(script, *(str(a) for a in argv), timeout=timeout)


@dataclass
class FamilyCase:
    """A tiny model of a family, saved (weights and processor) in `directory` and loaded back through the real
    loading path, with the inputs the checks run it on and the block the one-block checks remove."""

    family: Family
    config: Any
    directory: Path
    loaded: LoadedModel
    inputs: dict[str, torch.Tensor]
    block: int = 1

    @property
    def name(self) -> str:
        return self.family.name


Check = Callable[[FamilyCase], None]


def _build(family: Family, config: Any, seed: int) -> nn.Module:
    """The Transformers model `config` names in `architectures` (else the family's loading class), seeded."""
    import transformers

    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0]) if archs else family.model_class(config)
    torch.manual_seed(seed)
    if cls is transformers.AutoModel:
        return transformers.AutoModel.from_config(config)
    return cls(config)


@contextmanager
def family_case(
    name: str,
    config: Any | None = None,
    *,
    inputs: Mapping[str, torch.Tensor] | None = None,
    block: int = 1,
    seed: int = 0,
) -> Iterator[FamilyCase]:
    """A `FamilyCase` of family `name` built from `config` (the family's `tiny_config()` by default) with weights
    seeded `seed`, in a temporary folder removed afterwards; `inputs` default to the family's `tiny_inputs`."""
    from ._loading import load_model

    family = get_family(name)
    config = family.tiny_config() if config is None else config
    with tempfile.TemporaryDirectory(prefix=f"toast-family-{name}-") as tmp:
        directory = Path(tmp) / "model"
        model = _build(family, config, seed)
        model.save_pretrained(directory)
        family.save_tiny_processor(model.config, directory)
        loaded = load_model(str(directory))
        given = dict(inputs) if inputs is not None else family.tiny_inputs(config)
        yield FamilyCase(family, config, directory, loaded, given, block)


# ---- the stock model as the reference ------------------------------------------------------------------------------
def _stock_run(case: FamilyCase, model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[list, Any]:
    """The stock `model`'s forward on `inputs`: `h_0` (what enters its first block) and every block's output, taken
    with hooks on its own layer list, and its output (with `hidden_states`)."""
    blocks = case.family.parts(model).blocks
    states: list[torch.Tensor] = []

    def first(_module, args, kwargs):
        states.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    def after(_module, _args, out):
        states.append((out[0] if isinstance(out, tuple) else out).detach().clone())

    handles = [blocks[0].register_forward_pre_hook(first, with_kwargs=True)]
    handles += [b.register_forward_hook(after) for b in blocks]
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return states, out


def _stock_output(out: object) -> torch.Tensor | None:
    """What `CompressedModel.forward` returns for a model with a head: the logits, else the pooler's output."""
    for name in ("logits", "pooler_output"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    return None


def _close(ours: torch.Tensor, theirs: torch.Tensor, what: str, tol: float = 0.0) -> None:
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


def _compressed(case: FamilyCase, text: str, translators: Mapping | None = None):
    from toast.spaces import Plan

    from ._compressed import CompressedModel

    plan = Plan.parse(text, case.loaded.num_blocks)
    return CompressedModel.from_model(case.loaded, plan, translators)


def _one_block(case: FamilyCase) -> str:
    return f"{case.block - 1}→{case.block}:identity"


def _shorter(case: FamilyCase) -> nn.Module:
    """The stock model with block `case.block` deleted from its layer list, its config for the kept layers."""
    L = case.loaded.num_blocks
    shorter = copy.deepcopy(case.loaded.model)
    del case.family.parts(shorter).blocks[case.block]
    kept = [b for b in range(L) if b != case.block]
    small = case.family.kept_config(shorter.config, kept)
    shorter.config.__dict__.update(small.__dict__)  # in place: the submodules hold the same config object
    if getattr(shorter.config, "use_cache", None):  # a decoder's layers keep their indices: no cache of k layers
        shorter.config.use_cache = False
    return shorter


# ---- the checks ----------------------------------------------------------------------------------------------------
def check_empty_plan(case: FamilyCase) -> None:
    """With an empty plan, `h_0 … h_L`, the final-normed last state and the output are the stock model's, exactly."""
    name, loaded = case.name, case.loaded
    assert loaded.family is case.family, f"{case.directory} is handled by {loaded.family.name!r}, not {name!r}"
    L = loaded.num_blocks
    assert L >= 2 and 1 <= case.block < L, f"{name}: the suite needs two blocks or more and a block in 1 … {L - 1}"
    model = _compressed(case, "")
    with torch.no_grad():
        states, _ = model.hidden_states(case.inputs)
        output = model(**case.inputs)
        normed = model.family.normalize(model.final_norm, states[-1])
    stock_states, stock = _stock_run(case, loaded.model, case.inputs)
    assert len(states) == L + 1 == len(stock_states), (
        f"{name}: {len(states)} states, the stock model {len(stock_states)}"
    )
    for k, (ours, theirs) in enumerate(zip(states, stock_states)):
        _close(ours, theirs, f"{name}: h_{k} differs")
    reported = getattr(stock, "hidden_states", None) or ()
    for k, theirs in enumerate(reported[:L]):  # the stock model's own h_0 … h_L-1 (its h_L may be final-normed)
        _close(states[k], theirs, f"{name}: h_{k} differs from the stock model's hidden_states")
    if getattr(stock, "last_hidden_state", None) is not None:
        _close(normed, stock.last_hidden_state, f"{name}: the final-normed last state differs from last_hidden_state")
    expected = _stock_output(stock)
    if expected is not None and model.head is not None:
        _close(output, expected, f"{name}: the output differs")


def check_one_block_removed(case: FamilyCase) -> None:
    """One block replaced by identity is the stock model with that layer deleted from its layer list."""
    name = case.name
    model = _compressed(case, _one_block(case))
    with torch.no_grad():
        ours = model.hidden_states(case.inputs)[0][-1]
        output = model(**case.inputs)
    shorter = _shorter(case)
    theirs, stock = _stock_run(case, shorter, case.inputs)
    what = f"{name}: block {case.block} removed differs from the stock model without it"
    _close(ours, theirs[-1], what, 1e-6)
    if getattr(stock, "last_hidden_state", None) is not None:
        _close(model.family.normalize(model.final_norm, ours), stock.last_hidden_state, what, 1e-6)
    expected = _stock_output(stock)
    if expected is not None and model.head is not None:
        _close(output, expected, f"{what} (the output)", 1e-6)


def check_cost(case: FamilyCase) -> None:
    """The additive cost of a plan equals fvcore on the built model (`toast.objectives.count_flops`), and its
    params the built model's exactly: an empty plan, an identity span and a linear one."""
    from toast.spaces import PairStats, Plan, translator_class

    from ._costing import example_inputs, measure_cost_table, model_flops

    loaded, name = case.loaded, case.name
    table = measure_cost_table(loaded)
    d = loaded.hidden_size
    rng = np.random.default_rng(0)
    for text in ("", _one_block(case), f"{case.block - 1}→{case.block}:linear"):
        plan = Plan.parse(text, loaded.num_blocks)
        pairs = PairStats.from_arrays(rng.normal(size=(80, d)), rng.normal(size=(80, d)))
        translators = {
            s: translator_class(s.kind)().fit(pairs) for s in plan.spans if translator_class(s.kind).needs_fit
        }
        model = _compressed(case, text, translators)
        cost = table.cost(plan)
        counted = model_flops(model, example_inputs(loaded))
        assert cost.flops == counted, (
            f"{name}: plan {text or 'empty'!r} costs {cost.flops} FLOPs, fvcore counts {counted}"
        )
        params = model.num_parameters()
        assert cost.params == params, (
            f"{name}: plan {text or 'empty'!r} costs {cost.params} params, the model has {params}"
        )


def check_example_inputs(case: FamilyCase) -> None:
    """`example_inputs` and `synthetic_inputs` name the family's inputs, hold `batch` samples and run in the
    compressed model as in the stock one; the export module outputs one tensor per `export_outputs` name."""
    family, config, loaded, name = case.family, case.config, case.loaded, case.name
    model = _compressed(case, "")
    rng = np.random.default_rng(0)
    for batch in (1, 2):
        made = {
            "example_inputs": family.example_inputs(config, batch=batch, seq_len=8, processor=loaded.processor),
            "example_inputs without a processor": family.example_inputs(config, batch=batch, seq_len=8),
            "synthetic_inputs": family.synthetic_inputs(
                config, batch=batch, rng=rng, processor=loaded.processor, max_length=16
            ),
            "synthetic_inputs without a processor": family.synthetic_inputs(
                config, batch=batch, rng=rng, max_length=16
            ),
        }
        for how, inputs in made.items():
            what = f"{name}: {how} (batch {batch})"
            assert inputs and set(inputs) <= set(family.input_names), (
                f"{what} gives {sorted(inputs)}, not the family's inputs {family.input_names}"
            )
            assert all(v.shape[0] == batch for v in inputs.values()), f"{what}: not {batch} samples"
            with torch.no_grad():
                states, _ = model.hidden_states(inputs)
                output = model(**inputs)
                exported = model.export_module()(**inputs)
            assert output.shape[0] == batch and torch.isfinite(output).all(), f"{what}: the output is not finite"
            stock_states, _ = _stock_run(case, loaded.model, inputs)
            _close(states[-1], stock_states[-1], f"{what}: h_L differs from the stock model's")
            exported = exported if isinstance(exported, tuple) else (exported,)
            names = family.export_outputs(model)
            assert len(exported) == len(names), f"{what}: {len(exported)} export outputs for the names {names}"


def check_save_load(case: FamilyCase) -> None:
    """Saved (plain and toast layouts) and loaded back with `CompressedModel.from_pretrained`: the same output."""
    from ._compressed import CompressedModel

    name = case.name
    model = _compressed(case, _one_block(case))
    with torch.no_grad():
        expected = model(**case.inputs)
        last = model.hidden_states(case.inputs)[0][-1]
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("plain", "toast"):
            folder = model.save_pretrained(Path(tmp) / layout, processor=case.loaded.processor, layout=layout)
            meta = json.loads((folder / "toast.json").read_text())
            assert meta["layout"] == layout and meta["family"] == name, f"{name}: toast.json says {meta['layout']}"
            again = CompressedModel.from_pretrained(folder)
            with torch.no_grad():
                _close(again(**case.inputs), expected, f"{name}: save/load ({layout} layout)")
                _close(again.hidden_states(case.inputs)[0][-1], last, f"{name}: save/load ({layout} layout), h_L")


def check_plain_export(case: FamilyCase) -> None:
    """A plan of identities saved as a plain checkpoint loads with its Transformers class alone (a fresh process
    where `import toast` fails), with the compressed model's last hidden state and output."""
    name = case.name
    model = _compressed(case, _one_block(case))
    with torch.no_grad():
        h = model.hidden_states(case.inputs)[0][-1]
        normed = model.family.normalize(model.final_norm, h)
        output = model(**case.inputs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save_pretrained(Path(tmp) / "plain", processor=case.loaded.processor)
        layout = json.loads((folder / "toast.json").read_text())["layout"]
        assert layout == "plain", f"{name}: a plan of identities saved as {layout!r}, not a plain checkpoint"
        torch.save(dict(case.inputs), Path(tmp) / "inputs.pt")
        out = Path(tmp) / "out.pt"
        try:
            run_without_toast(_PLAIN_CHECK, folder, Path(tmp) / "inputs.pt", out)
        except AssertionError as exc:
            raise AssertionError(f"{name}: the plain checkpoint does not load without toast:\n{exc}") from None
        got = torch.load(out)
    assert not got["toast_importable"], "the check's process could import toast"
    assert got["layers"] == len(model.plan.kept), f"{name}: {got['layers']} layers, not {len(model.plan.kept)}"
    if "last_hidden_state" in got:
        _close(got["last_hidden_state"], normed, f"{name}: the plain checkpoint's last_hidden_state differs", 1e-6)
    expected = next((got[k] for k in ("logits", "pooler_output") if k in got), None)
    if expected is not None and model.head is not None:
        _close(expected, output, f"{name}: the plain checkpoint's output differs", 1e-6)


#: How many tokens `check_generate` generates.
GENERATED_TOKENS = 6


def _greedy(model: nn.Module, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """`prompt` followed by `steps` tokens, each the argmax of `model`'s last logits over the whole sequence so far
    (no cache: every token recomputed)."""
    seq = prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq))
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq


def check_generate(case: FamilyCase) -> None:
    """A plan removing one block, saved as a plain checkpoint and loaded by Transformers alone, generates greedily
    with its KV cache (its layers renumbered: each attention's cache entry and attention kind) the tokens it generates
    without the cache, and the tokens the compressed model picks step by step, on the inputs' unpadded rows."""
    import transformers

    name = case.name
    model = _compressed(case, _one_block(case))
    real = case.inputs["attention_mask"].bool().all(1)
    assert real.any(), f"{name}: check_generate needs an unpadded row among the inputs"
    prompt = case.inputs["input_ids"][real]
    ours = _greedy(model, prompt, GENERATED_TOKENS)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save_pretrained(Path(tmp) / "plain", processor=case.loaded.processor, layout="plain")
        plain = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert plain.config.num_hidden_layers == len(model.plan.kept), f"{name}: the plain checkpoint has the wrong depth"
    # every step generated (no end-of-sequence stop), greedy whatever the checkpoint's generation config says
    settings = {"max_new_tokens": GENERATED_TOKENS, "do_sample": False, "eos_token_id": None}
    settings["pad_token_id"] = case.loaded.processor.pad_token_id if case.loaded.processor is not None else 0
    with torch.no_grad():
        try:
            cached = plain.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=True, **settings)
        except (IndexError, RuntimeError, ValueError) as exc:  # e.g. an attention indexing a cache entry past the end
            raise AssertionError(
                f"{name}: the plain checkpoint does not generate with its KV cache: {type(exc).__name__}: {exc}"
            ) from exc
        uncached = plain.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=False, **settings)
    assert torch.equal(cached, uncached), f"{name}: generation with the KV cache differs from generation without it"
    assert torch.equal(cached, ours), f"{name}: the plain checkpoint generates other tokens than the compressed model"


FAMILY_CHECKS: tuple[Check, ...] = (
    check_empty_plan,
    check_one_block_removed,
    check_cost,
    check_example_inputs,
    check_save_load,
    check_plain_export,
)


def family_checks(name: str) -> list[Check]:
    """The checks family `name` must pass, each called as `check(case)` on a `family_case` (one test case each):
    `FAMILY_CHECKS`, and `check_generate` for a family whose models generate."""
    family = get_family(name)  # an unknown family fails here, naming the known ones
    return [*FAMILY_CHECKS, *((check_generate,) if family.generates else ())]


def check_family(
    name: str,
    config: Any | None = None,
    *,
    inputs: Mapping[str, torch.Tensor] | None = None,
    checks: tuple[Check, ...] | list[Check] | None = None,
    block: int = 1,
) -> None:
    """Run `checks` (every one by default) on a tiny model of family `name` built from `config` (its
    `tiny_config()` by default), on `inputs` (its `tiny_inputs` by default), `block` the block the one-block checks
    remove; the first broken rule raises `AssertionError` naming the family."""
    chosen = family_checks(name) if checks is None else list(checks)
    with family_case(name, config, inputs=inputs, block=block) as case:
        for check in chosen:
            check(case)
