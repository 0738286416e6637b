"""Train the offline demo model: a small ViT on scikit-learn's bundled digits, saved to `models/demo/`.

    python scripts/train_demo_vit.py                 # reproduces the shipped checkpoint

The model is a Hugging Face `ViTForImageClassification` built from a `ViTConfig` (random init, no
download). Data: the project's own fixed split of `load_digits` (`load_split("digits", ...)`, 1,347
train / 450 test), so the test images are never trained on and the search scores the same ones.
Preprocessing is the saved `ViTImageProcessor` itself (8×8 → 32×32 bilinear, RGB, mean/std 0.5),
run once over the training images; augmentation (random affine: rotation, scale, shear, ±2 px
shifts; random erasing) is applied to the processed tensors with torch ops, each epoch anew.
Training: AdamW, linear warm-up then cosine decay, label smoothing, seeded, one CPU thread by
default (the result depends on the thread count). The last epoch is saved; the test split is only
reported, never used to select anything.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "models" / "demo"
IMAGE_SIZE = 32
ARCH = dict(
    image_size=IMAGE_SIZE,
    patch_size=4,  # 8×8 patches of 4×4 px: one original digit pixel each, 64 tokens + [CLS]
    num_channels=3,
    hidden_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=256,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def build_model(seed: int):
    from transformers import ViTConfig, ViTForImageClassification

    labels = [str(d) for d in range(10)]
    config = ViTConfig(
        **ARCH,
        num_labels=10,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    torch.manual_seed(seed)
    return ViTForImageClassification(config)


def build_processor():
    from PIL import Image
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        resample=Image.BILINEAR,
    )


def processed_split(split: str, processor) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a digits split through the processor, as the search sees them: (N, 3, 32, 32), (N,)."""
    from toast.data import iter_batches, load_split

    data = load_split("digits", split)
    pixels = [inputs["pixel_values"] for _, inputs in iter_batches(data, range(len(data)), processor, 256)]
    return torch.cat(pixels).float(), torch.as_tensor(data.labels, dtype=torch.long)


def augment(
    x: torch.Tensor, g: torch.Generator, *, shift_px: float = 2.0, degrees: float = 12.0, erase_p: float = 0.25
) -> torch.Tensor:
    """Random affine (rotation, scale 0.9-1.1, shear, ±`shift_px` shifts) and random erasing.

    `x` is normalized to [-1, 1] with -1 the background: the warp runs on `x + 1` so that what
    comes in from outside the image is background, and erased boxes are filled with background.
    """
    n, _, h, w = x.shape
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    angle = u(-degrees, degrees) * math.pi / 180
    scale = u(0.9, 1.1)
    shear = u(-0.15, 0.15)
    tx, ty = u(-1, 1) * 2 * shift_px / w, u(-1, 1) * 2 * shift_px / h  # affine_grid units: the image spans [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    erase = torch.rand(n, generator=g) < erase_p
    for i in torch.nonzero(erase).flatten().tolist():
        eh, ew = (int(v) for v in torch.randint(4, 11, (2,), generator=g))
        top, left = (
            int(torch.randint(0, h - eh + 1, (1,), generator=g)),
            int(torch.randint(0, w - ew + 1, (1,), generator=g)),
        )
        out[i, :, top : top + eh, left : left + ew] = -1.0
    return out


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    hits = 0
    for start in range(0, len(x), batch_size):
        logits = model(pixel_values=x[start : start + batch_size]).logits
        hits += int((logits.argmax(-1) == y[start : start + batch_size]).sum())
    return hits / len(x)


def train(args: argparse.Namespace) -> dict:
    from transformers import get_cosine_schedule_with_warmup

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    processor = build_processor()
    x_train, y_train = processed_split("train", processor)
    x_test, y_test = processed_split("test", processor)
    model = build_model(args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"ViT: {ARCH['num_hidden_layers']} blocks, hidden {ARCH['hidden_size']}, {ARCH['num_attention_heads']} heads, "
        f"MLP {ARCH['intermediate_size']}, patch {ARCH['patch_size']} at {IMAGE_SIZE} px; {n_params:,} parameters"
    )
    print(
        f"digits: {len(x_train)} train, {len(x_test)} test; {args.epochs} epochs, batch {args.batch_size}, seed {args.seed}, {args.threads} thread(s)"
    )

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.999),
    )
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    schedule = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=steps_per_epoch * args.warmup_epochs, num_training_steps=total
    )
    g = torch.Generator().manual_seed(args.seed)

    start = time.perf_counter()
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=g)
        seen = hits = 0
        loss_sum = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            xb, yb = augment(x_train[idx], g), y_train[idx]
            logits = model(pixel_values=xb).logits
            loss = F.cross_entropy(logits, yb, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            seen += len(idx)
            hits += int((logits.argmax(-1) == yb).sum())
            loss_sum += float(loss.detach()) * len(idx)
        test_acc = accuracy(model, x_test, y_test)
        row = {
            "epoch": epoch,
            "loss": loss_sum / seen,
            "train_aug_acc": hits / seen,
            "test_acc": test_acc,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        print(
            f"epoch {epoch:3d}  loss {row['loss']:.4f}  train (augmented) {100 * row['train_aug_acc']:6.2f}%  "
            f"test {100 * test_acc:6.2f}%  {row['seconds']:6.1f} s",
            flush=True,
        )
    train_seconds = time.perf_counter() - start
    train_acc, test_acc = accuracy(model, x_train, y_train), accuracy(model, x_test, y_test)
    print(
        f"final: train {100 * train_acc:.2f}%  test {100 * test_acc:.2f}% ({round(test_acc * len(x_test))}/{len(x_test)})  "
        f"training {train_seconds:.0f} s"
    )
    return {
        "model": model,
        "processor": processor,
        "params": n_params,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "train_seconds": train_seconds,
        "history": history,
    }


README = """\
# demo-vit: a small ViT trained on scikit-learn's digits

The offline demo model of toast-search (`--model demo-vit --dataset digits`):
a Hugging Face `ViTForImageClassification` trained by this project, from random initialisation, on
the 8×8 handwritten digits that ship inside scikit-learn (`sklearn.datasets.load_digits`). It is a
real trained transformer whose blocks carry learned structure, so the search has something to
compress without any download.

| | |
| --- | --- |
| architecture | ViT, {blocks} blocks, hidden {hidden}, {heads} heads, MLP {mlp}, patch {patch} at {size}×{size} px ({tokens} patches + [CLS]), 10 labels "0"…"9" |
| parameters | {params:,} (float32, `model.safetensors`) |
| data | the project's fixed digits split (`load_split("digits", ...)`): {n_train} train, {n_test} test; test never trained on |
| preprocessing | `preprocessor_config.json`: 8×8 → {size}×{size} bilinear, RGB, mean/std 0.5 (identical in training and search) |
| augmentation | random affine (rotation ±12°, scale 0.9–1.1, shear, ±2 px shifts) and random erasing, torch ops |
| training | {epochs} epochs, batch {batch}, AdamW lr {lr:g}, weight decay {wd:g}, {warmup} warm-up epochs then cosine, label smoothing {ls:g}, seed {seed}, {threads} CPU thread(s), {minutes:.1f} min |
| train accuracy | {train_pct:.2f}% |

Test accuracy: {test_pct:.2f}% ({test_hits}/{n_test}) with the model's own head, last epoch (no selection on test).

Reproduce (about {minutes:.0f} minutes on a 2-core CPU; exact bits may differ across CPUs and library versions):

    python scripts/train_demo_vit.py --epochs {epochs} --seed {seed} --threads {threads}
"""


def save(result: dict, args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = result["model"]
    model.save_pretrained(out, safe_serialization=True)
    result["processor"].save_pretrained(out)
    cfg = model.config
    (out / "README.md").write_text(
        README.format(
            blocks=cfg.num_hidden_layers,
            hidden=cfg.hidden_size,
            heads=cfg.num_attention_heads,
            mlp=cfg.intermediate_size,
            patch=cfg.patch_size,
            size=cfg.image_size,
            tokens=(cfg.image_size // cfg.patch_size) ** 2,
            params=result["params"],
            n_train=result["n_train"],
            n_test=result["n_test"],
            epochs=args.epochs,
            batch=args.batch_size,
            lr=args.lr,
            wd=args.weight_decay,
            warmup=args.warmup_epochs,
            ls=args.label_smoothing,
            seed=args.seed,
            threads=args.threads,
            minutes=result["train_seconds"] / 60,
            train_pct=100 * result["train_acc"],
            test_pct=100 * result["test_acc"],
            test_hits=round(result["test_acc"] * result["n_test"]),
        )
    )
    settings = dict(vars(args), out=_shown(out))
    history = {
        "settings": settings,
        "train_acc": result["train_acc"],
        "test_acc": result["test_acc"],
        "epochs": result["history"],
    }
    (out / "training_log.json").write_text(json.dumps(history, indent=1) + "\n")
    for f in out.iterdir():  # save_pretrained may write 0600 files: the package data must be world-readable
        f.chmod(0o644)
    print(f"saved to {out}")


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (no machine-specific paths in the log)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: models/demo)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the result depends on it; default 1)")
    args = p.parse_args(argv)
    problems = [
        f"--{k.replace('_', '-')} must be positive"
        for k in ("epochs", "batch_size", "lr", "threads")
        if getattr(args, k) <= 0
    ]
    if problems:
        p.error("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    save(train(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
