"""A latency table as a portable file: measured on the deployment machine (`toast-search latency-table`), searched
against anywhere (`toast-search --latency-table FILE`).

The file is the table's JSON (`LatencyTable.to_json`: the parts' milliseconds, the runtime and its versions, the
device, thread count, dtype, batch shape and the model's architecture fingerprint) under a `format` tag and version.
`read_latency_file` refuses in one line what is not such a file; `check_latency_file` refuses, before any weight is
loaded, a table of another architecture, and `check_table_fits`, before any capture, one timed at another shape or
without a kind of the run's space.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from toast.errors import SettingsError
from toast.objectives import LatencyTable

from .._artifacts import atomic_write_text

__all__ = ["FILE_FORMAT", "check_latency_file", "check_table_fits", "read_latency_file", "write_latency_file"]

FILE_FORMAT = "toast-latency-table"
FILE_VERSION = 2  # 2: the kept blocks by their count (`LatencyTable.kept_ms`), which a reader of 1 would not use
#: what a table must name to be checked against a run
REQUIRED = ("embed_ms", "blocks_ms", "tail_ms", "translators_ms", "fingerprint", "input_description", "runtime")


def write_latency_file(table: LatencyTable, path: str | Path, *, model: str) -> Path:
    """Write `table` (of model `model`, as the user named it) to `path`, whole or not at all."""
    path = Path(path).expanduser()
    doc = {"format": FILE_FORMAT, "version": FILE_VERSION, "model": model, **table.to_json()}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def read_latency_file(path: str | Path) -> LatencyTable:
    """The table in `path`; a `SettingsError` in one line when it is missing, unreadable, not JSON, not a toast
    latency table, of a newer format, or holds an invalid value (a negative, NaN or infinite time or margin)."""
    path = Path(path).expanduser()
    redo = "write it with `toast-search latency-table --model M --runtime R --out FILE` on the deployment machine"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SettingsError(f"`latency_table` {path}: no such file: {redo}") from None
    except OSError as exc:
        raise SettingsError(f"`latency_table` {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"`latency_table` {path} is not JSON ({str(exc).splitlines()[0]}): {redo}") from None
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise SettingsError(f"`latency_table` {path} is not a toast latency table (no format {FILE_FORMAT!r}): {redo}")
    if not isinstance(doc.get("version"), int) or doc["version"] > FILE_VERSION:
        raise SettingsError(
            f"`latency_table` {path} has format version {doc.get('version')!r}; this toast-search reads up to "
            f"{FILE_VERSION}: upgrade toast-search, or measure the table again with this one"
        )
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise SettingsError(f"`latency_table` {path} lacks {', '.join(missing)}: {redo}")
    try:
        table = LatencyTable.from_json(doc)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"`latency_table` {path}: {str(exc).splitlines()[0]}: {redo}") from None
    return table


def check_latency_file(table: LatencyTable, path: str | Path, *, fingerprint: str, model: str) -> None:
    """A table of another architecture than the run's model (`architecture_fingerprint`), in one line."""
    if table.fingerprint != fingerprint:
        raise SettingsError(
            f"`latency_table` {path} was measured on another architecture (fingerprint {table.fingerprint}) than "
            f"model {model!r} ({fingerprint}): measure a table of this model with `toast-search latency-table "
            f"--model {model}` on the deployment machine"
        )


def check_table_fits(
    table: LatencyTable,
    path: str | Path,
    *,
    num_blocks: int,
    inputs: str,
    mode: str,
    kinds: Iterable[str],
) -> None:
    """A table timed at another batch shape or step (`inputs`: the run's latency batch's shapes; `mode`), of another
    depth, or without a kind of the run's space, in one line saying which flags match it."""
    if table.num_blocks != num_blocks:
        raise SettingsError(f"`latency_table` {path} has {table.num_blocks} blocks, the model {num_blocks}")
    if table.input_description != inputs or table.mode != mode:
        wanted = f"batch {table.batch_size}" + (f", {table.seq_len} tokens" if table.seq_len else "")
        raise SettingsError(
            f"`latency_table` {path} was timed on {table.input_description} ({table.mode}), the run times "
            f"{inputs} ({mode}): give `latency_batch_size` {table.batch_size}"
            + (f" and `latency_seq_len` {table.seq_len}" if table.seq_len else "")
            + (f" and `latency_mode` {table.mode}" if table.mode != mode else "")
            + f" to search against it ({wanted}), or measure a table at the run's shape"
        )
    missing = [k for k in kinds if k not in table.translators_ms]
    if missing:
        raise SettingsError(
            f"`latency_table` {path} has no time for translator kind {', '.join(missing)} (it has "
            f"{', '.join(table.translators_ms) or 'none'}): measure it with `--translators` holding them, or search "
            f"`translators` {','.join(table.translators_ms)}"
        )
