"""demo-lm's latency in both modes, the latency table's estimate against the end-to-end measurement.

For prefill (a forward over `batch × seq` tokens) and decode (one new token per sequence after `seq` cached ones,
`CompressedModel.decode_step` with a `DynamicCache`), at batch 1 and 8: the table's estimate and the measured median
of the original and two plans, with the functions a run uses (`measure_latency_table`, `measure_end_to_end`; the
measured value is the median of 3 medians of 10). The plans' linear maps are identity matrices: timing does not depend
on their values. Prints one line per mode and batch.

    python bench/bench_lm_latency.py
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo-lm")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--plans", nargs="*", default=["2→5:linear, 7→8:linear", "2→8:identity"])
    args = p.parse_args(argv)
    from toast.models import CompressedModel, load_model
    from toast.search._latency import latency_inputs, measure_end_to_end, measure_latency_table
    from toast.spaces import Plan, translator_class

    loaded = load_model(args.model, device="cpu")
    L, d = loaded.num_blocks, loaded.hidden_size

    def fitted(plan: Plan) -> dict:
        out = {}
        for span in plan.spans:
            translator = translator_class(span.kind)()
            if translator_class(span.kind).needs_fit:  # the plans' affine kinds: the identity map
                translator.weight_, translator.bias_ = np.eye(d), np.zeros(d)
            out[span] = translator
        return out

    print(f"{args.model}, {torch.get_num_threads()} threads, float32")
    for mode in ("prefill", "decode"):
        for batch in (1, 8):
            table, _ = measure_latency_table(
                loaded, kinds=["identity", "linear"], batch_size=batch, seq_len=args.seq, mode=mode
            )
            inputs = latency_inputs(loaded, batch_size=batch, seq_len=args.seq)
            rows = []
            for text in ("", *args.plans):
                plan = Plan.parse(text, L) if text else Plan((), L)
                model = CompressedModel.from_model(loaded, plan, fitted(plan)).eval()
                estimate = table.estimate(plan)
                measured = float(np.median([measure_end_to_end(model, inputs, mode=mode) for _ in range(3)]))
                error = 100 * (estimate - measured) / measured
                rows.append(f"{text or 'original'}: est {estimate:.3f} ms, measured {measured:.3f} ms ({error:+.0f}%)")
            print(f"{mode} batch {batch} x {args.seq}: " + " | ".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
