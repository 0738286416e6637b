"""The import rules of the toast packages (issue 21), checked on the source: no import cycles, no private reach.

Every module of the packages listed in pyproject.toml's `package-dir` is parsed (never imported) and every import
of a toast module is collected, wherever it sits: module level, inside a function, under `if TYPE_CHECKING:`,
relative or absolute. Two rules hold over them:

- **No cycles** in the module import graph. An edge goes from the importer to the module it names; for
  `from pkg import name` where `pkg.name` is a module, to that submodule. A package's `__init__` importing its own
  submodules is an edge like any other, and importing `a.b.c` draws no edge to `a` or `a.b`. A function-level
  import only hides a cycle from the interpreter: the modules still depend on each other.
- **No private reach across packages**: a module of `toast.P` (P one of `PACKAGES`, subpackages included) never
  imports `toast.Q._x`, nor a `_name` of `toast.Q`, for Q != P: it imports the name from `toast.Q`, which exports
  it. The root-level shared infrastructure (`SHARED`) is open to every package.

Imports of external packages (ray, matplotlib, ...) are not checked: importing those lazily is allowed.
The checker itself is tested on small synthetic sources, so an empty graph cannot pass these tests vacuously.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]

#: the packages whose privates are closed to one another
PACKAGES = ("search", "models", "data", "capture", "spaces", "objectives", "runners")
#: root-level shared infrastructure, importable from every package
SHARED = frozenset({"toast._compat", "toast._artifacts", "toast._faults", "toast._hub"})


@dataclass(frozen=True)
class Module:
    """One toast module read from source: its dotted name, whether it is a package's `__init__`, its text."""

    name: str
    is_package: bool
    source: str
    path: str = "<synthetic>"


@dataclass(frozen=True)
class Import:
    """One import of a toast module: `importer` -> `target` (a module), `name` the imported attribute if not one."""

    importer: str
    target: str
    name: str | None
    lineno: int
    path: str

    @property
    def dotted(self) -> str:
        """The full path imported: the module, plus the attribute when the import names one."""
        return f"{self.target}.{self.name}" if self.name else self.target

    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


# ---- reading the tree ----------------------------------------------------------------------------------------------
def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """pyproject.toml's `[tool.setuptools.package-dir]`: import name -> folder."""
    with open(root / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items()}


def read_modules(root: Path = ROOT) -> list[Module]:
    """Every `.py` file of the toast packages as a `Module`, named through `package-dir` (subfolders included)."""
    dirs = package_dirs(root)
    modules: dict[str, Module] = {}
    for package, folder in dirs.items():
        for file in sorted(folder.rglob("*.py")):
            parts = list(file.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            rel = str(file.relative_to(root))
            modules[name] = Module(name, is_package, file.read_text(encoding="utf-8"), rel)
    return sorted(modules.values(), key=lambda m: m.name)


# ---- the checker ---------------------------------------------------------------------------------------------------
def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    """The absolute module an `from .{level}target import ...` in `module` names."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ValueError(f"{module.path}: relative import beyond the top-level package")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _known(dotted: str, known: set[str]) -> str | None:
    """The longest prefix of `dotted` that is a known toast module, or None for an external import."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def collect_imports(modules: list[Module]) -> list[Import]:
    """Every import of a toast module by a toast module, anywhere in its source."""
    known = {m.name for m in modules}
    found: list[Import] = []
    for module in modules:
        tree = ast.parse(module.source, filename=module.path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _known(alias.name, known)
                    if target is not None:
                        found.append(Import(module.name, target, None, node.lineno, module.path))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_relative(module, node.level, node.module) if node.level else node.module
                assert base is not None
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if alias.name != "*" and sub in known:  # `from pkg import submodule`
                        found.append(Import(module.name, sub, None, node.lineno, module.path))
                        continue
                    target = _known(base, known)
                    if target is None:
                        continue
                    # `from toast.a.b import x` where only `toast.a` is known: the rest of the path is still named
                    rest = base[len(target) + 1 :] if base != target else ""
                    name = None if alias.name == "*" else ".".join(p for p in (rest, alias.name) if p)
                    found.append(Import(module.name, target, name, node.lineno, module.path))
    return found


def import_graph(imports: list[Import]) -> dict[str, set[str]]:
    """importer -> the modules it imports (self-imports kept: they are cycles too)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle_through(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle")  # pragma: no cover (only called inside a component)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: for each strongly connected component, the shortest cycle through each of its modules
    (deduplicated), so every module caught in a cycle appears in one listed. Each cycle ends where it starts."""
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in _strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        for module in component:
            cycle = _shortest_cycle_through(graph, module, members)
            ring = cycle[:-1]
            first = ring.index(min(ring))
            key = tuple(ring[first:] + ring[:first])
            if key not in seen:
                seen.add(key)
                cycles.append([*key, key[0]])
    return cycles


def _package_of(module: str) -> str | None:
    """P for a module of `toast.P` (P in `PACKAGES`, subpackages included), else None (root-level modules)."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "toast" and parts[1] in PACKAGES:
        return parts[1]
    return None


def _is_private(component: str) -> bool:
    return component.startswith("_") and not (component.startswith("__") and component.endswith("__"))


def private_imports(imports: list[Import]) -> list[Import]:
    """Imports by a module of `toast.P` of a private module or name of anything outside `toast.P`."""
    bad = []
    for imp in imports:
        package = _package_of(imp.importer)
        if package is None or imp.target in SHARED:
            continue
        if imp.target == f"toast.{package}" or imp.target.startswith(f"toast.{package}."):
            continue
        if any(_is_private(part) for part in imp.dotted.split(".")):
            bad.append(imp)
    return bad


def format_cycles(cycles: list[list[str]], imports: list[Import]) -> str:
    """One line per cycle, each edge with the line that draws it."""
    where: dict[tuple[str, str], str] = {}
    for imp in imports:
        where.setdefault((imp.importer, imp.target), imp.where())
    lines = []
    for cycle in cycles:
        edges = [f"{a} -> {b} ({where[(a, b)]})" for a, b in zip(cycle, cycle[1:])]
        lines.append("cycle: " + "; ".join(edges))
    return "\n".join(lines)


def format_private(bad: list[Import]) -> str:
    return "\n".join(f"{imp.where()}: {imp.importer} imports {imp.dotted}" for imp in bad)


# ---- the rules on the real tree ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree_imports() -> list[Import]:
    return collect_imports(read_modules())


def test_the_tree_is_read():
    """Guard against a vacuous pass: every package folder is found, and with it a fair number of modules."""
    names = {m.name for m in read_modules()}
    for package in ("toast", *(f"toast.{p}" for p in PACKAGES)):
        assert package in names, f"{package} not found through pyproject.toml's package-dir"
    assert len(names) > 50
    assert "toast.spaces._plan" in names and "toast.errors" in names


def test_no_import_cycles(tree_imports):
    cycles = find_cycles(import_graph(tree_imports))
    assert not cycles, (
        f"{len(cycles)} import cycle(s) between toast modules; move the shared definition to a module both can "
        f"import (a function-level import only hides the cycle):\n{format_cycles(cycles, tree_imports)}"
    )


def test_no_private_imports_across_packages(tree_imports):
    bad = private_imports(tree_imports)
    assert not bad, (
        f"{len(bad)} import(s) of another package's private module or name; import the name from the package "
        f"(`from toast.objectives import CostTable`), exporting it there if needed:\n{format_private(bad)}"
    )


# ---- the checker on synthetic sources ------------------------------------------------------------------------------
def _modules(sources: dict[str, str], packages: tuple[str, ...] = ()) -> list[Module]:
    """Synthetic modules: name -> source; those named in `packages` are `__init__` modules."""
    return [Module(name, name in packages, source) for name, source in sources.items()]


SYNTHETIC_PACKAGES = ("toast", "toast.spaces", "toast.objectives", "toast.models")


def test_checker_finds_a_cycle_hidden_in_a_function_and_type_checking():
    modules = _modules(
        {
            "toast": "",
            "toast.objectives": "from ._a import A\n",
            "toast.objectives._a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._b import B\n",
            "toast.objectives._b": "def f():\n    from toast.objectives._c import C\n",
            "toast.objectives._c": "import toast.objectives._a\nimport ray\n",
            "toast.objectives._d": "from . import _a\n",
        },
        SYNTHETIC_PACKAGES,
    )
    imports = collect_imports(modules)
    cycles = find_cycles(import_graph(imports))
    assert cycles == [["toast.objectives._a", "toast.objectives._b", "toast.objectives._c", "toast.objectives._a"]]
    report = format_cycles(cycles, imports)
    assert "toast.objectives._b -> toast.objectives._c (<synthetic>:2)" in report
    assert "ray" not in report


def test_checker_finds_a_submodule_importing_its_own_package_init():
    """`__init__` imports `_x`, `_x` imports a name from the package: a cycle (no implicit edge to parents else)."""
    modules = _modules(
        {
            "toast": "",
            "toast.spaces": "from ._plan import Plan\nfrom ._space import PlanSpace\n",
            "toast.spaces._plan": "",
            "toast.spaces._other": "import toast.spaces._plan\n",  # no edge to the parent `toast.spaces`: no cycle
            "toast.spaces._space": "from toast.spaces import Plan\n",
        },
        SYNTHETIC_PACKAGES,
    )
    cycles = find_cycles(import_graph(collect_imports(modules)))
    assert cycles == [["toast.spaces", "toast.spaces._space", "toast.spaces"]]


def test_checker_sees_no_cycle_in_a_layered_tree():
    modules = _modules(
        {
            "toast": "",
            "toast.errors": "",
            "toast.spaces": "from ._plan import Plan\nfrom .. import errors\n",
            "toast.spaces._plan": "from ..errors import PlanError\nfrom ._results import R\n",
            "toast.spaces._results": "import toast.errors\n",
            "toast.models": "from toast.spaces import Plan\n",
        },
        SYNTHETIC_PACKAGES,
    )
    imports = collect_imports(modules)
    assert ("toast.spaces", "toast.errors") in {(i.importer, i.target) for i in imports}
    assert find_cycles(import_graph(imports)) == []


def test_checker_finds_private_imports_across_packages():
    modules = _modules(
        {
            "toast": "",
            "toast._compat": "",
            "toast._secret": "",
            "toast.errors": "",
            "toast.objectives": "from ._cost import CostTable\n",
            "toast.objectives._cost": "CostTable = 1\n",
            "toast.spaces": "",
            "toast.spaces._span_data": "HOLDOUT = 1\n",
            "toast.models": "",
            "toast.models._costing": (
                "from toast.objectives._cost import CostTable\n"  # private module of another package
                "from toast.objectives import CostTable\n"  # fine: the public path
                "from toast import _compat\n"  # fine: shared infrastructure
                "from toast._compat import thing\n"  # fine
                "from toast import _secret\n"  # a root-level private that is not shared infrastructure
                "from toast import __version__\n"  # fine: a dunder is public
                "from . import _helpers\n"  # fine: its own package (an unknown name, kept as toast.models)
                "def f():\n"
                "    from ..spaces._span_data import HOLDOUT\n"  # private, relative, inside a function
                "    from toast.objectives import _private_name\n"  # a private name of another package
            ),
            "toast.objectives._fine": "from ._cost import CostTable\nfrom toast.objectives._cost import CostTable\n",
        },
        (*SYNTHETIC_PACKAGES, "toast.spaces"),
    )
    bad = private_imports(collect_imports(modules))
    assert [(i.importer, i.dotted, i.lineno) for i in bad] == [
        ("toast.models._costing", "toast.objectives._cost.CostTable", 1),
        ("toast.models._costing", "toast._secret", 5),
        ("toast.models._costing", "toast.spaces._span_data.HOLDOUT", 9),
        ("toast.models._costing", "toast.objectives._private_name", 10),
    ]
    assert "<synthetic>:1: toast.models._costing imports toast.objectives._cost.CostTable" in format_private(bad)


def test_relative_imports_resolve_from_package_and_module():
    init = Module("toast.spaces", True, "")
    plain = Module("toast.spaces._plan", False, "")
    assert _resolve_relative(init, 1, "_plan") == "toast.spaces._plan"
    assert _resolve_relative(plain, 1, "_space") == "toast.spaces._space"
    assert _resolve_relative(plain, 2, "errors") == "toast.errors"
    assert _resolve_relative(plain, 2, None) == "toast"


# ---- the version -----------------------------------------------------------------------------------------------------
def test_version_from_python_and_the_cli_agree():
    import toast

    run = subprocess.run(
        [sys.executable, "-c", "import toast; print(toast.__version__)"], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr
    shown = run.stdout.strip()
    assert shown == toast.__version__ and shown not in ("", "unknown")
    cli = Path(sys.executable).with_name("toast-search")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "toast.search.cli"]
    printed = subprocess.run([*command, "--version"], capture_output=True, text=True, cwd=ROOT)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == f"toast-search {shown}"
