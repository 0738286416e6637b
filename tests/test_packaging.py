"""What `pip install toast-search` installs: every package and data file of the source, from a built wheel.

The tests and CI install the checkout editable (`pip install -e`), where a subpackage missing from pyproject.toml's
`packages` still imports (the editable finder maps `toast.search` to `search/` and finds what is below it). A wheel
holds only the packages listed: `toast.search.runtimes` was missing, so an installed toast-search failed at
`import toast.search` (found by bench/gpu_check.sh, which installs the checkout as a wheel). Checked two ways: the
folders of the source against the list (no build), and a wheel built by pip, installed into a folder and imported in
a fresh process where that folder comes first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: what the copy the wheel is built from leaves out: environments, build outputs, runs
IGNORED = (".git", ".venv", "build", "*.egg-info", "__pycache__", "runs", ".cache", ".whl", "bench")
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def source_packages() -> dict[str, Path]:
    """Every package of the source, by its installed name: each folder holding an `__init__.py` under a mapped root."""
    out = {}
    for name, folder in SETUPTOOLS["package-dir"].items():
        root = ROOT / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            if "__pycache__" not in rel:
                out[".".join((name, *rel))] = init.parent
    return out


def test_every_source_package_is_listed():
    listed = set(SETUPTOOLS["packages"])
    missing = sorted(set(source_packages()) - listed)
    assert not missing, f"packages in the source but not in pyproject.toml's [tool.setuptools] packages: {missing}"
    assert "toast.search.runtimes" in source_packages()  # the one that was missing: the check sees subpackages


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of the checkout without build outputs (setuptools' `build/lib` keeps the
    files of earlier builds, which would hide a package dropped from the list)."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source") / "toast-search"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("toast_search-*.whl")
    return built


def test_the_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for package, folder in source_packages().items():
        path = package.replace(".", "/")
        expected |= {f"{path}/{f.name}" for f in folder.glob("*.py")}
    for package, patterns in SETUPTOOLS["package-data"].items():
        folder = ROOT / SETUPTOOLS["package-dir"][package]
        path = package.replace(".", "/")
        expected |= {f"{path}/{f.relative_to(folder)}" for p in patterns for f in folder.glob(p) if f.is_file()}
    assert any(n.endswith("demo-lm/model.safetensors") for n in expected)  # the data patterns matched files
    missing = sorted(expected - names)
    assert not missing, f"{len(missing)} files of the source not in the wheel, e.g. {missing[:5]}"


@pytest.mark.slow
def test_the_installed_wheel_imports_and_loads_the_demo_models(wheel, tmp_path):
    """Installed from the wheel alone (no editable finder reaching the checkout): the CLI's modules import, every
    runtime registers, and the packaged demo models load."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import sys, toast, toast.search.cli, toast.search.runtimes as r\n"
        "from toast.models import load_model\n"
        "print(sorted(r.list_runtimes()))\n"
        "for name in ('demo-vit', 'demo-lm'):\n"
        "    print(name, load_model(name).num_blocks)\n"
        "away = [m.__name__ for m in list(sys.modules.values())\n"
        f"        if m.__name__.startswith('toast') and not (m.__file__ or '').startswith({str(site)!r})]\n"
        "assert not away, f'toast modules imported from elsewhere than the wheel: {away}'\n"
    )
    # -S: no site module, so no .pth file and no editable finder of the checkout; the dependencies by PYTHONPATH
    libs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *libs])}
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "eager" in done.stdout and "onnxruntime" in done.stdout
    assert "demo-vit 6" in done.stdout and "demo-lm 12" in done.stdout
