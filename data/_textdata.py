"""A real labeled text dataset made offline: docstrings of installed packages, labeled by package.

Each example is the first paragraph of the docstring of a public function, class or method defined
in the source of one installed package; its label is the package. The sources are read with `ast`,
never imported: no import side effects, no slow submodules, no optional dependency needed, and the
same files always give the same texts. Walked: every `.py` file under the package folder, in sorted
order, except private subpackages (`_inductor/`), tests, benchmarks, examples and vendored code.
Private *modules* are read (scikit-learn and Optuna define their public classes in `_ridge.py`,
`_tpe.py`, ...), but only public names (no leading underscore) are kept.

Texts are whitespace-normalized, filtered by length, deduplicated within a package, and dropped when
two packages share them (their label would be ambiguous). Each class is capped at `per_class` texts
drawn in a seeded order, and split stratified into train and test. The order is a sha256 of the seed
and the text, so the dataset depends on nothing but the sources, the settings and the seed.

The result is a `datasets.DatasetDict` (`save_to_disk`) with `text`, `label` (a `ClassLabel` of the
package names) and `source` (the definition's dotted name), and `docstrings.json` beside it: the
settings, each package's version, the class counts and the fingerprint, which is also each split's
`datasets` fingerprint (so activation caches are keyed by it).

    python scripts/build_docstring_dataset.py data/docstrings
    toast-search --model PATH/all-MiniLM-L6-v2 --dataset data/docstrings
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DatasetError

#: Dependencies of toast-search (always installed) whose docstrings are plentiful and distinct.
DEFAULT_PACKAGES: tuple[str, ...] = ("numpy", "torch", "sklearn", "matplotlib", "datasets", "ray")
FORMAT_VERSION = 1
INFO_FILE = "docstrings.json"

_SKIP_DIR = re.compile(r"^(tests?|testing|benchmarks?|examples?|docs?)$|vendor|extern|third_party")
_SKIP_FILE = re.compile(r"^(test_.*|.*_test|conftest|setup)\.py$")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_NOT_PROSE = ("..", ">>>", ":", "#", "-", "=", "*")


@dataclass(frozen=True)
class DocstringSettings:
    """What determines the dataset besides the package sources."""

    packages: tuple[str, ...] = DEFAULT_PACKAGES
    per_class: int = 200
    seed: int = 0
    test_fraction: float = 0.3
    min_chars: int = 40
    max_chars: int = 400
    version: int = FORMAT_VERSION

    def problems(self) -> list[str]:
        out = []
        if len(self.packages) < 2:
            out.append(f"packages: at least two are needed for a classification task, got {list(self.packages)}")
        dotted = [p for p in self.packages if not p.isidentifier()]
        if dotted:
            out.append(f"packages are top-level import names (numpy, sklearn), got {dotted}")
        if len(set(self.packages)) != len(self.packages):
            out.append(f"packages: each package may appear once, got {list(self.packages)}")
        if self.per_class < 2:
            out.append(f"per_class must be at least 2, got {self.per_class}")
        if not 0 < self.test_fraction < 1:
            out.append(f"test_fraction must be strictly between 0 and 1, got {self.test_fraction}")
        if not 0 < self.min_chars <= self.max_chars:
            out.append(f"need 0 < min_chars <= max_chars, got {self.min_chars} and {self.max_chars}")
        return out


@dataclass(frozen=True)
class Docstring:
    """One candidate example: the first paragraph of a docstring and where it is defined."""

    text: str
    source: str  # dotted name: package.module.Class.method


@dataclass
class DocstringDataset:
    """What `docstrings.json` holds."""

    settings: DocstringSettings
    versions: dict[str, str]
    fingerprint: str
    available: dict[str, int] = field(default_factory=dict)  # usable texts per package before the cap
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> package -> examples

    def to_json(self) -> dict:
        return {**asdict(self), "settings": {**asdict(self.settings), "packages": list(self.settings.packages)}}


# --- reading docstrings ------------------------------------------------------------------------


def package_root(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"package {package!r} is not installed (or is not a package folder): pip install it or choose other --packages"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def package_version(package: str) -> str:
    """The installed version of the distribution that provides import name `package`."""
    dists = _distributions().get(package) or [package]
    for dist in sorted(set(dists)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def source_files(package: str) -> Iterator[tuple[str, Path]]:
    """`(module name, path)` of the package's walked `.py` files, in sorted order."""
    root = package_root(package)
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")) and not _SKIP_DIR.search(d))
        rel = Path(dirpath).relative_to(root).parts
        for name in sorted(files):
            if not name.endswith(".py") or _SKIP_FILE.match(name):
                continue
            stem = name[:-3]
            yield ".".join((package, *rel) if stem == "__init__" else (package, *rel, stem)), Path(dirpath) / name


def first_paragraph(docstring: str) -> str:
    """The docstring's first paragraph on one line (whitespace collapsed)."""
    return " ".join(_PARAGRAPH_BREAK.split(docstring.strip(), maxsplit=1)[0].split())


def _definitions(tree: ast.Module, module: str) -> Iterator[tuple[str, ast.AST]]:
    """Public top-level functions and classes, and the public methods of those classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield f"{module}.{node.name}", node
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith("_"):
                        yield f"{module}.{node.name}.{sub.name}", sub


def module_docstrings(path: Path, module: str) -> list[Docstring]:
    """The docstrings of one file's public definitions; a file that does not parse gives none."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError, OSError):
        return []
    out = []
    for name, node in _definitions(tree, module):
        doc = ast.get_docstring(node)
        if doc:
            out.append(Docstring(first_paragraph(doc), name))
    return out


def collect_docstrings(package: str, *, min_chars: int = 40, max_chars: int = 400) -> list[Docstring]:
    """Usable first paragraphs of `package`'s public docstrings, deduplicated, in source order."""
    seen: set[str] = set()
    out = []
    for module, path in source_files(package):
        for doc in module_docstrings(path, module):
            if not min_chars <= len(doc.text) <= max_chars or doc.text.startswith(_NOT_PROSE) or doc.text in seen:
                continue
            seen.add(doc.text)
            out.append(doc)
    return out


# --- building ----------------------------------------------------------------------------------


def _order_key(seed: int, package: str, text: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{package}\0{text}".encode()).digest()


def _select(
    settings: DocstringSettings, per_package: dict[str, list[Docstring]]
) -> dict[str, list[tuple[Docstring, int]]]:
    """`split -> [(docstring, label)]`: texts shared by packages dropped, each class capped and split."""
    owners: dict[str, int] = {}
    for docs in per_package.values():
        for doc in docs:
            owners[doc.text] = owners.get(doc.text, 0) + 1
    splits: dict[str, list[tuple[Docstring, int]]] = {"train": [], "test": []}
    for label, package in enumerate(settings.packages):
        unique = [d for d in per_package[package] if owners[d.text] == 1]
        chosen = sorted(unique, key=lambda d: _order_key(settings.seed, package, d.text))[: settings.per_class]
        n_test = max(1, round(len(chosen) * settings.test_fraction))
        splits["test"] += [(d, label) for d in chosen[:n_test]]
        splits["train"] += [(d, label) for d in chosen[n_test:]]
    for name, rows in splits.items():  # interleave the classes, deterministically
        rows.sort(key=lambda r: _order_key(settings.seed + 1, name, r[0].text))
    return splits


def _spec_key(settings: DocstringSettings, versions: dict[str, str]) -> dict:
    return {"settings": {**asdict(settings), "packages": list(settings.packages)}, "versions": versions}


def read_info(directory: str | Path) -> dict | None:
    """`docstrings.json` of a built dataset folder, or None when there is none."""
    path = Path(directory) / INFO_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_docstring_dataset(
    out_dir: str | Path,
    *,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    per_class: int = 200,
    seed: int = 0,
    test_fraction: float = 0.3,
    min_chars: int = 40,
    max_chars: int = 400,
    overwrite: bool = False,
) -> Path:
    """Build the docstring dataset into `out_dir` (a `save_to_disk` DatasetDict) and return its path.

    A folder already built with the same settings and package versions is reused as is; any other
    existing folder raises `DatasetError` unless `overwrite` is true. The folder is written under a
    temporary name and renamed into place, so a partial build is never read as complete.
    """
    import datasets

    settings = DocstringSettings(tuple(packages), per_class, seed, test_fraction, min_chars, max_chars)
    problems = settings.problems()
    for package in filter(str.isidentifier, settings.packages):
        try:
            package_root(package)
        except DatasetError as exc:
            problems.append(str(exc))
    if problems:  # every problem at once, before any work
        raise DatasetError("cannot build the docstring dataset: " + "; ".join(problems))
    out = Path(out_dir)
    versions = {p: package_version(p) for p in settings.packages}
    if out.exists():
        info = read_info(out)
        if info is not None and _spec_key(settings, versions) == {
            "settings": info["settings"],
            "versions": info["versions"],
        }:
            return out
        if not overwrite:
            what = (
                "was built with other settings or package versions"
                if info is not None
                else "exists and is not a docstring dataset"
            )
            raise DatasetError(f"{out} {what}: pass overwrite=True (--overwrite) or another folder")

    per_package = {p: collect_docstrings(p, min_chars=min_chars, max_chars=max_chars) for p in settings.packages}
    splits = _select(settings, per_package)
    content = hashlib.sha256()
    for name in ("train", "test"):
        for doc, label in splits[name]:
            content.update(f"{name}\0{label}\0{doc.source}\0{doc.text}\n".encode())
    key = json.dumps({**_spec_key(settings, versions), "content": content.hexdigest()}, sort_keys=True)
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
    record = DocstringDataset(
        settings=settings,
        versions=versions,
        fingerprint=f"docstrings-v{FORMAT_VERSION}-{fingerprint}",
        available={p: len(per_package[p]) for p in settings.packages},
        counts={
            name: {p: sum(1 for _, y in rows if y == i) for i, p in enumerate(settings.packages)}
            for name, rows in splits.items()
        },
    )

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(settings.packages)),
            "source": datasets.Value("string"),
        }
    )
    description = f"First paragraphs of public docstrings of {', '.join(f'{p} {v}' for p, v in versions.items())}; label = package."
    parts = {}
    for name, rows in splits.items():
        table = datasets.Dataset.from_dict(
            {"text": [d.text for d, _ in rows], "label": [y for _, y in rows], "source": [d.source for d, _ in rows]},
            features=features,
            info=datasets.DatasetInfo(description=description, features=features),
            split=name,
        )
        split_fp = hashlib.sha256(f"{record.fingerprint}\0{name}".encode()).hexdigest()[:32]
        parts[name] = datasets.Dataset(table.data, info=table.info, split=table.split, fingerprint=split_fp)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        (tmp / INFO_FILE).write_text(json.dumps(record.to_json(), indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
