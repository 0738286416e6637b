"""A model as lm-eval-harness scores it: `ToastLM`, and `evaluate_tasks`, lm-eval's evaluator on named tasks.

Imported only where lm-eval is used (`toast.objectives._downstream` imports it on first use): this module imports
lm-eval at the top, and lm-eval is the optional extra `[llm]`. lm-eval does the work it already does well: it
finds the tasks (`TaskManager`, with a user's local task folder), reads their data, builds the requests (prompts,
few-shot examples, the context / continuation split of `TemplateLM`), batches them (`Collator`), and computes the
metrics. `ToastLM` only scores token sequences with a logits function: any `(input_ids, attention_mask) -> (B, T, V)`
next-token logits, a compressed model's among them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from lm_eval import evaluate
from lm_eval import utils as lm_utils
from lm_eval.api import task as lm_task
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import Collator
from lm_eval.tasks import TaskManager
from tqdm import tqdm

__all__ = [
    "GENERATION_OUT_OF_SCOPE",
    "ToastLM",
    "context_length",
    "evaluate_tasks",
    "generation_tasks",
    "load_tasks",
    "task_manager",
    "unknown_tasks",
]

DEFAULT_LENGTH = 2048  # lm-eval's context length of a model that states none
UNSET_LENGTH = int(1e30)  # a tokenizer's `model_max_length` when it states none (transformers' VERY_LARGE_INTEGER)
FEWSHOT_SEED = 1234  # lm-eval's default seed of the few-shot examples (`simple_evaluate`'s `fewshot_random_seed`)
Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

GENERATION_OUT_OF_SCOPE = (
    "generation tasks (output_type generate_until) are out of scope: toast scores a plan by the log-likelihoods of "
    "given continuations (multiple choice, loglikelihood, loglikelihood_rolling tasks), with no decoding loop"
)


def context_length(config: Any, tokenizer: Any = None) -> int:
    """The longest input of a model, as lm-eval's Hugging Face model reads it: its config's `n_positions`,
    `max_position_embeddings` or `n_ctx` (a nested `text_config`'s first), else the tokenizer's `model_max_length`
    where it is set, else lm-eval's default of 2048."""
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < UNSET_LENGTH:
        return model_max
    return DEFAULT_LENGTH


class ToastLM(TemplateLM):
    """lm-eval's view of a causal LM given as a logits function and its Hugging Face tokenizer.

    `logits(input_ids (B, T) long, attention_mask (B, T) long)` returns next-token logits `(B, T, V)`; sequences are
    right-padded (positions 0 … T-1 stay those of the unpadded sequence, and the causal mask keeps the padding out of
    every real position). Tokenization follows lm-eval's conventions for a Hugging Face causal LM (`TemplateLM`'s
    context / continuation split): the tokenizer's own special tokens on each text (no second BOS where a text
    starts with it), the BOS token (else EOS) as the context of an empty one and as the first window's prefix of a
    rolling log-likelihood. Inputs longer than `max_length` lose their oldest tokens. Generation is not implemented:
    `GENERATION_OUT_OF_SCOPE`.
    """

    def __init__(
        self,
        logits: Logits,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        config: Any = None,
        batch_size: int = 8,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._logits = logits
        self.tokenizer = tokenizer
        self._max_length = int(max_length) if max_length is not None else context_length(config, tokenizer)
        self._batch_size = int(batch_size)
        self._device = torch.device(device)

    # ---- what lm-eval asks of a model ------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context (and the first rolling window) is conditioned on: BOS, else EOS."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """The token ids of `string`: with the tokenizer's special tokens unless told (or `string` already starts
        with the BOS text)."""
        if add_special_tokens is None:
            bos = self.tokenizer.bos_token
            add_special_tokens = not (bos and string.startswith(bos))
        return list(self.tokenizer.encode(string, add_special_tokens=add_special_tokens))

    def loglikelihood(self, requests: list, disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        """`(log P(continuation | context), whether greedy decoding gives the continuation)` of each request."""
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = True) -> list[float]:
        """The log-likelihood of each request's whole text (perplexity tasks), in windows of `max_length` tokens
        (lm-eval's `get_rolling_token_windows`, each token predicted once, the first after the prefix token)."""
        pieces: list[tuple[None, list[int], list[int]]] = []
        owners: list[int] = []
        for index, (text,) in enumerate(request.args for request in requests):
            windows = lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text, add_special_tokens=False),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(lm_utils.make_disjoint_window, windows):
                pieces.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(pieces)):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(GENERATION_OUT_OF_SCOPE)

    # ---- scoring token sequences -----------------------------------------------------------------------------
    @torch.inference_mode()
    def _loglikelihood_tokens(
        self, requests: list, disable_tqdm: bool = True, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """Each `(strings, context ids, continuation ids)` request's `(summed log-probability, greedy)` of its
        continuation: longest first, `batch_size` sequences per call of the logits, right-padded."""
        ordered = Collator(requests, sort_fn=lambda r: (-len(r[1]) - len(r[2]), tuple(r[1] + r[2])))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        results: list[tuple[float, bool]] = []
        for batch in ordered.get_batched(n=self.batch_size):
            # the model sees context + continuation less its last token (nothing predicts after it), at most
            # max_length tokens, the oldest dropped
            rows = [(ctx + cont)[-(self.max_length + 1) :][:-1] for _, ctx, cont in batch]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = 1
            logits = self._logits(ids.to(self._device), mask.to(self._device))
            for i, (strings, _, cont) in enumerate(batch):
                # the last len(cont) positions of the row predict the continuation's tokens
                stop = len(rows[i])
                part = logits[i, stop - len(cont) : stop]
                logprobs = torch.log_softmax(
                    part, dim=-1, dtype=torch.float64 if part.dtype == torch.float64 else torch.float32
                )
                target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
                answer = (
                    float(logprobs.gather(-1, target[:, None]).sum()),
                    bool((logprobs.argmax(dim=-1) == target).all()),
                )
                if strings is not None:
                    self.cache_hook.add_partial("loglikelihood", strings, answer)
                results.append(answer)
        return ordered.get_original(results)


# ---- tasks and the evaluator ----------------------------------------------------------------------------------------
@functools.cache
def task_manager(include_path: str | None, include_defaults: bool) -> TaskManager:
    """lm-eval's index of tasks: a local folder of task YAMLs (`include_path`), lm-eval's own tasks with
    `include_defaults`. Built once per process (indexing lm-eval's ~15,000 task files takes seconds); every
    evaluation still loads its tasks afresh from it."""
    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _manager_for(tasks: Sequence[str], include_path: str | Path | None) -> TaskManager:
    """The task index that knows `tasks`: the local folder alone when it holds them all (fast), else with lm-eval's
    own tasks."""
    if include_path is not None:
        local = task_manager(str(include_path), False)
        if all(t in local.all_tasks for t in tasks):
            return local
    return task_manager(None if include_path is None else str(include_path), True)


def unknown_tasks(tasks: Sequence[str], include_path: str | Path | None) -> tuple[list[str], list[str]]:
    """The names in `tasks` that neither the local folder nor lm-eval knows, and every task name known."""
    known = _manager_for(tasks, include_path).all_tasks
    return [t for t in tasks if t not in known], list(known)


def load_tasks(tasks: Sequence[str], include_path: str | Path | None) -> dict[str, Any]:
    """lm-eval's loaded tasks (`TaskManager.load`: `{"tasks": {name: Task}, "groups": …, "group_map": …}`)."""
    with _quiet():
        return _manager_for(tasks, include_path).load(list(tasks))


def generation_tasks(loaded: Mapping[str, Any]) -> list[str]:
    """The loaded tasks that generate text (`output_type` generate_until): out of scope."""
    return [name for name, task in loaded["tasks"].items() if task.OUTPUT_TYPE == "generate_until"]


def evaluate_tasks(
    lm: ToastLM,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None,
    limit: int | None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """lm-eval's results of `lm` on `tasks`: `{task or group name: {"acc,none": …, "acc_norm,none": …, …}}`, the first
    `limit` documents of each task, zero-shot unless a task's file says otherwise (few-shot examples drawn with
    lm-eval's default seed). No bootstrap standard errors and no per-sample log.

    lm-eval's `evaluate` on the tasks `TaskManager.load` gives, set up as `simple_evaluate` sets them up:
    `simple_evaluate` itself also seeds the global random generators (the search's own would change) and collects the
    machine's environment (`torch.utils.collect_env`, seconds of subprocesses) on every call. `progress` False: none
    of lm-eval's progress bars."""
    with _quiet(progress):
        loaded = _manager_for(tasks, include_path).load(list(tasks))
        for task in loaded["tasks"].values():
            if task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
        out = evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=0, log_samples=False)
    return dict(out["results"])


@contextmanager
def _quiet(progress: bool = False) -> Iterator[None]:
    """lm-eval's INFO and WARNING logs (each task loaded, `limit` is for testing only …) kept off the console during
    one evaluation, unless a user configured the `lm_eval` logger; without `progress`, the progress bar lm-eval draws
    for every task's requests too (it takes no setting: its module's `tqdm` is replaced for the evaluation)."""
    with ExitStack() as stack:
        logger = logging.getLogger("lm_eval")
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)
            stack.callback(logger.setLevel, logging.NOTSET)
        if not progress and hasattr(lm_task, "tqdm"):
            stack.enter_context(mock.patch.object(lm_task, "tqdm", functools.partial(tqdm, disable=True)))
        yield
