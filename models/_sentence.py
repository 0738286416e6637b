"""sentence-transformers sources: the pipeline after their Transformer module, and `chosen/` in their layout.

A sentence-transformers model (all-MiniLM-L6-v2 and most text encoders on the hub) is a folder whose
`modules.json` lists a `Transformer` module (the Hugging Face checkpoint, usually at the folder's root), a
`Pooling` module (`1_Pooling/config.json`) and often a `Normalize` one. What its users get from
`SentenceTransformer.encode` is the pooled, L2-normalised embedding, not the bare model's mean pooling.

So the search scores exactly that: a `SentencePipeline` read from the source's files pools (and normalises) the
compressed model's last hidden state as the source's modules do (`CompressedModel.pooled`), the probe and the
fidelity see what the user gets, and a probe is not scale invariant. When `chosen/` is a plain Transformers
checkpoint, `write_sentence_transformer` writes the source's module files beside it, the Transformer module
at the folder's root, so `SentenceTransformer("runs/…/chosen")` loads the compressed model with the source's
Pooling and Normalize and encodes what the search scored. The toast format (fitted translators) cannot be a
`Transformer` module, which `AutoModel` loads: it gets no sentence-transformers files, and `toast.json` says why.

Pipelines of other modules (Dense, a prompt prepended by default, weighted-mean or last-token pooling) are not
reproduced: the search then scores the mean-pooled features as for any text encoder and says so in `toast.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "SentencePipeline",
    "find_sentence_folder",
    "read_sentence_pipeline",
    "saved_sentence_pipeline",
    "write_sentence_transformer",
]

MODULES_FILE = "modules.json"
ST_CONFIG = "config_sentence_transformers.json"
TRANSFORMER_CONFIG = "sentence_bert_config.json"
#: Pooling modes reproduced here, by the name sentence-transformers >= 6 gives them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
#: sentence-transformers < 6 wrote one boolean per mode (its newer versions still read them), in this order.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: What `find_sentence_folder` fetches of a hub model (small JSON files only).
HUB_PATTERNS = (MODULES_FILE, ST_CONFIG, TRANSFORMER_CONFIG, "*/" + TRANSFORMER_CONFIG, "*Pooling/*", "*Normalize/*")
NOT_PLAIN = (
    "not written: SentenceTransformer loads the plain format only (this plan has fitted translators); "
    "CompressedModel.from_pretrained(...).features gives the same embeddings"
)


@dataclass(frozen=True)
class SentencePipeline:
    """The modules a sentence-transformers source runs after its Transformer: pooling, then L2 normalisation.

    `files` are the source's module files as `chosen/` gets them (path in the folder → bytes; the Transformer
    module moved to the root); `refusal` says why the pipeline is not reproduced (then `active` is False, the
    search scores mean-pooled features and no module file is written)."""

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    files: Mapping[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    refusal: str | None = None

    @property
    def active(self) -> bool:
        return self.refusal is None

    def pool(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The sentence embedding of token embeddings `(batch, seq, d)` as the source's Pooling (and Normalize)
        modules compute it; `mask` marks real tokens (None: all real)."""
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        m = mask.to(tokens.dtype).unsqueeze(-1)
        out = []
        for mode in self.modes:
            if mode == "cls":  # the first real token, as sentence-transformers takes it (also under left padding)
                first = mask.to(torch.int32).argmax(dim=1)
                out.append(tokens[torch.arange(tokens.shape[0], device=tokens.device), first])
            elif mode == "max":
                out.append(tokens.masked_fill(m == 0, float("-inf")).max(dim=1).values)
            else:
                count = m.sum(dim=1).clamp_min(1e-9)
                total = (tokens * m).sum(dim=1)
                out.append(total / (count if mode == "mean" else count.sqrt()))
        pooled = out[0] if len(out) == 1 else torch.cat(out, dim=-1)
        return F.normalize(pooled, p=2, dim=-1) if self.normalize else pooled

    def to_json(self) -> dict[str, Any]:
        """What `toast.json` keeps, enough to score the same embeddings after `CompressedModel.from_pretrained`."""
        out: dict[str, Any] = {"pooling": list(self.modes), "normalize": self.normalize}
        if self.refusal is not None:
            out["not_reproduced"] = self.refusal
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SentencePipeline:
        return cls(
            modes=tuple(doc.get("pooling", ("mean",))),
            normalize=bool(doc.get("normalize", False)),
            refusal=doc.get("not_reproduced"),
        )


def _class_name(entry: Mapping[str, Any]) -> str:
    """`Pooling` for `sentence_transformers.models.Pooling` or `sentence_transformers.….pooling.Pooling`; "" for a
    class outside sentence-transformers (a custom module)."""
    kind = str(entry.get("type", ""))
    return kind.rsplit(".", 1)[-1] if kind.startswith("sentence_transformers.") else ""


def _pooling_modes(config: Mapping[str, Any]) -> tuple[str, ...]:
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return (mode,) if isinstance(mode, str) else tuple(mode)
    return tuple(mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_sentence_pipeline(folder: str | Path) -> SentencePipeline | None:
    """The pipeline of the sentence-transformers model in `folder`, or None when it is not one (no modules.json).

    A pipeline other than Transformer → Pooling (cls, max, mean, mean_sqrt_len_tokens) → Normalize (optional),
    or a default prompt, comes back with its `refusal`: the search cannot score what it computes."""
    folder = Path(folder)
    if not (folder / MODULES_FILE).is_file():
        return None
    try:
        modules = _read_json(folder / MODULES_FILE)
        names = [_class_name(m) for m in modules]
        if not names or names[0] != "Transformer":
            raise _Refused(f"its first module is {modules[0].get('type') if modules else 'missing'}, not a Transformer")
        if len(names) < 2 or names[1] != "Pooling" or names[2:] not in ([], ["Normalize"]):
            shown = " → ".join(str(m.get("type", "?")).rsplit(".", 1)[-1] for m in modules)
            raise _Refused(f"its modules are {shown}, not Transformer → Pooling (→ Normalize)")
        pooling_path = folder / modules[1]["path"] / "config.json"
        modes = _pooling_modes(_read_json(pooling_path)) if pooling_path.is_file() else ("mean",)
        unknown = [m for m in modes if m not in POOLING_MODES]
        if not modes or unknown:
            raise _Refused(f"its pooling {'/'.join(unknown) or 'has no mode'} is not one of {', '.join(POOLING_MODES)}")
        st_config = _read_json(folder / ST_CONFIG) if (folder / ST_CONFIG).is_file() else {}
        if st_config.get("default_prompt_name"):
            raise _Refused(f"it prepends the prompt {st_config['default_prompt_name']!r} by default")
        files = _module_files(folder, modules)
    except _Refused as exc:
        return SentencePipeline(refusal=f"the sentence-transformers pipeline is not reproduced: {exc}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return SentencePipeline(refusal=f"the sentence-transformers files in {folder} are unreadable ({reason})")
    return SentencePipeline(modes=modes, normalize=names[2:] == ["Normalize"], files=files)


class _Refused(Exception):
    """A sentence-transformers pipeline that the search does not reproduce (internal: becomes a refusal)."""


def _module_files(folder: Path, modules: list[dict]) -> dict[str, bytes]:
    """The files `chosen/` gets: modules.json with the Transformer at the root, its sentence_bert_config.json,
    config_sentence_transformers.json, and every file of the other modules' folders."""
    transformer = modules[0].get("path", "") or ""
    moved = [{**m, "path": ""} if i == 0 else dict(m) for i, m in enumerate(modules)]
    files = {MODULES_FILE: (json.dumps(moved, indent=2) + "\n").encode()}
    for name, source in [
        (TRANSFORMER_CONFIG, folder / transformer / TRANSFORMER_CONFIG),
        (ST_CONFIG, folder / ST_CONFIG),
    ]:
        if source.is_file():
            files[name] = source.read_bytes()
    for module in modules[1:]:
        directory = folder / module["path"]
        if directory.is_dir():
            for path in sorted(p for p in directory.rglob("*") if p.is_file()):
                files[(Path(module["path"]) / path.relative_to(directory)).as_posix()] = path.read_bytes()
    return files


def find_sentence_folder(where: str, *, is_local: bool, revision: str | None = None) -> Path | None:
    """The folder holding the sentence-transformers files of a model: itself when local; for a hub id, its small
    module files fetched into the Hugging Face cache (None when the repository has none or cannot be reached)."""
    if is_local:
        return Path(where)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(where, revision=revision, allow_patterns=list(HUB_PATTERNS)))
    except Exception:  # offline, gated or unknown: the model is then scored as a plain text encoder
        return None


def write_sentence_transformer(directory: str | Path, pipeline: SentencePipeline, *, plain: bool) -> dict[str, Any]:
    """Write `pipeline`'s module files into `directory` (a saved compressed model) when it is a plain checkpoint
    and the pipeline is reproduced, so that `SentenceTransformer(directory)` loads it; return what `toast.json`
    records: the pipeline, whether the files were written, and why not."""
    record = {**pipeline.to_json(), "written": False}
    if not pipeline.active:
        record["note"] = f"not written: {pipeline.refusal}"
    elif not plain:
        record["note"] = NOT_PLAIN
    elif not pipeline.files:
        record["note"] = "not written: the source's sentence-transformers files were not at hand when it was saved"
    else:
        directory = Path(directory)
        for name, content in pipeline.files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        record["written"] = True
    return record


def saved_sentence_pipeline(directory: str | Path, meta: Mapping[str, Any]) -> SentencePipeline | None:
    """The pipeline of a saved compressed model: read from its own module files when it has them (a plain
    checkpoint saved from a sentence-transformers source), else from `toast.json`; None for any other model."""
    doc = meta.get("sentence_transformers")
    if doc is None:
        return None
    if doc.get("written"):
        pipeline = read_sentence_pipeline(directory)
        if pipeline is not None:
            return pipeline
    return SentencePipeline.from_json(doc)
