"""Keep the terminal for our own output: library progress bars, notices and warnings off."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Keep stdout for our own output: no per-file progress bars, notices or warnings from libraries."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*experimental.*")
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:
        pass
