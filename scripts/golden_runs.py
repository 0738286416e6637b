"""Nine small searches whose outputs must not change under a refactor: record them, then compare two records.

    python scripts/golden_runs.py record /tmp/golden/before      # on the old tree
    python scripts/golden_runs.py record /tmp/golden/after       # on the new tree
    python scripts/golden_runs.py compare /tmp/golden/before /tmp/golden/after

Each search writes into its own run directory with a cache of its own (a cold start every time), through the
installed `toast-search` command. `compare` says, file by file, whether `trials.csv`, `front.json` and the
captured stdout are byte-identical once what a clock decides is masked: the `seconds` column, every latency value
and the run-directory prefix. The tiny models and the made-up dataset are built once under `<record>/../fixtures`
(random weights from fixed seeds), so two records compare the same inputs.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

SMALL = ["--calib-samples", "16", "--probe-samples", "30", "--eval-samples", "20", "--device", "cpu"]


def _fixtures(root: Path) -> dict[str, Path]:
    """Tiny DINOv2 and CLIP vision models and a three-colour image dataset, built once."""
    out = {"dinov2": root / "dinov2", "clip": root / "clip", "colours": root / "colours"}
    if all(p.exists() for p in out.values()):
        return out
    import datasets
    import numpy as np
    import torch
    import transformers as T
    from PIL import Image

    small = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
    image = dict(image_size=32, patch_size=8, num_channels=3)
    for name, build in (
        ("dinov2", lambda: T.Dinov2Model(T.Dinov2Config(**small, **image))),
        ("clip", lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**small, **image))),
    ):
        torch.manual_seed(0)
        build().save_pretrained(out[name])
        T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out[name])
    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 3, n)
        images = []
        for y in labels:
            arr = rng.integers(0, 200, (16, 16, 3)).astype(np.int32)
            arr[:, :, y] += 10
            images.append(Image.fromarray(arr.astype(np.uint8)))
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
        return datasets.Dataset.from_dict({"img": images, "label": labels.tolist()}, features=feats)

    datasets.DatasetDict({"train": make(60), "test": make(40)}).save_to_disk(str(out["colours"]))
    return out


def _searches(fx: dict[str, Path]) -> dict[str, list[str]]:
    return {
        "1-demo": ["--trials", "40"],
        "2-nsga2-params": ["--sampler", "nsga2", "--objectives", "accuracy,params", "--budget-params", "0.2"]
        + ["--trials", "20"],
        "3-kinds-sequential": ["--translators", "identity,linear,ridge,lowrank:8,folded", "--refit", "sequential"]
        + ["--trials", "20", "--budget-fraction", "0.6"],
        "4-plans-original-head": ["--plan", "2→4:identity", "--plan", "1→2:linear,3→5:linear", "--head", "original"],
        "5-ray": ["--runner", "ray", "--trials", "6", "--max-concurrent", "1", "--cpus-per-trial", "1"],
        "6-dinov2-exhaustive": ["--model", str(fx["dinov2"]), "--dataset", str(fx["colours"]), *SMALL]
        + ["--sampler", "exhaustive", "--max-removed", "2", "--budget-fraction", "0.8"],
        "7-clip-mlp": ["--model", str(fx["clip"]), "--dataset", str(fx["colours"]), *SMALL]
        + ["--translators", "identity,mlp", "--trials", "6", "--budget-fraction", "0.8"],
        "8-minilm": [
            "--model",
            "all-minilm-l6-v2",
            "--dataset",
            "docstrings",
            "--objectives",
            "accuracy,fidelity,gflops",
        ]
        + ["--trials", "8", "--budget-fraction", "0.7"],
        "9-latency": ["--objectives", "accuracy,gflops,latency", "--trials", "10", "--latency-batch-size", "1"],
    }


def record(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fx = _fixtures(directory.parent / "fixtures")
    for name, args in _searches(fx).items():
        run = directory / name
        command = ["toast-search", *args, "--out", str(run), "--cache-dir", str(directory / "cache" / name)]
        command += ["--no-progress"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        (directory / f"{name}.stdout").write_text(done.stdout)
        (directory / f"{name}.stderr").write_text(done.stderr)
        print(f"{name}: exit {done.returncode}, {time.perf_counter() - start:.0f} s", flush=True)


_CLOCK_COLUMNS = re.compile(r"seconds|latency|time", re.IGNORECASE)


def _masked_csv(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    masked = [i for i, c in enumerate(rows[0]) if _CLOCK_COLUMNS.search(c)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        writer.writerow(["*" if i in masked else v for i, v in enumerate(row)])
    return out.getvalue()


def _masked_json(value):
    if isinstance(value, dict):
        return {k: "*" if _CLOCK_COLUMNS.search(k) else _masked_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_json(v) for v in value]
    return value


#: Public paths the refactor of issue 21 renamed on purpose (a printed hint names the class's new home).
RENAMED = {"toast.search.CompressedModel": "toast.models.CompressedModel"}


def _masked_table(lines: list[str]) -> list[str]:
    """The front table's latency columns (their spans read off the dashes under the header) as `*`."""
    out = list(lines)
    for i in range(1, len(lines)):
        if not re.fullmatch(r"-+( +-+)*", lines[i]) or "latency" not in lines[i - 1]:
            continue
        spans = [m.span() for m in re.finditer(r"-+", lines[i])]
        masked = [s for s in spans if "latency" in lines[i - 1][s[0] : s[1]]]
        j = i + 1
        while j < len(lines) and lines[j].strip() and not lines[j].startswith("chosen"):
            row = list(lines[j].ljust(spans[-1][1]))
            for a, b in masked:
                row[a:b] = "*" * (b - a)
            out[j] = "".join(row).rstrip()
            j += 1
    return out


def _masked_stdout(text: str, run: Path) -> str:
    text = text.replace(str(run.parent), "<record>")
    for old, new in RENAMED.items():
        text = text.replace(old, new)
    # a latency column's figures and a measured time: a clock's, not the search's
    text = "\n".join(_masked_table(text.split("\n")))
    return re.sub(r"\d+(\.\d+)? ?(ms|s)\b", "<time>", text)


def _read(record: Path, name: str, label: str) -> str:
    """One output of one search, what a clock decides masked."""
    if label == "trials.csv":
        return _masked_csv((record / name / "trials.csv").read_text())
    if label == "front.json":
        front = _masked_json(json.loads((record / name / "front.json").read_text()))
        return json.dumps(front).replace(str(record), "<record>")
    return _masked_stdout((record / f"{name}.stdout").read_text(), record / name)


def compare(before: Path, after: Path) -> int:
    bad = 0
    fx = _fixtures(before.parent / "fixtures")
    for name in _searches(fx):
        for label in ("trials.csv", "front.json", "stdout"):
            try:
                same = _read(before, name, label) == _read(after, name, label)
            except FileNotFoundError as error:
                same, label = False, f"{label} ({error.filename} missing)"
            bad += not same
            print(f"{name:24s} {label:12s} {'identical' if same else 'DIFFERS'}")
    print("all identical" if not bad else f"{bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["record"]:
        record(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["compare"]:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
