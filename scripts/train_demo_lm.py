"""Train the offline demo LM: a small Llama on the Python language reference, saved to `models/demo-lm/`.

    python scripts/train_demo_lm.py --threads 2      # reproduces the shipped checkpoint

The model is a Hugging Face `LlamaForCausalLM` built from a `LlamaConfig` (random init, no download), 12 blocks
deep and a few MB small, so the search has redundant depth to find and the checkpoint ships in the package. Data:
the offline corpus `python-docs` (`load_split("python-docs", ...)`, the topics of `pydoc_data.topics`): its
`train` split trains the byte-level BPE tokenizer (`tokenizers`, saved as a `PreTrainedTokenizerFast` that puts
`<|bos|>` before a text, as Llama's does) and the model; every eighth train document is held out as a validation
slice (`--val-every`), watched while training; the `test` split is only reported, never used to select anything.
Sequences are packed as the search packs them (`packed_tokens`: each document followed by `<|eos|>`, each sequence
`<|bos|>` then 255 tokens); each epoch cuts the training stream into windows at a new random offset.
Training: AdamW, linear warm-up then cosine decay, seeded, float32, on the CPU (the result depends on the thread
count). The last epoch is saved.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "models" / "demo-lm"
CORPUS = "python-docs"
SEQ_LEN = 256  # the search's default `--seq-len`
BOS, EOS = "<|bos|>", "<|eos|>"
ARCH = dict(
    hidden_size=128,
    num_hidden_layers=12,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    hidden_act="silu",
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    attention_dropout=0.0,
)


def corpus_texts(split: str) -> list[str]:
    """The documents of a split of the offline corpus, as the search reads them."""
    from toast.data import load_split

    data = load_split(CORPUS, split)
    return [str(t) for t in data.dataset[data.input_column] if t is not None and str(t).strip()]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`: `<|bos|>` (id 0) before every encoded text, `<|eos|>` (id 1)
    the end of a document and the padding, as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=ARCH["max_position_embeddings"],
    )


def build_model(tokenizer, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **ARCH,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def token_stream(texts: list[str], tokenizer) -> torch.Tensor:
    """All documents end to end, each followed by `<|eos|>` (the body of `packed_tokens`'s sequences)."""
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    return torch.as_tensor(stream, dtype=torch.long)


def windows(stream: torch.Tensor, offset: int, bos_id: int, seq_len: int = SEQ_LEN) -> torch.Tensor:
    """`stream[offset:]` cut into full sequences of `<|bos|>` and `seq_len - 1` tokens (the rest dropped)."""
    body = seq_len - 1
    n = (len(stream) - offset) // body
    rows = stream[offset : offset + n * body].view(n, body)
    return torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), rows], dim=1)


@torch.no_grad()
def perplexity(model, rows, batch_size: int = 16) -> float:
    """exp of the mean next-token cross-entropy over every predicted position of `rows` ((n, seq_len) ids)."""
    model.eval()
    rows = torch.as_tensor(rows, dtype=torch.long)
    nll, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        ids = rows[start : start + batch_size]
        logits = model(input_ids=ids).logits[:, :-1]
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"))
        count += ids[:, 1:].numel()
    return math.exp(nll / count)


def train(args: argparse.Namespace) -> dict:
    from transformers import get_cosine_schedule_with_warmup

    from toast.data import packed_tokens

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    texts = corpus_texts("train")
    held = [args.val_every > 0 and i % args.val_every == args.val_every - 1 for i in range(len(texts))]
    fit_texts = [t for t, h in zip(texts, held) if not h]
    val_texts = [t for t, h in zip(texts, held) if h]
    tokenizer = train_tokenizer(fit_texts, args.vocab_size)
    stream = token_stream(fit_texts, tokenizer)
    val_rows = packed_tokens(val_texts, tokenizer, SEQ_LEN) if val_texts else None
    test_rows = packed_tokens(corpus_texts("test"), tokenizer, SEQ_LEN)
    model = build_model(tokenizer, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"Llama: {ARCH['num_hidden_layers']} blocks, hidden {ARCH['hidden_size']}, {ARCH['num_attention_heads']} heads "
        f"({ARCH['num_key_value_heads']} KV), MLP {ARCH['intermediate_size']}, vocab {len(tokenizer)}; "
        f"{n_params:,} parameters"
    )
    print(
        f"{CORPUS}: {len(fit_texts)} train documents ({len(stream):,} tokens), {len(val_texts)} validation "
        f"({0 if val_rows is None else len(val_rows)} sequences), test {len(test_rows)} sequences of {SEQ_LEN}; "
        f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}, {args.threads} thread(s)"
    )

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    steps_per_epoch = math.ceil(len(windows(stream, SEQ_LEN - 2, tokenizer.bos_token_id)) / args.batch_size)
    total = steps_per_epoch * args.epochs
    schedule = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=round(args.warmup_fraction * total), num_training_steps=total
    )
    g = torch.Generator().manual_seed(args.seed)

    start, cpu_start = time.perf_counter(), time.process_time()
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        offset = int(torch.randint(0, SEQ_LEN - 1, (1,), generator=g))
        rows = windows(stream, offset, tokenizer.bos_token_id)
        rows = rows[torch.randperm(len(rows), generator=g)][: steps_per_epoch * args.batch_size]
        loss_sum, seen = 0.0, 0
        for i in range(0, len(rows), args.batch_size):
            ids = rows[i : i + args.batch_size]
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(ids)
            seen += len(ids)
        row = {
            "epoch": epoch,
            "loss": loss_sum / seen,
            "val_ppl": None if val_rows is None else perplexity(model, val_rows),
            "test_ppl": perplexity(model, test_rows),
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        val = "" if row["val_ppl"] is None else f"  validation ppl {row['val_ppl']:8.3f}"
        print(
            f"epoch {epoch:3d}  loss {row['loss']:.4f}  (ppl {math.exp(row['loss']):8.3f}){val}  "
            f"test ppl {row['test_ppl']:8.3f}  {row['seconds']:6.1f} s",
            flush=True,
        )
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    test_ppl = perplexity(model, test_rows)
    print(
        f"final: test perplexity {test_ppl:.3f} ({len(test_rows)} sequences of {SEQ_LEN})  training {train_seconds:.0f} s"
    )
    return {
        "model": model,
        "tokenizer": tokenizer,
        "params": n_params,
        "train_tokens": len(stream),
        "n_train_docs": len(fit_texts),
        "n_val_docs": len(val_texts),
        "n_val_seqs": 0 if val_rows is None else len(val_rows),
        "n_test_docs": len(corpus_texts("test")),
        "n_test_seqs": len(test_rows),
        "val_ppl": history[-1]["val_ppl"],
        "test_ppl": test_ppl,
        "train_seconds": train_seconds,
        "cpu_seconds": cpu_seconds,
        "history": history,
    }


README = """\
# demo-lm: a small Llama trained on the Python language reference

The offline demo language model of toast-search (`--model demo-lm`, whose default dataset is the offline corpus
`python-docs`): a Hugging Face `LlamaForCausalLM` trained by this project, from random initialisation, on the
topics of the Python language reference that ship with every Python (`pydoc_data.topics`, the text `help("if")`
prints). It is a real trained decoder, {blocks} blocks deep, whose blocks carry learned structure, so the search
has redundant depth to find without any download.

| | |
| --- | --- |
| architecture | Llama, {blocks} blocks, hidden {hidden}, {heads} heads ({kv_heads} key-value heads), MLP {mlp} (SiLU-gated), RoPE, RMSNorm, tied embeddings, max {max_pos} positions |
| parameters | {params:,} (float32, `model.safetensors`, {size_mb:.1f} MB) |
| tokenizer | byte-level BPE, {vocab} tokens, trained on the training documents (`tokenizers`); `{bos}` (id {bos_id}) before every text, `{eos}` (id {eos_id}) after every document and as padding |
| data | `load_split("{corpus}", ...)`: {n_train} train documents ({train_tokens:,} tokens) trained on, {n_val} more train documents (every {val_every}th) held out for validation ({n_val_seqs} sequences), the test split ({n_test} documents, {n_test_seqs} sequences) never trained on |
| sequences | packed as the search packs them: each document followed by `{eos}`, each sequence `{bos}` then {body} tokens ({seq_len} in all); a new random offset into the training stream each epoch |
| training | {epochs} epochs, batch {batch}, AdamW lr {lr:g} (betas 0.9, 0.95), weight decay {wd:g}, {warmup:.0%} linear warm-up then cosine, gradient clip 1.0, seed {seed}, {threads} CPU thread(s), {minutes:.1f} min wall time (the fastest epoch {fastest:.1f} s) |
| validation perplexity | {val_ppl} |

Held-out perplexity: {test_ppl:.3f} on the `{corpus}` test split ({n_test_seqs} sequences of {seq_len} tokens, \
packed by `packed_tokens`), last epoch (no selection on test).

Reproduce (about {alone_minutes:.0f} minutes on a 2-core CPU that nothing else uses, {epochs} × the fastest epoch; \
exact bits may differ across CPUs, thread counts, Python versions (the corpus is the running Python's docs) and \
library versions):

    {command}
"""


def _command(args: argparse.Namespace) -> str:
    return (
        f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr:g} --weight-decay {args.weight_decay:g} "
        f"--warmup-fraction {args.warmup_fraction:g} --vocab-size {args.vocab_size} --val-every {args.val_every} "
        f"--seed {args.seed} --threads {args.threads}"
    )


def training_log(result: dict, args: argparse.Namespace) -> dict:
    """What `training_log.json` records: the settings, the command, the data, the figures, the versions, each epoch."""
    import tokenizers
    import transformers

    epoch_seconds = [
        b["seconds"] - a["seconds"] for a, b in zip([{"seconds": 0.0}, *result["history"]], result["history"])
    ]
    return {
        "settings": dict(vars(args), out=_shown(Path(args.out))),
        "command": f"python scripts/train_demo_lm.py {_command(args)}",
        "corpus": CORPUS,
        "seq_len": SEQ_LEN,
        "params": result["params"],
        "train_documents": result["n_train_docs"],
        "train_tokens": result["train_tokens"],
        "val_documents": result["n_val_docs"],
        "val_sequences": result["n_val_seqs"],
        "test_documents": result["n_test_docs"],
        "test_sequences": result["n_test_seqs"],
        "val_ppl": result["val_ppl"],
        "test_ppl": result["test_ppl"],
        "train_seconds": result["train_seconds"],
        "cpu_seconds": result["cpu_seconds"],  # CPU time of all threads
        # training and scoring one epoch, at its fastest: times `epochs`, the wall time on a CPU nothing else uses
        "fastest_epoch_seconds": min(epoch_seconds),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "epochs": result["history"],
    }


def render_readme(log: dict, config, tokenizer, size_bytes: int) -> str:
    """The model card, from the training log, the model's config and its tokenizer."""
    settings = log["settings"]
    return README.format(
        blocks=config.num_hidden_layers,
        hidden=config.hidden_size,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        mlp=config.intermediate_size,
        max_pos=config.max_position_embeddings,
        params=log["params"],
        size_mb=size_bytes / 2**20,
        vocab=len(tokenizer),
        bos=tokenizer.bos_token,
        eos=tokenizer.eos_token,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        corpus=log["corpus"],
        n_train=log["train_documents"],
        train_tokens=log["train_tokens"],
        n_val=log["val_documents"],
        val_every=settings["val_every"],
        n_val_seqs=log["val_sequences"],
        n_test=log["test_documents"],
        n_test_seqs=log["test_sequences"],
        body=log["seq_len"] - 1,
        seq_len=log["seq_len"],
        epochs=settings["epochs"],
        batch=settings["batch_size"],
        lr=settings["lr"],
        wd=settings["weight_decay"],
        warmup=settings["warmup_fraction"],
        seed=settings["seed"],
        threads=settings["threads"],
        minutes=log["train_seconds"] / 60,
        fastest=log["fastest_epoch_seconds"],
        alone_minutes=log["fastest_epoch_seconds"] * settings["epochs"] / 60,
        val_ppl="none held out" if log["val_ppl"] is None else f"{log['val_ppl']:.3f}",
        test_ppl=log["test_ppl"],
        command=log["command"],
    )


def save(result: dict, args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = result["model"], result["tokenizer"]
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 64
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _portable_tokenizer_files(out, tokenizer)
    log = training_log(result, args)
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    readme = render_readme(log, model.config, tokenizer, (out / "model.safetensors").stat().st_size)
    (out / "README.md").write_text(readme)
    for f in out.iterdir():  # save_pretrained may write 0600 files: the package data must be world-readable
        f.chmod(0o644)
    print(f"saved to {out}")


def _portable_tokenizer_files(out: Path, tokenizer) -> None:
    """Name the class every transformers >= 4.56 knows (5.x writes its own `TokenizersBackend`, which 4.x lacks) and
    write `special_tokens_map.json` as 4.x does."""
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special = {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (no machine-specific paths in the log)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: models/demo-lm)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="share of the steps warming up (default 0.05)")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument(
        "--val-every",
        type=int,
        default=8,
        help="hold out every n-th train document for validation (0: none; default 8)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the result depends on it; default 2)")
    args = p.parse_args(argv)
    problems = [
        f"--{k.replace('_', '-')} must be positive"
        for k in ("epochs", "batch_size", "lr", "threads", "vocab_size")
        if getattr(args, k) <= 0
    ]
    if args.val_every < 0:
        problems.append("--val-every must be 0 or positive")
    if not 0 <= args.warmup_fraction < 1:
        problems.append("--warmup-fraction must be in [0, 1)")
    if problems:
        p.error("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    save(train(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
