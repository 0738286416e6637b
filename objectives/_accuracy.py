"""The `accuracy` objective: top-1 test accuracy of a linear probe on the features, or of the model's own head."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._objectives import Display, Objective, Role
from ._probes import probe_accuracy
from ._registry import register_objective

if TYPE_CHECKING:
    from ._trial import TrialOutputs

__all__ = ["ACCURACY", "HEADS", "LOGIT_HEADS", "Accuracy"]

#: The heads whose `eval_logits` score accuracy (the model's own classifier, CLIP's zero-shot classes); else a probe.
LOGIT_HEADS = ("original", "zero-shot")
#: every head accuracy is scored with: a linear probe on the features, or the logits of a head above
HEADS = ("probe", *LOGIT_HEADS)


class Accuracy(Objective):
    """Accuracy in percent: a probe (`trial.probe`) fitted on the probe features, tested on the evaluation
    features; with `head="original"`, the argmax of the model's logits (with `head="zero-shot"`, of the cosine
    similarities of a CLIP vision tower's projected output with the class-name embeddings). `accuracy_std`
    when the probe runs over several seeds (Adam)."""

    def inputs(self, *, head: str = "probe") -> frozenset[str]:
        """The logits and labels with the original head; else both feature sets, the labels and the probe protocol."""
        if head in LOGIT_HEADS:
            return frozenset({"labels", "eval_logits"})
        return frozenset({"labels", "eval_features", "probe_features", "probe"})

    def standard_error(self, value: float, samples: int) -> float | None:
        """The binomial standard error of a percentage over `samples` test samples, the rate shrunk by one right and
        one wrong answer (so that 100% on a subset is not certain)."""
        if samples < 1:
            return None
        right = min(max(value / 100, 0.0), 1.0) * samples
        rate = (right + 1) / (samples + 2)
        return 100 * math.sqrt(rate * (1 - rate) / samples)

    def compute(self, trial: TrialOutputs) -> dict[str, Any]:
        """`{"accuracy": %}`, plus `accuracy_std` over the probe's seeds when there are several."""
        if trial.head in LOGIT_HEADS:
            logits = trial.eval_logits
            return {self.name: float((logits.argmax(1) == trial.eval_labels).mean() * 100)}
        test, train = trial.eval_features, trial.probe_features
        with trial.timed("probe"):
            result = probe_accuracy(train, trial.probe_labels, test, trial.eval_labels, probe=trial.probe)
        out: dict[str, Any] = {self.name: result.mean}
        if len(result.per_seed) > 1:
            out["accuracy_std"] = result.std
        return out


ACCURACY = register_objective(
    Accuracy(
        name="accuracy",
        direction="maximize",
        unit="%",
        description="top-1 test accuracy of a linear probe on the pooled features (or of the original head)",
        display=Display(
            title="accuracy %",
            axis="accuracy (%)",
            name="accuracy",
            unit="%",
            fmt="{:.2f}",
            headline=True,
            delta="Δ pts",
        ),
        fields=("accuracy_std",),
        field_descriptions={
            "accuracy_std": "standard deviation of accuracy over the probe's seeds (--probe adam: 3 seeds) (%)",
            "accuracy_search": "accuracy as the search measured it (its evaluation samples) before the front was "
            "re-scored on the whole test split (%)",
        },
        role=Role.ACCURACY,
        worst=0.0,  # no sample right
        rescored=True,
        search_field="accuracy_search",
    )
)
