"""Tiny models of every supported family (random weights, saved to local folders) and made-up data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from toast.models import registered_families
from toast.models.testing import NO_TOAST

__all__ = ["FAMILY_NAMES", "NO_TOAST", "SMALL_RUN", "example_inputs", "run_main", "save_tiny", "tiny_model"]

#: The sample counts of a small end-to-end run on the tiny models and the made-up datasets (seconds on one core).
SMALL_RUN = [
    "--calib-samples",
    "16",
    "--probe-samples",
    "30",
    "--eval-samples",
    "20",
    "--device",
    "cpu",
    "--no-progress",
]

#: Every family's tiny test models (`Family.tiny_models`: the weights and inputs the tests compare numbers on).
TINY_CASES = {case: family for family in registered_families() for case in family.tiny_models}
#: The tiny models the tests across the packages (compression, costs, searches, exports) run on; every registered
#: family's are checked by `tests/models/test_family_conformance.py`.
FAMILY_NAMES = ["vit", "vit-cls", "deit", "dinov2", "dinov2-reg", "clip", "bert"]
assert set(FAMILY_NAMES) <= set(TINY_CASES), f"a case of FAMILY_NAMES is none of the tiny models {sorted(TINY_CASES)}"


@pytest.fixture(scope="session", autouse=True)
def short_timing_windows():
    """Latency timings in the tests run their `repeats` rounds only, without the product's minimum window of seconds
    (`TABLE_SECONDS`, `END_TO_END_SECONDS`): no test asserts a timed value, and the windows would add minutes to CI.
    A test of the window itself passes `seconds` explicitly."""
    from toast.search import _deploy_latency, _latency

    patch = pytest.MonkeyPatch()
    for function in (_latency.measure_latency_table, _latency.measure_end_to_end):
        patch.setitem(function.__kwdefaults__, "seconds", 0.0)
    patch.setattr(_deploy_latency, "END_TO_END_SECONDS", 0.0)
    yield
    patch.undo()


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny randomly initialised Hugging Face model: the tiny model `name` of its family (`Family.tiny_models`)."""
    import transformers as T

    config = TINY_CASES[name].tiny_config(name)
    torch.manual_seed(seed)
    return getattr(T, config.architectures[0])(config)


def save_tiny(name: str, directory: Path, seed: int = 0) -> Path:
    """Save the tiny model `name` with its processor to `directory`."""
    model = tiny_model(name, seed)
    model.save_pretrained(directory)
    TINY_CASES[name].save_tiny_processor(model.config, directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every tiny family saved once per session."""
    root = tmp_path_factory.mktemp("models")
    return {name: save_tiny(name, root / name) for name in FAMILY_NAMES}


def example_inputs(name: str, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the tiny model `name` (`Family.tiny_inputs`; text: one padded sequence)."""
    family = TINY_CASES[name]
    return family.tiny_inputs(family.tiny_config(name), batch=batch, seed=seed)


@pytest.fixture(scope="session")
def image_dataset_dir(tmp_path_factory) -> Path:
    """A made-up image classification dataset saved with `save_to_disk` (train and test splits)."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 3, n)
        images = []
        for y in labels:
            arr = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            arr[:, :, y] += 150  # the label is the dominant colour
            images.append(Image.fromarray(arr))
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
        return datasets.Dataset.from_dict({"img": images, "label": labels.tolist()}, features=feats)

    path = tmp_path_factory.mktemp("data") / "colours"
    datasets.DatasetDict({"train": make(40), "test": make(20)}).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def graded_dataset_dir(tmp_path_factory) -> Path:
    """Three classes told apart by a faint dominant colour in strong noise: the original model scores
    about 90 % and compressed plans spread between chance and that, so fronts are not degenerate."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)

    def make(n: int) -> datasets.Dataset:
        labels = rng.integers(0, 3, n)
        images = []
        for y in labels:
            arr = rng.integers(0, 200, (16, 16, 3)).astype(np.int32)
            arr[:, :, y] += 10
            images.append(Image.fromarray(arr.astype(np.uint8)))
        feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
        return datasets.Dataset.from_dict({"img": images, "label": labels.tolist()}, features=feats)

    path = tmp_path_factory.mktemp("graded") / "colours"
    datasets.DatasetDict({"train": make(60), "test": make(40)}).save_to_disk(str(path))
    return path


def run_main(args: list[str]) -> tuple[int, str, str]:
    """`toast-search args` in this process: its exit status (argparse's usage errors included), stdout and stderr."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from toast.search.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for the module's tests (`pytestmark = pytest.mark.usefixtures("one_thread")`): tiny models
    run fastest so, several threads only contend on a shared machine, and a latency table is keyed by the count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
