"""The compressed model: kept blocks and translators in one `nn.Module` that never runs a removed block."""

from __future__ import annotations

import copy
import functools
import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toast.spaces import Plan, PlanError, Span, Translator, translator_class

from ..errors import UnsupportedModelError
from ._family import Family, get_family
from ._loading import LoadedModel, detached_copy, execution_device, is_dispatched
from ._plain import PLAIN, TOAST, load_plain, plain_model, plain_refusal, save_toast_config, source_config
from ._sentence import SentencePipeline, saved_sentence_pipeline, write_sentence_transformer

FORMAT_VERSION = 2  # 2: a plain Transformers checkpoint where the plan allows, else config.json refuses Transformers
#: A plain checkpoint's `classifier` (an exported probe no Transformers class holds), beside its weights.
CLASSIFIER_FILE = "classifier.safetensors"


def _span_key(span: Span) -> str:
    return f"h{span.source}_h{span.target}"


def refused_spans(plan: Plan, family: Family, block: nn.Module) -> list[str]:
    """One line per span of `plan` whose kind refuses it, in `plan` or in a model of `family` (`block` one of
    its blocks); empty when every span applies."""
    out = []
    for span in plan.spans:
        kind = translator_class(span.kind)
        reason = kind.refuse_span(span, plan) or kind.refuse_family(family, block)
        if reason:
            out.append(reason)
    return out


class CompressedModel(nn.Module):
    """Embeddings → kept blocks and translators in plan order → final norm → pooling / head.

    With an empty plan it computes exactly what the original model computes. A decoder language model's head is its
    LM head over every token (`head_kind` "lm": logits `(B, N, vocab)`, soft-capped where the model caps them, no
    pooling), what `AutoModelForCausalLM` gives for the same `input_ids` and `attention_mask`; `forward` keeps no KV
    cache (every call recomputes every token), `decode_step` steps with a `DynamicCache`, and `decode_module` is that
    step with the cache as tensors, as an exporter traces it.
    """

    def __init__(
        self,
        *,
        config: Any,
        family: Family,
        plan: Plan,
        embeddings: nn.Module,
        blocks: Mapping[int, nn.Module],
        translators: Mapping[Span, nn.Module],
        final_norm: nn.Module,
        head: nn.Module | None,
        head_kind: str | None,
        model_class: str,
        sentence: SentencePipeline | None = None,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.sentence = sentence  # a sentence-transformers source's pooling and normalisation, which features apply
        self.config = config
        self.family = family
        self.plan = plan
        self.model_class = model_class
        self.embeddings = embeddings
        self.blocks = nn.ModuleDict({str(b): blocks[b] for b in plan.kept})
        self.translators = nn.ModuleDict({_span_key(s): translators[s] for s in plan.spans})
        self.final_norm = final_norm
        self.head = head
        self.head_kind = head_kind
        # an exported probe on the pooled features where no Transformers class reads them (`_head.with_head`):
        # `forward` gives its logits; a plain checkpoint keeps it in CLASSIFIER_FILE, which Transformers leaves out
        self.classifier = classifier
        self._steps = [(kind, str(x) if kind == "block" else _span_key(x)) for kind, x in plan.steps()]
        # built once, as the stock model holds it; not a submodule: its float32 frequencies stay as built from the
        # config (no state-dict entry, no dtype cast), and its forward moves them to the states' device
        object.__setattr__(self, "_rotary", family.rotary_embedding(config))
        # blocks run by accelerate's hooks (a model loaded with a device map, on several devices): the states
        # `hidden_states` keeps and the outputs are gathered where the inputs go (the embeddings' device), and each
        # translator's input is moved to the translator; None: the whole model on one device, nothing is moved
        dispatched = any(is_dispatched(m) for m in (*self.blocks.values(), final_norm))
        self._home = execution_device(embeddings) if dispatched else None
        self._translator_devices = {
            key: p.device
            for key, module in self.translators.items()
            if dispatched and (p := next(module.parameters(), None)) is not None
        }

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_model(
        cls, loaded: LoadedModel, plan: Plan, translators: Mapping[Span, Translator] | None = None
    ) -> CompressedModel:
        """Build `plan` over `loaded` (sharing its kept modules, not copying them)."""
        parts = loaded.parts
        if plan.num_blocks != len(parts.blocks):
            raise ValueError(f"plan is for {plan.num_blocks} blocks but the model has {len(parts.blocks)}")
        translators = translators or {}
        modules: dict[Span, nn.Module] = {}
        blocks = dict(enumerate(parts.blocks))
        ref = next(loaded.model.parameters())
        dispatched = loaded.device_map is not None
        refusals = refused_spans(plan, loaded.family, parts.blocks[0])
        if refusals:
            raise PlanError("; ".join(refusals))
        for span in plan.spans:
            kind = translator_class(span.kind)
            if not kind.needs_fit:  # a kind fitted to nothing: its module comes from the width alone
                module = kind.empty_module(loaded.hidden_size)
            elif span in translators:
                module = translators[span].to_module()
                # a kind that folds into its source block replaces it with a copy (the loaded model is not touched);
                # a dispatched block is copied with its weights on its execution device and no hook first
                source = blocks[span.start] if span.start >= 0 else None
                if source is not None and dispatched:
                    source = detached_copy(source)
                folded = translators[span].fold_into(source, loaded.family) if source is not None else None
                if folded is not None:
                    blocks[span.start] = folded
            else:
                raise ValueError(f"no fitted translator for span {span}:{span.kind}")
            # on a dispatched model a translator runs where its span's last block ran (its output's device)
            device = execution_device(parts.blocks[span.end]) if dispatched else ref.device
            modules[span] = module.to(device=device, dtype=ref.dtype)
        return cls(
            config=loaded.config,
            family=loaded.family,
            plan=plan,
            embeddings=parts.embeddings,
            blocks=blocks,
            translators=modules,
            final_norm=parts.final_norm,
            head=parts.head,
            head_kind=parts.head_kind,
            model_class=type(loaded.model).__name__,
            sentence=loaded.sentence,
        )

    # ---- running -----------------------------------------------------------------------------
    def _inputs(self, args: tuple, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The family's inputs given to `forward` by position (in `family.input_names` order) and by name, less
        the ones given as None; a `TypeError` names an input the family does not take."""
        names = self.family.input_names
        if len(args) > len(names):
            raise TypeError(f"{self.family.name} models take at most {len(names)} inputs ({', '.join(names)})")
        given = dict(zip(names, args))
        twice = sorted(given.keys() & inputs.keys())
        if twice:
            raise TypeError(f"input {twice[0]!r} given both by position and by name")
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise TypeError(f"{self.family.name} models take {', '.join(names)}; not {', '.join(unknown)}")
        return {k: v for k, v in {**given, **inputs}.items() if v is not None}

    def run(
        self, inputs: Mapping[str, torch.Tensor], *, keep_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """Last hidden state (before the final norm), token mask, and every intermediate state if asked."""
        h, mask = self.family.embed(self.embeddings, dict(inputs))
        states = [self._gathered(h)] if keep_states else []
        keep = (lambda _i, state: states.append(self._gathered(state))) if keep_states else None
        h = self.run_steps(h, mask, on_state=keep)
        return h, mask, states

    def _gathered(self, x: torch.Tensor) -> torch.Tensor:
        """`x` where a dispatched model gathers its states and outputs (on one device, as statistics stack them)."""
        return x if self._home is None else x.to(self._home)

    def run_steps(
        self,
        h: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        start: int = 0,
        on_state: Callable[[int, torch.Tensor], None] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Steps `start …` of the plan from `h`, the state before step `start` (`h_0` for 0): the last hidden
        state. `on_state(i, state)` sees the state after each step `i` (a prefix cache records from it). `kwargs`:
        the blocks' keyword arguments (default the family's `block_kwargs` for `h` and `mask`)."""
        if kwargs is None:
            kwargs = self.family.block_kwargs(self.config, h, mask, rotary=self._rotary)
        for i in range(start, len(self._steps)):
            kind, key = self._steps[i]
            if kind == "block":
                h = self.family.run_block(self.blocks[key], h, kwargs)
            else:
                device = self._translator_devices.get(key)
                h = self.translators[key](h if device is None else h.to(device))
            if on_state is not None:
                on_state(i, h)
        return h

    def decode_step(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """A causal LM's next-token logits `(B, n, vocab)` for new tokens `input_ids` `(B, n)` after the tokens of the
        KV `cache` (a `transformers` `DynamicCache`): each kept block reads and extends its own layer's entry, a
        translator maps the new tokens' states alone (it is a map of each token). What a decoding step costs: the
        latency of `--latency-mode decode`."""
        layers: dict[str, int] = {}  # the first kept layer of each attention kind: its cache entry is filled
        for b in self.plan.kept:
            block = self.blocks[str(b)]
            layers.setdefault(self.family.layer_type(block), int(self.family.attention(block).layer_idx))
        past = cache.get_seq_length(next(iter(layers.values()), 0))  # not int(): a traced graph keeps it symbolic
        h = self.family.embed_step(self.embeddings, input_ids, past)
        kwargs = self.family.decode_kwargs(self.config, h, cache, past, layers, rotary=self._rotary)
        h = self.run_steps(h, None, kwargs=kwargs)
        return self.tail(h, None)

    def token_mask(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The token mask `run` gives for `inputs`, without running the embeddings (None for images)."""
        return self.family.token_mask(dict(inputs), next(self.embeddings.parameters()).device)

    def features(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled features: [CLS] after the final norm (mean over real tokens for text encoders)."""
        h, mask, _ = self.run(inputs)
        return self.pooled(h, mask)

    def pooled(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The pooled features of a last hidden state (`features` from `run`'s output)."""
        return self._gathered(self._pool(self._gathered(self.family.normalize(self.final_norm, hidden)), mask))

    def _pool(self, normed: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Pooled features of the final-normed states: the source's sentence-transformers pipeline when it has one."""
        if self.sentence is not None and self.sentence.active:  # what SentenceTransformer.encode gives
            return self.sentence.pool(normed, mask)
        return self.family.pool(self.final_norm, normed, mask, self.config)

    def features_and_outputs(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features and the forward's output (head logits or pooler), from one pass."""
        h, mask, _ = self.run(inputs)
        return self.pooled(h, mask), self.tail(h, mask)

    def hidden_states(self, inputs: Mapping[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """`h_0` and the output of every step (for an empty plan: `h_0 … h_L`), and the token mask."""
        _, mask, states = self.run(inputs, keep_states=True)
        return states, mask

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """The head's output if the model has a head (classifier logits, pooler, a decoder's next-token logits for
        every token), else pooled features. The inputs are the family's (`family.input_names`: `pixel_values`;
        `input_ids`, `attention_mask`, …), by name or in that order."""
        return self.tail(*self.run(self._inputs(args, inputs))[:2])

    def export_module(self) -> nn.Module:
        """This model as an exporter traces it (`torch.onnx.export`): a module whose forward names the family's
        inputs one by one, as torch.export needs them, and returns `family.export_forward`'s outputs, named
        `family.export_outputs(model)`."""
        return _export_class(self.family.input_names)(self)

    def cache_layers(self) -> tuple[int, ...]:
        """A causal LM's KV-cache entries that `decode_step` reads and extends: each kept block's own layer index."""
        return tuple(int(self.family.attention(self.blocks[str(b)]).layer_idx) for b in self.plan.kept)

    def decode_module(self) -> DecodeModule:
        """This causal LM's decoding step with its KV cache as tensors, as an exporter traces it (`DecodeModule`)."""
        return _decode_class(len(self.cache_layers()))(self)

    def tail(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Final norm, pooling and head applied to the last hidden state."""
        normed = self._gathered(self.family.normalize(self.final_norm, hidden))  # beside the token mask
        if self.classifier is not None:  # an exported probe: on the pooled features it was fitted on
            return self.classifier(self._gathered(self._pool(normed, mask)))
        if self.head is None:
            return self._gathered(self._pool(normed, mask))
        return self._gathered(self.family.run_head(self.head, self.head_kind, normed, mask, self.config))

    def num_parameters(self) -> int:
        """Exact parameter count: kept blocks, embeddings, norm, head and translators."""
        return sum(p.numel() for p in self.parameters())

    # ---- export ------------------------------------------------------------------------------
    def save_pretrained(
        self,
        directory: str | Path,
        *,
        processor: Any | None = None,
        extra: dict | None = None,
        layout: str = "auto",
    ) -> Path:
        """Write the model, its plan and metadata (toast.json) and the processor to `directory`.

        `layout="auto"`: a plain Transformers checkpoint when every span passes its input on (identity,
        folded), which `transformers.AutoModel.from_pretrained` loads without toast; else the toast format,
        which Transformers refuses (load it with `CompressedModel.from_pretrained`, which loads both).
        """
        from safetensors.torch import save_file

        if layout not in ("auto", PLAIN, TOAST):
            raise ValueError(f"layout must be 'auto', 'plain' or 'toast', not {layout!r}")
        if self._home is not None:  # a dispatched model: written from a plain copy on the CPU
            return self._plain_copy().save_pretrained(directory, processor=processor, extra=extra, layout=layout)
        refusal = plain_refusal(self) if layout != TOAST else "layout='toast' asked for"
        plain = None
        if refusal is None:
            try:
                plain = plain_model(self)  # the source's Transformers class, fewer layers
            except ValueError as exc:  # a class whose weights the compressed model's parts do not cover
                refusal = str(exc)
        if layout == PLAIN and plain is None:
            raise ValueError(f"cannot save a plain Transformers checkpoint: {refusal}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "layout": PLAIN if plain is not None else TOAST,
            "family": self.family.name,
            "model_class": self.model_class,
            "head_kind": self.head_kind,
            "plan": {"num_blocks": self.plan.num_blocks, "spans": self.plan.to_json()},
        }
        if plain is not None:
            plain.save_pretrained(directory)
            meta["layers"] = list(self.plan.kept)  # layer i of the checkpoint is block layers[i] of the source
        else:
            meta["not_plain"] = refusal  # why Transformers cannot load it alone
            meta["source_config"] = save_toast_config(self.config, directory)
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        if self.classifier is not None:  # in model.safetensors (toast format), else in its own file
            c = self.classifier
            meta["classifier"] = {"in_features": c.in_features, "out_features": c.out_features}
            if plain is not None:
                weights = {k: v.detach().contiguous().cpu() for k, v in c.state_dict().items()}
                save_file(weights, str(directory / CLASSIFIER_FILE), metadata={"format": "pt"})
                meta["classifier"]["file"] = CLASSIFIER_FILE
        if self.sentence is not None:  # a sentence-transformers source: its modules beside a plain checkpoint
            written = write_sentence_transformer(directory, self.sentence, plain=plain is not None)
            meta["sentence_transformers"] = written
        meta.update({k: v for k, v in (extra or {}).items() if k not in meta})  # scores, source model, budgets
        (directory / "toast.json").write_text(json.dumps(meta, indent=2))
        if processor is not None:
            processor.save_pretrained(directory)
        return directory

    def _plain_copy(self) -> CompressedModel:
        """This model without accelerate's hooks: each module copied onto the CPU in turn (a dispatched block's
        offloaded weights read from CPU memory or disk), sharing nothing with this one."""

        def copied(module: nn.Module | None) -> nn.Module | None:
            if module is None:
                return None
            return (detached_copy(module) if is_dispatched(module) else copy.deepcopy(module)).cpu()

        return CompressedModel(
            config=self.config,
            family=self.family,
            plan=self.plan,
            embeddings=copied(self.embeddings),
            blocks={int(b): copied(block) for b, block in self.blocks.items()},
            translators={s: copied(self.translators[_span_key(s)]) for s in self.plan.spans},
            final_norm=copied(self.final_norm),
            head=copied(self.head),
            head_kind=self.head_kind,
            model_class=self.model_class,
            sentence=self.sentence,
            classifier=copied(self.classifier),
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> CompressedModel:
        """Load a saved compressed model without the original checkpoint."""
        import transformers
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "toast.json").is_file():
            raise UnsupportedModelError(f"{directory} is not a saved compressed model (no toast.json)")
        meta = json.loads((directory / "toast.json").read_text())
        plan = Plan.of(meta["plan"]["spans"], meta["plan"]["num_blocks"])
        family = get_family(meta["family"])
        plain = meta.get("layout") == PLAIN
        if plain:  # a Transformers checkpoint of the kept layers, in order
            skeleton = load_plain(directory, meta["model_class"])
        else:  # build the architecture with only as many blocks as are kept, then map them back
            small = family.kept_config(source_config(directory, meta), plan.kept)
            model_cls = getattr(transformers, meta["model_class"], None) or transformers.AutoModel
            if model_cls is transformers.AutoModel:
                skeleton = transformers.AutoModel.from_config(small)
            else:
                skeleton = model_cls(small)
        parts = family.parts(skeleton)
        blocks = dict(zip(plan.kept, parts.blocks))
        config = skeleton.config  # carries the attention implementation the blocks were built with
        config.num_hidden_layers = plan.num_blocks
        translators = {s: translator_class(s.kind).empty_module(int(config.hidden_size)) for s in plan.spans}
        state = None if plain else load_file(str(directory / "model.safetensors"))
        classifier = None
        if meta.get("classifier"):  # an exported probe on the pooled features: in model.safetensors, or beside
            shape = meta["classifier"]
            classifier = nn.Linear(shape["in_features"], shape["out_features"])
            if plain:
                classifier.load_state_dict(load_file(str(directory / CLASSIFIER_FILE)), strict=True)
        model = cls(
            config=config,
            family=family,
            plan=plan,
            embeddings=parts.embeddings,
            blocks=blocks,
            translators=translators,
            final_norm=parts.final_norm,
            head=parts.head,
            head_kind=meta["head_kind"],
            model_class=meta["model_class"],
            sentence=saved_sentence_pipeline(directory, meta),
            classifier=classifier,
        )
        if state is not None:
            model.load_state_dict(state, strict=True)
        return model.to(device=device, dtype=dtype).eval()


class ExportModule(nn.Module):
    """A compressed model as an exporter traces it: `forward` takes the family's inputs (by name, or in
    `family.input_names` order) and returns `family.export_forward`'s outputs. Made per family by `_export_class`,
    whose forward's signature names the inputs."""

    def __init__(self, model: CompressedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor):
        family = self.model.family
        return family.export_forward(self.model, self.model._inputs(args, inputs))


@functools.cache
def _export_class(names: tuple[str, ...]) -> type[ExportModule]:
    """An `ExportModule` whose forward's signature is `(self, <names>=None, …)`: torch.export reads the inputs'
    names from the signature (a `**inputs` one it cannot match to `dynamic_shapes`)."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind), *(inspect.Parameter(n, kind, default=None) for n in names)]

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor):
        return ExportModule.forward(self, *args, **inputs)

    forward.__signature__ = inspect.Signature(params)
    return type(f"ExportModule[{', '.join(names)}]", (ExportModule,), {"forward": forward})


class DecodeModule(nn.Module):
    """A causal LM's decoding step with its KV cache as tensors, as ONNX Runtime serves an LM: inputs `input_ids`
    `(B, n)` (new tokens) and, for each cache entry (`CompressedModel.cache_layers`), its keys and values so far
    `(B, kv_heads, past, head_dim)`; outputs the new tokens' `logits` and each entry's keys and values with them
    appended. A past of length 0 is a prefill, so one graph generates a whole sequence. Made per number of entries by
    `_decode_class` (torch.export reads the inputs from the signature).

    Every entry keeps all its tokens, a sliding-window layer's too (`graph_cache`): Transformers' own cache trims a
    sliding layer's entry to its window by a running length kept in Python, which a traced graph would fix at the
    length it was traced with. The sliding-window mask keeps each sliding layer's attention to its window, so the
    logits are the model's at any length; past the window a step reads more cached tokens than a trimmed cache holds
    (a latency timed there would count them: `OnnxRuntime.check_model` refuses it)."""

    def __init__(self, model: CompressedModel) -> None:
        super().__init__()
        if getattr(model.family, "layer_type", None) is None:
            raise UnsupportedModelError(f"{model.family.name} is not a causal LM: it has no decoding step")
        self.model = model
        self.layers = model.cache_layers()

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", *(f"past_key_values.{i}.{kv}" for i in self.layers for kv in ("key", "value"))]

    @property
    def output_names(self) -> list[str]:
        return ["logits", *(f"present.{i}.{kv}" for i in self.layers for kv in ("key", "value"))]

    def dynamic_shapes(self) -> dict[str, dict[int, Any]]:
        """The batch, new tokens and past tokens vary (torch.export's `dynamic_shapes`, by argument name)."""
        from torch.export import Dim

        batch, sequence, past = Dim("batch"), Dim("sequence"), Dim("past")
        kv = {f"past_{j}": {0: batch, 2: past} for j in range(2 * len(self.layers))}
        return {"input_ids": {0: batch, 1: sequence}, **kv}

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = graph_cache()
        for j, layer in enumerate(self.layers):
            cache.update(past[2 * j], past[2 * j + 1], layer)
        logits = self.model.decode_step(input_ids, cache)
        return (logits, *(t for i in self.layers for t in (cache.layers[i].keys, cache.layers[i].values)))

    def cache_tensors(self, cache: Any) -> list[torch.Tensor]:
        """The graph's past inputs from a cache the model filled (`decode_step` with a `graph_cache`): each entry's
        keys, values."""
        return [t for i in self.layers for t in (cache.layers[i].keys, cache.layers[i].values)]


def graph_cache() -> Any:
    """The KV cache a decoding-step graph carries (`DecodeModule`): a `DynamicCache` whose every entry keeps all its
    tokens, a sliding-window layer's too (its window is kept by the mask; no running length in Python to trim by)."""
    from transformers import DynamicCache

    return DynamicCache()  # no config: no sliding layers that trim themselves


@functools.cache
def _decode_class(entries: int) -> type[DecodeModule]:
    """A `DecodeModule` whose forward's signature is `(self, input_ids, past_0, …, past_<2 entries - 1>)`."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    names = ["input_ids", *(f"past_{j}" for j in range(2 * entries))]
    params = [inspect.Parameter("self", kind), *(inspect.Parameter(n, kind) for n in names)]

    def forward(self, *args: torch.Tensor, **named: torch.Tensor):
        return DecodeModule.forward(self, *args, *(named[n] for n in names[len(args) :]))

    forward.__signature__ = inspect.Signature(params)
    return type(f"DecodeModule[{entries}]", (DecodeModule,), {"forward": forward})
