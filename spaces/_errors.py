"""The one base exception of toast-search, and the errors every package shares."""

from __future__ import annotations


class ToastError(Exception):
    """Base of every error toast-search raises on purpose; the CLI prints it as one line, exit 2."""


class PlanError(ToastError, ValueError):
    """A plan or span breaks a rule; the message names the rule."""


class NotFittedError(ToastError, RuntimeError):
    """A translator was used before `fit`."""


class MissingDependencyError(ToastError, ImportError):
    """An optional package is needed for what was asked; the message says what to install."""
