"""Reaching the Hugging Face Hub: one quick check, and offline mode for the call when it does not answer.

Without a connection, `from_pretrained` and `load_dataset` retry each request five times with backoff (about 28 s
and five `Retrying in …` lines) before failing. `hub_access()` asks the Hub once per process, with a short timeout
and no retry, through `huggingface_hub`'s own HTTP client (so a proxy it would use is used); when that fails, the
libraries run the call in their offline mode: a model or dataset already in the local cache still loads, anything
else fails at once with their "cannot connect" error, which the callers turn into one line.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["HUB_TIMEOUT_S", "hub_access", "hub_unreachable"]

HUB_TIMEOUT_S = 3.0  # seconds the one check waits for the Hub to answer


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (one phrase), or None when it answers or offline mode is already on (then the
    libraries need no help). Asked once per process."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)  # any answer, even an error status, will do
    except Exception as exc:  # httpx's transport errors (the client's own module), OSError, timeouts
        return f"{constants.ENDPOINT} did not answer in {HUB_TIMEOUT_S:g} s: {type(exc).__name__}"
    return None


@contextmanager
def hub_access(needed: bool = True) -> Iterator[str | None]:
    """Around a `from_pretrained` / `load_dataset` that may reach the Hub (`needed`): when the Hub cannot be reached,
    `huggingface_hub`, `transformers` and `datasets` are put in offline mode for the call (restored after); yields
    why the Hub was not reached (None: it was, or the call needs no Hub)."""
    why = hub_unreachable() if needed else None
    if why is None:
        yield None
        return
    import sys

    from huggingface_hub import constants

    saved = [(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)]
    config = getattr(sys.modules.get("datasets"), "config", None)  # datasets reads its own copy of the flag
    if config is not None:
        saved += [(config, name, getattr(config, name)) for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")]
    for module, name, _ in saved:
        setattr(module, name, True)
    try:
        yield why
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
