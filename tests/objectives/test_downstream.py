"""The `downstream` objective through lm-eval-harness (the extra `[llm]`), on a small local multiple-choice task.

`ToastLM`'s log-likelihoods against the Hugging Face model's own logits, one unpadded sequence at a time; a rolling
log-likelihood split into windows against a bigram model's total (every token predicted once, after its
predecessor); `downstream_scores` of a hand-written induction model (it copies the word the question names) at 100 %,
and of the tiny llama equal to the argmax over the choices' log-likelihoods computed directly (acc_norm where the
task reports it, else acc); the early checks and the missing-extra hint.
"""

from __future__ import annotations

import builtins
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny

from toast.errors import MissingDependencyError, ObjectiveError
from toast.objectives import LM_EVAL_HINT, check_downstream, downstream_scores, get_objective, require_lm_eval
from toast.objectives.testing import ArrayTrial, random_trial

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from toast.objectives._lm_eval import GENERATION_OUT_OF_SCOPE, ToastLM  # noqa: E402

WORDS = ["cat", "horse", "ox", "dog", "bird", "fish", "mule", "lynx", "wolf", "yak"]  # no letter twice in a word
# ten questions of three choices; the right one is the word the question names (`doc_to_text` below)
QUESTIONS = [{"choices": [WORDS[i], WORDS[(i + 3) % 10], WORDS[(i + 7) % 10]], "answer": i % 3} for i in range(10)]

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {output_type}
doc_to_text: "R: {{{{choices[answer]}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
{metrics}
"""


def _metric(name: str) -> str:
    return f"  - metric: {name}\n    aggregation: mean\n    higher_is_better: true"


def write_tasks(root: Path) -> Path:
    """`mytask` (acc and acc_norm), `mytask_acc` (acc only) and `mytask_gen` (a generation task) over the ten
    questions, as task YAML files in the folder `root` reading a local JSON-lines file."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "questions.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    for name, output_type, metrics in (
        ("mytask", "multiple_choice", [_metric("acc"), _metric("acc_norm")]),
        ("mytask_acc", "multiple_choice", [_metric("acc")]),
        ("mytask_gen", "generate_until", [_metric("exact_match")]),
    ):
        text = TASK.format(name=name, data=data, output_type=output_type, metrics="\n".join(metrics))
        (root / f"{name}.yaml").write_text(text)
    return root


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny llama and its byte-level tokenizer, as Hugging Face loads them."""
    import transformers

    path = save_tiny("llama", tmp_path_factory.mktemp("llama") / "llama")
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


def _hf_logits(model):
    def logits(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    return logits


def _direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """log P(continuation | context) from one unpadded forward of the whole text (context tokens first, as lm-eval
    splits them; the BOS token as the context of an empty one)."""
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context) if context else [tokenizer.bos_token_id]
    if not context:
        whole = context_ids + whole
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)
    positions = range(len(context_ids) - 1, len(whole) - 1)
    targets = whole[len(context_ids) :]
    total = sum(float(logprobs[p, t]) for p, t in zip(positions, targets))
    greedy = all(int(logprobs[p].argmax()) == t for p, t in zip(positions, targets))
    return total, greedy


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_loglikelihood_matches_the_models_own_logits(tiny):
    """Batched (3 per call), right-padded, longest first: each request's sum of the continuation's log-probabilities
    and its greedy flag are those of the model's own forward on that sequence alone."""
    model, tokenizer = tiny
    pairs = [
        ("R: cat\nA:", " cat"),
        ("A longer context, to pad the others against it.", " yes"),
        ("Q", " a much longer continuation than its context"),
        ("", "no context at all"),
        ("R: horse\nA:", " ox"),
        ("x", "y"),
        ("trailing space ", "moves to the continuation"),
    ]
    lm = ToastLM(_hf_logits(model), tokenizer, batch_size=3)
    got = lm.loglikelihood(_requests("loglikelihood", pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        context, continuation = context.rstrip(), context[len(context.rstrip()) :] + continuation
        want, want_greedy = _direct_loglikelihood(model, tokenizer, context, continuation)
        assert logprob == pytest.approx(want, rel=1e-5, abs=1e-4)
        assert greedy == want_greedy


def test_rolling_loglikelihood_predicts_every_token_once():
    """A bigram model (the next token's logits depend on the current token alone): a text's rolling log-likelihood in
    windows of 8 tokens is the bigram total from the BOS token, and one window of the whole text gives the same."""
    import transformers

    from toast.models.families._causal import tiny_tokenizer

    config = transformers.LlamaConfig(vocab_size=300, bos_token_id=0, eos_token_id=1)
    tokenizer = tiny_tokenizer(config)
    table = torch.randn(300, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def bigram(input_ids, attention_mask):
        return table[input_ids]

    text = "every token of this text is predicted exactly once, whatever the windows"
    ids = [0, *tokenizer.encode(text)]
    logprobs = torch.log_softmax(table, dim=-1)
    want = sum(float(logprobs[a, b]) for a, b in zip(ids[:-1], ids[1:]))
    requests = _requests("loglikelihood_rolling", [(text,), ("short",)])
    windowed = ToastLM(bigram, tokenizer, max_length=8, batch_size=4).loglikelihood_rolling(requests)
    whole = ToastLM(bigram, tokenizer, max_length=1024).loglikelihood_rolling(requests)
    assert windowed[0] == pytest.approx(want, rel=1e-9)
    assert windowed == pytest.approx(whole, rel=1e-9)


def test_generation_is_out_of_scope(tiny):
    model, tokenizer = tiny
    lm = ToastLM(_hf_logits(model), tokenizer)
    with pytest.raises(NotImplementedError, match="generation tasks"):
        lm.generate_until(_requests("generate_until", [("hi", {"until": ["\n"]})]))


def _induction(vocabulary: int):
    """Hand-written next-token logits that copy: after a token, the one that followed its last earlier occurrence.
    After `R: horse\\nA:` it gives ` horse` (no letter repeats in a word), so it answers every question right."""

    def logits(input_ids, attention_mask):
        out = torch.zeros(*input_ids.shape, vocabulary)
        for b, row in enumerate(input_ids.tolist()):
            for t in range(len(row)):
                earlier = [j for j in range(t) if row[j] == row[t]]
                if earlier:
                    out[b, t, row[earlier[-1] + 1]] = 30.0
        return out

    return logits


def test_a_model_that_knows_the_answers_scores_100(tiny, task_dir):
    _, tokenizer = tiny
    scores = downstream_scores(
        _induction(len(tokenizer)), tokenizer, ["mytask", "mytask_acc"], include_path=task_dir, limit=None
    )
    assert scores == {"mytask": 100.0, "mytask_acc": 100.0}


def test_scores_are_the_argmax_over_the_choices(tiny, task_dir):
    """The tiny model's score: the share of questions whose right choice has the highest log-likelihood, divided by
    the choice's length in characters where the task reports acc_norm (`mytask`), raw where it reports acc only."""
    model, tokenizer = tiny
    normed, raw = [], []
    for q in QUESTIONS[:7]:
        context = f"R: {q['choices'][q['answer']]}\nA:"
        lls = np.array([_direct_loglikelihood(model, tokenizer, context, " " + c)[0] for c in q["choices"]])
        lengths = np.array([len(c) for c in q["choices"]], dtype=float)
        normed.append(np.argmax(lls / lengths) == q["answer"])
        raw.append(np.argmax(lls) == q["answer"])
    scores = downstream_scores(
        _hf_logits(model), tokenizer, ["mytask", "mytask_acc"], include_path=task_dir, limit=7, batch_size=4
    )
    assert scores["mytask"] == pytest.approx(100 * np.mean(normed))
    assert scores["mytask_acc"] == pytest.approx(100 * np.mean(raw))


def test_the_objective_is_the_mean_over_the_tasks():
    objective = get_objective("downstream")
    trial = random_trial()
    base = {k: getattr(trial, k) for k in ("plan", "cost", "eval_labels", "probe_labels", "original_features")}
    arrays = {k: trial._arrays[k] for k in ("eval_features", "probe_features", "eval_logits")}
    trial = ArrayTrial(**base, **arrays, downstream={"a": 50.0, "b": 100.0, "c": 0.0})
    values = objective.compute(trial)
    assert values["downstream"] == pytest.approx(50.0)
    assert json.loads(values["downstream_tasks"]) == {"a": 50.0, "b": 100.0, "c": 0.0}
    assert trial.read == {"downstream"}
    assert objective.maximize and objective.unit == "%" and objective.worst_value == 0.0
    assert objective.standard_error(50.0, 100) is None  # lm-eval's documents, not the stage's: never stopped early
    bad = ArrayTrial(**base, **arrays, downstream={"a": math.nan})
    with pytest.raises(ObjectiveError, match="percentages"):
        objective.compute(bad)


def test_the_checks_before_any_model(task_dir, monkeypatch, tmp_path):
    from lm_eval.tasks import TaskManager

    from toast.objectives import _lm_eval

    # lm-eval's own ~15,000 tasks take seconds to index: the local folder stands for them here
    monkeypatch.setattr(
        _lm_eval, "task_manager", lambda path, defaults: TaskManager(include_path=path, include_defaults=False)
    )
    check_downstream(["mytask", "mytask_acc"], task_dir)
    with pytest.raises(ObjectiveError, match=r"no task 'mytsk' \(did you mean 'mytask'\?\)"):
        check_downstream(["mytsk"], task_dir)
    with pytest.raises(ObjectiveError, match=re.escape(f"mytask_gen: {GENERATION_OUT_OF_SCOPE}")):
        check_downstream(["mytask", "mytask_gen"], task_dir)
    with pytest.raises(ObjectiveError, match="is not a folder"):
        check_downstream(["mytask"], tmp_path / "nowhere")
    with pytest.raises(ObjectiveError, match="needs `lm_eval_tasks`"):
        check_downstream([], task_dir)


def test_without_the_extra_one_line_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    for call in (require_lm_eval, lambda: check_downstream(["mytask"], None)):
        with pytest.raises(MissingDependencyError) as caught:
            call()
        assert (
            str(caught.value) == LM_EVAL_HINT == "objective downstream needs lm-eval: pip install 'toast-search[llm]'"
        )
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
