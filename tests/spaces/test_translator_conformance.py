"""Every registered translator kind passes `toast.spaces.testing`; the suite itself catches broken kinds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from toast.spaces import LinearTranslator, PlanError, _kinds, kind_parameter, list_translators
from toast.spaces._identity import IdentityTranslator
from toast.spaces._translators import TranslatorCost
from toast.spaces.testing import D, check_identity_is_exact, check_translator, translator_checks

ROOT = Path(__file__).resolve().parents[2]
#: Kind strings of the parametrized kinds, at parameters the suite's widths allow (rank 1, a middle one, the width).
PARAMETRIZED = {"lowrank": ["lowrank:1", "lowrank:4", f"lowrank:{D}"]}
KINDS = [k for k in list_translators() if kind_parameter(k) is None] + [
    s for k in PARAMETRIZED for s in PARAMETRIZED[k]
]
CASES = [
    pytest.param(kind, check, id=f"{kind}-{check.__name__.removeprefix('check_')}")
    for kind in KINDS
    for check in translator_checks(kind)
]


@pytest.mark.parametrize(("kind", "check"), CASES)
def test_every_kind_passes_the_suite(kind, check):
    check(kind)


def test_every_parametrized_kind_is_in_the_suite():
    """A kind that takes a parameter (`lowrank:r`) is checked at some of its parameters, listed in PARAMETRIZED."""
    assert sorted(PARAMETRIZED) == sorted(k for k in list_translators() if kind_parameter(k) is not None)


def test_identity_is_exact():
    check_identity_is_exact()


def test_unknown_kind_is_named():
    with pytest.raises(PlanError, match=r"unknown translator kind 'no_such_kind' \(known: .*linear"):
        check_translator("no_such_kind")


@pytest.fixture
def register(monkeypatch):
    """Register a kind for one test only (the registry is restored afterwards)."""

    def add(name: str, cls: type) -> None:
        cls.kind = name
        monkeypatch.setitem(_kinds._REGISTRY, name, cls)

    return add


class _CheapLinear(LinearTranslator):
    """Claims half the FLOPs its `nn.Linear` really costs."""

    @classmethod
    def cost(cls, dim: int, tokens: int) -> TranslatorCost:
        return TranslatorCost(flops=tokens * dim * dim // 2, params=dim * dim + dim)


class _FitlessLinear(LinearTranslator):
    """Claims it needs no fit, but its empty module is an unfitted `nn.Linear`."""

    needs_fit = False


class _ShapelessIdentity(IdentityTranslator):
    """Its empty module has a shape the fitted one's state cannot load into."""

    @classmethod
    def empty_module(cls, dim: int) -> nn.Module:
        return nn.Linear(dim, dim)


@pytest.mark.parametrize(
    ("cls", "check_name", "message"),
    [
        (_CheapLinear, "check_cost_equals_fvcore", r"fvcore counts"),
        (_FitlessLinear, "check_needs_fit_is_honest", None),
        (_ShapelessIdentity, "check_empty_module_loads_the_fitted_state", r"Missing key"),
    ],
)
def test_the_suite_catches_a_broken_kind(register, cls, check_name, message):
    register("broken", cls)
    check = next(c for c in translator_checks("broken") if c.__name__ == check_name)
    with pytest.raises((AssertionError, RuntimeError), match=message):
        check("broken")


def test_importing_spaces_and_its_suite_stays_light():
    """`import toast.spaces` (and `toast.spaces.testing`) imports no optuna, ray, plotly, matplotlib, fvcore."""
    code = (
        "import sys, toast.spaces, toast.spaces.testing\n"
        "heavy = ('optuna', 'ray', 'plotly', 'matplotlib', 'fvcore', 'safetensors')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_code_tests_for_a_kind_name_outside_the_kind_module():
    """A kind is one module: no `kind == "identity"` (or any registered name) elsewhere in the packages or benches."""
    names = "|".join(map(re.escape, list_translators()))
    pattern = re.compile(rf"""kind\s*(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)\s*\S*kind""")
    found = []
    for folder in ("search", "models", "data", "capture", "spaces", "objectives", "runners", "toast", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = pattern.search(line)
                if match and path.stem.lstrip("_") != (match.group(2) or match.group(3)):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
