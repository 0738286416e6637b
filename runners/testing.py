"""The conformance check every runner passes: `check_runner(name)`, importable for plug-in runners.

    from toast.runners.testing import check_runner
    check_runner("local")  # raises AssertionError naming the broken rule

Like `toast.spaces.testing.check_translator` and Optuna's shared sampler tests, it runs one tiny study on any
registered runner with the same trial factory, `ToyTrials` (no model: a plan is a pair `x`, `kind`, scored by a
formula; one of them raises), and checks the study the runner leaves against the same trials computed without any
runner: every trial recorded once, in the order asked, COMPLETE with the factory's values and attrs (attrs named
after the runner aside: where a trial ran is not a score), the failing one FAIL with its reason; the config carries
the trial's storage id and number; each callback called once per trial, after it finished. The tests run it over
`list_runners()`, so a new runner is checked on arrival. Importing this module imports no Ray and no model code.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._compat import trial_id
from ._runner import get_runner
from ._trial import TRIAL_ID, TRIAL_NUMBER, TrialFunction

__all__ = ["FAILING", "GRID", "ToyTrials", "check_runner", "expected_trials", "toy_trial"]

#: the plans of the toy study, in the order they are enqueued (and so asked): trial n is GRID[n]
GRID = tuple((x, kind) for x in range(4) for kind in ("a", "b"))
#: the plan whose trial function raises
FAILING = (3, "b")


def toy_trial(config: dict) -> tuple[dict[str, float], dict[str, Any]]:
    """The toy trial function: `score` and `cost` by formula, and attrs echoing what the runner put in the config."""
    x, kind = config["x"], config["kind"]
    if (x, kind) == FAILING:
        raise ValueError(f"the toy trial x={x} kind={kind} fails, as it should")
    values = {"score": float(x * (2 if kind == "a" else 3)), "cost": float(x + 1)}
    return values, {"double": 2 * x, "number": config[TRIAL_NUMBER], "storage_id": config[TRIAL_ID]}


@dataclass(frozen=True)
class ToyTrials:
    """A `TrialFactory` without a model: `define` suggests `x` and `kind` (and sets an attr on the driver), `build`
    returns `toy_trial`. Picklable: a runner may send it to other processes."""

    key: str = "toy"
    metrics: tuple[str, ...] = ("score", "cost")
    device: str = "cpu"

    def define(self, trial: Any) -> dict[str, Any]:
        x = trial.suggest_int("x", 0, 3)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        trial.set_user_attr("defined", f"{kind}{x}")
        return {"x": x, "kind": kind}

    def build(self) -> TrialFunction:
        return toy_trial


def expected_trials() -> list[dict[str, Any]]:
    """The toy study's trials computed without a runner: number, state, params, values, attrs, failure."""
    out = []
    for number, (x, kind) in enumerate(GRID):
        record: dict[str, Any] = {"number": number, "params": {"x": x, "kind": kind}}
        attrs = {"defined": f"{kind}{x}"}
        try:
            values, more = toy_trial({"x": x, "kind": kind, TRIAL_NUMBER: number, TRIAL_ID: None})
        except ValueError as exc:
            record.update(state="FAIL", values=None, failure=f"{type(exc).__name__}: {exc}")
        else:
            record.update(state="COMPLETE", values=[values["score"], values["cost"]], failure=None)
            attrs.update({k: v for k, v in more.items() if k != "storage_id"})  # checked against the trial's
        out.append({**record, "attrs": attrs})
    return out


def _recorded(study: Any, runner: str) -> list[dict[str, Any]]:
    """The study's trials in the form of `expected_trials` (the runner's own attrs left out, the storage id the
    config carried checked against the trial's and then left out)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        attrs = {k: v for k, v in t.user_attrs.items() if not k.startswith(f"{runner}_")}
        if "storage_id" in attrs:
            _expect(
                attrs.pop("storage_id") == trial_id(t),
                f"trial {t.number}: the config's {TRIAL_ID!r} is not the trial's storage id",
            )
        out.append(
            {
                "number": t.number,
                "params": t.params,
                "state": t.state.name,
                "values": t.values,
                "failure": t.system_attrs.get("fail_reason") if t.state.name == "FAIL" else None,
                "attrs": attrs,
            }
        )
    return out


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def check_runner(name: str, options: Any = None, *, directory: str | Path | None = None) -> None:
    """Run the toy study on the runner registered as `name` (with `options`, default its defaults; its files under
    `directory`, default a temporary folder) and check what it recorded. Raises `AssertionError` naming the rule."""
    import optuna

    runner = get_runner(name)
    runner.check(options)
    with tempfile.TemporaryDirectory(prefix="toast-runner-check-") as temp:
        folder = Path(directory) if directory is not None else Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            storage=f"sqlite:///{folder / 'toy.db'}",
            study_name=f"toy-{name}",
            directions=["maximize", "minimize"],
            sampler=optuna.samplers.RandomSampler(seed=0),
            load_if_exists=False,
        )
        for x, kind in GRID:
            study.enqueue_trial({"x": x, "kind": kind})
        factory = ToyTrials()

        summary = runner.run(study, factory, n_trials=0, options=options, directory=folder)
        _expect(
            summary.get("trials") == 0 and not study.get_trials(deepcopy=False, states=_started()),
            f"runner {name!r}: n_trials=0 must run nothing",
        )

        seen: list[Any] = []
        summary = runner.run(
            study,
            factory,
            n_trials=len(GRID),
            options=options,
            callbacks=[lambda s, t: seen.append((s, t))],
            directory=folder,
        )
        _expect(summary.get("trials") == len(GRID), f"runner {name!r}: its summary must say how many trials it ran")
        got, want = _recorded(study, name), expected_trials()
        _expect(len(got) == len(want), f"runner {name!r}: {len(got)} trials recorded, {len(want)} asked")
        for g, w in zip(got, want, strict=False):
            for field in ("number", "params", "state", "values", "failure", "attrs"):
                _expect(
                    g[field] == w[field],
                    f"runner {name!r}, trial {w['number']}: {field} {g[field]!r}, expected {w[field]!r}",
                )
        numbers = sorted(t.number for _, t in seen)
        _expect(numbers == list(range(len(GRID))), f"runner {name!r}: callbacks saw trials {numbers}, one each")
        _expect(
            all(s is study and t.state.is_finished() for s, t in seen),
            f"runner {name!r}: callbacks take (the study, the finished trial)",
        )


def _started() -> tuple[Any, ...]:
    import optuna

    return tuple(s for s in optuna.trial.TrialState if s is not optuna.trial.TrialState.WAITING)
