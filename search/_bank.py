"""The fitted translators of a run, one per (span, kind), fitted from the calibration statistics on first use."""

from __future__ import annotations

from toast.spaces import Plan, Span, Translator, fit_span, translator_class

from .capture import CapturedActivations


class TranslatorBank:
    """Fitted translators, one per (span, kind), from the calibration statistics; fitted on first use."""

    def __init__(self, captured: CapturedActivations) -> None:
        self.captured = captured
        self._fitted: dict[Span, Translator] = {}

    def get(self, plan: Plan) -> dict[Span, Translator]:
        """The fitted translators of `plan`'s spans; kinds that need no fit are left to the compressed model."""
        out = {}
        for span in plan.spans:
            if not translator_class(span.kind).needs_fit:
                continue
            if span not in self._fitted:
                self._fitted[span] = fit_span(self.captured.stats, span)
            out[span] = self._fitted[span]
        return out
