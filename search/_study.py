"""The study: an Optuna study over the plan space, stored in the run directory, resumable.

Budgets are Optuna constraints (`trial.set_constraint`), so the sampler knows infeasible plans;
plans far over budget are recorded with their cost but not scored. Identical plans are scored once.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from toast.objectives import (
    ESTIMATED_FIELD,
    OBJECTIVES,
    CostTable,
    Objective,
    Role,
    get_objective,
    get_objectives,
    held_budgets,
    list_objectives,
    undefined_field,
)
from toast.runners import set_user_attrs, trial_id
from toast.spaces import Plan, PlanSpace, front_seed_plans, rank_spans, seed_plans, translator_class

from .._artifacts import atomic_write_text
from .._faults import fault_point
from ..errors import DISK_ERRORS
from ._settings import SearchSettings, SettingsError, StudySettings
from ._stages import FULL, SCORED_ON, SUBSET_SAMPLES, dominating_trial, front_snapshot, subset_fields
from ._storage import STUDY_NAME, open_storage
from .samplers import Sampler, SamplerContext, get_sampler, one_shot_plans

FAR_OVER_BUDGET = 1.25  # plans costing more than this × a budget are not scored
INTERRUPTED = "interrupted: the process ended while this trial ran"


class Budgets(Mapping[str, float]):
    """Cost limits by cost objective name, in the objectives' units (`{"gflops": 15.0, "latency": 4.0}`: GFLOPs per
    input, ms per batch), in registry order; an objective without a limit is absent."""

    def __init__(self, limits: Mapping[str, float | None] | None = None) -> None:
        given = dict(limits or {})
        order = [*list_objectives(Role.COST), *given]
        self._limits = {k: float(given[k]) for k in dict.fromkeys(order) if given.get(k) is not None}

    def __getitem__(self, name: str) -> float:
        return self._limits[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._limits)

    def __len__(self) -> int:
        return len(self._limits)

    def __repr__(self) -> str:
        return f"Budgets({self._limits!r})"

    def as_dict(self) -> dict[str, float]:
        """The limits as a plain dict (front.json's `budgets`, `choose`'s argument)."""
        return dict(self._limits)


def resolve_budgets(study: StudySettings, costs: CostTable, space: PlanSpace) -> tuple[Budgets, list[str]]:
    """Budgets in absolute units (`budget_fraction` as GFLOPs), each checked against the cheapest plan; notes for
    the user.

    A latency budget is checked against the cheapest plan's estimate from `costs.latency` (the run's latency
    table), and the error names that plan; another cost objective's against the cheapest plan's value."""
    original = costs.original
    limits = dict(study.budgets)
    if study.budget_fraction is not None:
        limits["gflops"] = study.budget_fraction * original.gflops
    budgets = Budgets(limits)
    notes = _latency_notes(budgets.get("latency"), costs, space)
    cheapest = cheapest_cost(costs, space)
    known = {"gflops": ("GFLOPs", cheapest[0], original.gflops), "params": ("M params", cheapest[1], original.mparams)}
    for objective, limit in budgets.items():
        if objective == "latency":
            continue
        if objective in known:
            name, low, full = known[objective]
        else:  # a cost objective registered since: only its original value is known without enumerating the space
            o, original_plan = get_objective(objective), Plan((), space.num_blocks)
            name, low, full = o.unit, -math.inf, o.of_plan(original_plan, costs.cost(original_plan))
        if limit < low - 1e-12:
            raise SettingsError(
                f"budget {limit:.4g} {name} is below the cheapest plan in this space ({low:.4g} {name}, "
                f"the original is {full:.4g}): raise the budget or allow more removed blocks"
            )
        if limit >= full:
            notes.append(f"budget {limit:.4g} {name} is above the original model's {full:.4g}: every plan fits")
    return budgets, notes


def _latency_notes(limit: float | None, costs: CostTable, space: PlanSpace) -> list[str]:
    """A latency budget against the latency table: a `SettingsError` naming the cheapest plan when it is below
    that plan's estimate with the table's margin, a note on the margin and when every plan fits."""
    if limit is None:
        return []
    table = costs.latency
    if table is None:
        raise SettingsError("a latency budget needs the run's latency table (measured by `prepare`)")
    from ._latency import cheapest_latency_plan

    plan, low = cheapest_latency_plan(table, space)
    full = table.original_ms
    where = f"ms per batch of {table.batch_size} on {table.device}"
    held = table.held_limit(limit)
    margin = f" plus the table's {table.margin:.1%} margin" if table.margin > 0 else ""
    if held < low - 1e-12:
        raise SettingsError(
            f"budget {limit:.4g} ms is below the cheapest plan in this space ({plan}: estimated {low:.4g} {where}"
            f"{margin}; the original {full:.4g} ms): raise the budget or allow more removed blocks"
        )
    notes = []
    if table.margin > 0:
        notes.append(
            f"latency budget {limit:.4g} ms: plans are held to an estimate of {held:.4g} ms, the table's margin "
            f"(its check plans ran up to {table.margin:.1%} slower than estimated)"
        )
    if held >= full:
        notes.append(
            f"budget {limit:.4g} ms is above the original model's estimated {full:.4g} {where}: every plan fits"
        )
    return notes


def cheapest_cost(costs: CostTable, space: PlanSpace) -> tuple[float, float]:
    """Lowest GFLOPs and M params any plan of the space reaches (identity spans over the costliest blocks)."""
    r = space.removal_limit
    flops = sorted(b.flops for b in costs.blocks)
    params = sorted(b.params for b in costs.blocks)
    keep = len(flops) - r
    base = costs.embed.flops + costs.tail.flops
    basep = costs.embed.params + costs.tail.params
    return (base + sum(flops[:keep])) / 1e9, (basep + sum(params[:keep])) / 1e6


def undefined_key(name: str) -> str:
    """The record field that says why objective `name` has no value (e.g. `fidelity_undefined`)."""
    return undefined_field(name)


def plan_key(plan: Plan) -> str:
    return json.dumps(plan.to_json())


class Search:
    """An Optuna study whose trials are plans scored by `evaluate(plan) -> dict`.

    `storage`: the Optuna storage to keep the study in (default: the run directory's, `open_storage(settings.out)`)."""

    def __init__(
        self, settings: SearchSettings, *, space: PlanSpace, costs: CostTable, evaluate, stats=None, storage=None
    ) -> None:
        import optuna

        self.settings = settings  # the whole settings: a Ray worker rebuilds the trial from them
        self.study_settings = settings.study  # the study's section: sampler, trials, seed, budgets, out
        self.scoring = settings.scoring  # objectives and the multi-fidelity rule
        self.space = space
        self.costs = costs
        self.evaluate = evaluate
        self.stats = stats
        self.objectives = get_objectives(self.scoring.objectives)
        self.budgets, self.notes = resolve_budgets(self.study_settings, costs, space)
        self.held = held_budgets(self.budgets, costs.latency)  # what the constraints hold estimates to
        self.study_settings.out.mkdir(parents=True, exist_ok=True)
        self.storage = storage if storage is not None else open_storage(self.study_settings.out)
        self.study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=self.storage,
            directions=[o.direction for o in self.objectives],
            sampler=self._sampler(),
            load_if_exists=True,
        )
        self._name_metrics()
        self.new = not self.study.trials
        self.disk_error: OSError | None = None  # a trial that met a full disk stops the study (`objective`)
        self._mark_interrupted()
        self._done: dict[str, Any] = {}
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            self._done.setdefault(json.dumps(t.user_attrs.get("spans")), t)
        self._front: list[dict[str, Any]] = front_snapshot(
            (dict(t.user_attrs, number=t.number) for t in self._done.values()), self.objectives
        )  # the fully scored trials a plan's subset scores are compared with (`toast.search._stages`)
        self._partial: dict[str, dict[str, Any]] = {}  # subset scores of trials interrupted before the full sets
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if SUBSET_SAMPLES in t.user_attrs and SCORED_ON not in t.user_attrs:
                fields = {k: v for k, v in t.user_attrs.items() if k.startswith("subset_")}
                self._partial.setdefault(json.dumps(t.user_attrs.get("spans")), fields)

    def _name_metrics(self) -> None:
        """Name the study's values after the objectives (trials.csv's names), so optuna-dashboard and
        `trials_dataframe` show "accuracy", "gflops" rather than "Objective 0 / 1"; a resumed study keeps its names."""
        import warnings

        import optuna

        if self.study.metric_names is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names([o.name for o in self.objectives])

    @property
    def sampler_spec(self) -> Sampler:
        """The registered strategy the settings name (`toast.search.samplers`)."""
        return get_sampler(self.study_settings.sampler)

    def sampler_context(self) -> SamplerContext:
        """What the strategy is built from: the space, seed, trials, objectives, constraints and statistics."""
        return SamplerContext(
            space=self.space,
            seed=self.study_settings.seed,
            trials=self.study_settings.trials,
            objectives=tuple(self.objectives),
            feasible=lambda plan: all(v <= 0 for v in self.constraints(plan).values()),  # budgets and the space's
            stats=self.stats,
        )

    def _sampler(self):
        return self.sampler_spec.build(self.sampler_context())

    def _mark_interrupted(self) -> None:
        """Trials left RUNNING by a killed process are recorded as failed, with the reason."""
        import optuna

        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self.storage.set_trial_system_attr(trial_id(t), "fail_reason", INTERRUPTED)
            self.storage.set_trial_state_values(trial_id(t), optuna.trial.TrialState.FAIL)

    # ---- the trial ---------------------------------------------------------------------------
    def constraints(self, plan: Plan) -> dict[str, float]:
        cost = self.costs.cost(plan)
        out = {name: get_objective(name).of_plan(plan, cost) - limit for name, limit in self.held.items()}
        for i, v in enumerate(self.space.constraint_violations(plan)):
            out[f"space{i}"] = float(v)
        return out

    def far_over_budget(self, plan: Plan) -> bool:
        cost = self.costs.cost(plan)
        return any(get_objective(k).of_plan(plan, cost) > FAR_OVER_BUDGET * v for k, v in self.budgets.items())

    def objective(self, trial) -> list[float]:
        """The Optuna objective: decode, constrain, score (or reuse an identical plan's scores).

        Optuna marks a trial that raises as failed but does not store why: the reason is stored
        here (`fail_reason`), for Ctrl-C as for any error, before the exception goes on.
        """
        try:
            return self._objective(trial)
        except KeyboardInterrupt:
            self.storage.set_trial_system_attr(
                trial_id(trial), "fail_reason", "interrupted: Ctrl-C (KeyboardInterrupt) while this trial ran"
            )
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:  # every later trial would fail the same way
                self.disk_error = exc
                trial.study.stop()
            self.storage.set_trial_system_attr(trial_id(trial), "fail_reason", f"{type(exc).__name__}: {exc}")
            raise

    def _objective(self, trial) -> list[float]:
        fault_point("trial")
        plan, metrics = self.define(trial)
        if metrics is None:
            metrics = self.score(plan, trial_id(trial))
        set_user_attrs(self.storage, trial_id(trial), metrics)  # one commit, not one per metric
        self.remember(self.study, self.storage.get_trial(trial_id(trial)))
        return self.values(metrics)

    def score(self, plan: Plan, tid: int) -> dict[str, Any]:
        """Score `plan` for the trial of storage id `tid` in this process (`evaluate`, through the subset stage when
        there is one): its subset scores are stored with the trial as they come, and reused if it was interrupted."""
        options = self.stage_options(self.front())
        if options:
            rule = options["promote"]

            def promote(scores: dict[str, Any], samples: int) -> Any:
                # kept with the trial: a resumed study does not score this plan on the subset again
                set_user_attrs(self.storage, tid, subset_fields(scores, self.objectives, samples))
                return rule(scores, samples)

            options["promote"] = promote
            if plan_key(plan) in self._partial:  # interrupted after its subset stage: that stage is not rerun
                options["subset_scores"] = self._partial[plan_key(plan)]
        return dict(self.evaluate(plan, **options), scored=True)

    # ---- multi-fidelity ------------------------------------------------------------------------
    @property
    def staged(self) -> bool:
        """Whether plans are scored on a subset of the samples first (`fidelity_fraction` strictly inside 0…1)."""
        return self.scoring.staged

    def front(self) -> list[dict[str, Any]]:
        """The fully scored trials so far, as the multi-fidelity rule reads them (sent to a Ray worker as is)."""
        return list(self._front)

    def stage_options(self, front: list[dict[str, Any]]) -> dict[str, Any]:
        """`evaluate`'s keyword arguments: the rule that stops a plan at the subset (none without a subset stage)."""
        return {"promote": promote_rule(front, self.objectives, self.scoring.fidelity_z)} if self.staged else {}

    def define(self, trial) -> tuple[Plan, dict[str, Any] | None]:
        """The ask side of a trial (shared by the local and Ray runners): decode the plan, set its
        constraints and attrs, and return the metrics already known without scoring it (an identical
        plan's, or a plan far over budget's cost), else None: the plan must be scored."""
        plan = self.space.suggest(trial)
        trial.set_user_attr("spans", plan.to_json())
        trial.set_user_attr("plan", str(plan))
        constraints = self.constraints(plan)
        for name, value in constraints.items():
            trial.set_constraint(name, value)
        trial.set_user_attr("feasible", all(v <= 0 for v in constraints.values()))
        previous = self._done.get(plan_key(plan))
        if previous is not None:  # where it ran (a runner's `ray_*` attrs) is not a score
            metrics = {
                k: v
                for k, v in previous.user_attrs.items()
                if k not in ("spans", "plan", "feasible", "duplicate_of") and not k.startswith("ray_")
            }
            metrics.update(duplicate_of=previous.number, seconds=0.0)
            return plan, metrics
        if self.far_over_budget(plan) or not self.space.feasible(plan):  # outside the space's limits: not scored
            cost = self.costs.cost(plan)  # the cost objectives need no model run
            counted = {name: get_objective(name).of_plan(plan, cost) for name in list_objectives(Role.COST)}
            counted = {k: v for k, v in counted.items() if not math.isnan(v)}  # latency: only with a latency table
            if cost.latency_ms is not None:
                counted[ESTIMATED_FIELD] = cost.latency_ms
            return plan, {**counted, "scored": False, "seconds": 0.0}
        return plan, None

    def values(self, metrics: dict[str, Any]) -> list[float]:
        """The objective values Optuna is told, in the study's order."""
        return [self._value(o, metrics) for o in self.objectives]

    def remember(self, study, trial) -> None:
        """After a trial finishes (here or on a Ray worker): identical plans reuse its scores from now on, and a
        fully scored one joins the trials the multi-fidelity rule compares with."""
        if (
            trial.state.name in ("COMPLETE", "RUNNING")  # RUNNING: this process's trial, before Optuna closes it
            and trial.user_attrs.get("scored", True)
            and "duplicate_of" not in trial.user_attrs
        ):
            key = json.dumps(trial.user_attrs.get("spans"))
            if key not in self._done:
                self._done[key] = trial
                self._front.extend(front_snapshot([dict(trial.user_attrs, number=trial.number)], self.objectives))

    @staticmethod
    def _value(objective, metrics: dict) -> float:
        v = metrics.get(objective.name)
        if v is None or not math.isfinite(
            v
        ):  # not scored, or undefined: the worst value, so the sampler never prefers it
            return objective.worst_value
        return float(v)

    # ---- driving -------------------------------------------------------------------------------
    def enqueue(self, plans: list[Plan]) -> int:
        """Queue the plans not yet scored; returns how many wait to run. A plan already waiting (queued by an
        interrupted invocation) counts without a second entry; a plan whose trial failed is queued again (Optuna's
        `skip_if_exists` would skip it, yet count it, so a run would spend that trial on the sampler's own plan)."""
        import optuna

        waiting = {
            json.dumps(t.system_attrs.get("fixed_params", t.params), sort_keys=True)
            for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        }
        seen = set(self._done)
        n = 0
        for plan in plans:
            key = plan_key(plan)
            if key in seen or not self.space.contains(plan):
                continue
            seen.add(key)
            genome = self.space.encode(plan)
            if json.dumps(genome, sort_keys=True) not in waiting:
                self.study.enqueue_trial(genome)
            n += 1
        return n

    def trials_to_run(self) -> int:
        """How many trials this invocation still runs (finished ones are kept, never recomputed)."""
        import optuna

        waiting = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        spec = self.sampler_spec
        if spec.enumerates:
            return waiting
        complete = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        trials = self.study_settings.trials
        if spec.planned is not None:  # a peer's rule proposes so many plans and no more
            trials = min(trials, spec.planned(self.sampler_context()))
        return max(0, trials - complete)

    #: how a new study is seeded from the statistics: "front" (`front_seed_plans`: the predicted-best plan at each
    #: cost level, exact under the additive residual model) or "greedy" (`seed_plans`: best single spans, grown);
    #: chosen by `bench/bench_front.py`
    seeding: str = "front"

    def prepare(self) -> None:
        """Seed a new study (exhaustive: every plan; otherwise the plans the statistics predict best)."""
        spec = self.sampler_spec
        if spec.enumerates:
            self.enqueue(list(self.space.enumerate()))
        elif spec.seeded and self.new and self.stats is not None and self.study_settings.seeds_per_study > 0:
            plans = [*self.peer_seeds(), *self.seeds()] if self.peer_seeding else self.seeds()
            self.enqueue(plans[: max(1, self.study_settings.trials // 2)])

    #: whether a new study's seeds start with the peers' one-shot plans (`peer_seeds`); `bench/bench_peers.py`: they
    #: lift the early useful-region hypervolume on demo-vit and demo-lm, not on MiniLM (RESULTS.md, issue 24)
    peer_seeding: bool = True

    def peer_seeds(self, names: tuple[str, ...] = ("shortgpt", "replaceme")) -> list[Plan]:
        """The peers' one-shot plans (`peer_plans`): each peer's first `seeds_per_study / len(names)` (fewest removed
        blocks first), ShortGPT's then ReplaceMe's; none where the statistics hold no token cosines (a capture made
        before them). So the default study holds ShortGPT's own choice after as many trials as ShortGPT spends."""
        if self.stats is None or self.stats.token_cosine() is None:
            return []
        share = -(-self.study_settings.seeds_per_study // len(names))
        return [plan for name in names for plan in self.peer_plans((name,))[:share]]

    def seeds(self) -> list[Plan]:
        """The plans the similarity analysis predicts best (`seeding`), from the capture alone: no forward pass."""
        # the analysis ranks the kinds fitted from the statistics; a trained kind is not trained for it
        kinds = [k for k in self.space.kinds if not translator_class(k).needs_activations]
        ranked = rank_spans(self.stats, kinds=kinds, max_len=self.space.removal_limit)
        name = self.seed_cost
        objective = get_objective(name)
        cost = lambda p: objective.of_plan(p, self.costs.cost(p))  # noqa: E731
        k, budget = self.study_settings.seeds_per_study, self.budgets.get(name)
        if self.seeding == "greedy":
            return seed_plans(self.stats, self.space, cost, budget, k=k, ranked=ranked)
        return front_seed_plans(ranked, self.space, cost, k=k, budget=budget)

    def peer_plans(self, names: tuple[str, ...] = ("shortgpt", "replaceme")) -> list[Plan]:
        """The plans the peers' one-shot rules choose from the statistics alone (no evaluation), in their order;
        those whose kinds the space lacks are left out."""
        ctx = self.sampler_context()
        out: list[Plan] = []
        for name in names:
            spec = get_sampler(name)
            if spec.missing_kinds(self.space.kinds) is None:
                out += [p for p in one_shot_plans(spec.build(ctx)) if self.space.contains(p)]
        return out

    @property
    def seed_cost(self) -> str:
        """The cost objective the seeds are spread over and limited by: the study's first cost objective that has a
        budget, else GFLOPs (the levels of a study with no budget, or one on a cost it does not optimise)."""
        costs = [o.name for o in self.objectives if o.role is Role.COST]
        return next((name for name in costs if name in self.budgets), "gflops")

    def records(self) -> list[dict[str, Any]]:
        """One dict per trial: number, state, spans, plan, objectives and metrics, seconds, failure."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state.name == "WAITING":
                continue
            r: dict[str, Any] = {"number": t.number, "state": t.state.name}
            r.update(t.user_attrs)
            if t.state.name == "FAIL":
                r["failure"] = t.system_attrs.get("fail_reason", "failed")
            if not r.get("scored", True):
                r["state"] = "COMPLETE"
            elif t.state.name == "COMPLETE":
                r.setdefault(SCORED_ON, FULL)  # a trial from before multi-fidelity: scored on the full sets
            out.append(r)
        return out


def promote_rule(front: list[dict[str, Any]], objectives, z: float):
    """`evaluate`'s `promote`: the number of a fully scored trial in `front` that dominates a plan's subset scores
    with confidence (the plan stops there), else None (it goes on to the full sets)."""
    return lambda metrics, samples: dominating_trial(metrics, samples, front, objectives, z)


def _reads(objective: Objective, member: str) -> bool:
    return member in objective.inputs() or member in objective.needs


def trial_columns(records: Collection[Mapping[str, Any]] = ()) -> list[str]:
    """The columns of `trials.csv`: the trial, every registered objective's fields (registry order) that suit the run's
    model, then how it ran. A causal LM's (`records` hold a next-token score): no objective that reads labels; any
    other model's: no objective that reads next-token scores; lm-eval's `downstream` only where a record holds it."""
    lm_columns = {c for o in OBJECTIVES.values() if _reads(o, "token_scores") for c in o.columns}
    lm = any(r.get(c) is not None for r in records for c in lm_columns)
    suits = (lambda o: not _reads(o, "labels")) if lm else (lambda o: not _reads(o, "token_scores"))
    scored = {k for r in records for k, v in r.items() if v is not None}

    def shown(o: Objective) -> bool:  # lm-eval's tasks: only in a run that scored them
        return suits(o) and (not _reads(o, "downstream") or o.name in scored)

    return [
        "number",
        "state",
        "spans",
        "plan",
        *(c for o in OBJECTIVES.values() if shown(o) for c in o.columns),
        "feasible",
        "on_front",
        "scored",
        "scored_on",
        "dominated_by",
        "duplicate_of",
        "forward_blocks",
        "forward_blocks_reused",
        "seconds",
        "seconds_fit",
        "seconds_forward",
        "seconds_probe",
        "seconds_overhead",
        "failure",
    ]


def write_trials_csv(records: list[dict[str, Any]], path: Path, *, front: Collection[int] | None = None) -> None:
    """`trials.csv`: one row per trial, the columns DESIGN.md lists (spans as JSON).

    `front`: the trial numbers on the Pareto front (front.json's front); `on_front` says for each row whether it is
    one of them (left empty without `front`), so the CSV alone tells the front from the rest."""
    unscored_drop = [
        c for o in OBJECTIVES.values() if o.role is not Role.COST for c in o.columns
    ]  # a plan not scored has costs only
    f = io.StringIO()
    # written whole or not at all (a kill or a full disk leaves the previous trials.csv)
    w = csv.DictWriter(f, fieldnames=trial_columns(records), extrasaction="ignore")
    w.writeheader()
    for r in records:
        row = dict(r)
        row["spans"] = json.dumps(r.get("spans"))
        if front is not None:
            row["on_front"] = r.get("number") in front
        if not r.get("scored", True):
            for column in unscored_drop:
                row.pop(column, None)
        for k, v in row.items():
            if isinstance(v, float):
                row[k] = "" if math.isnan(v) else f"{v:.6g}"
        w.writerow(row)
    atomic_write_text(path, f.getvalue())


def _within(space: PlanSpace, spans: Any) -> bool:
    """Whether the plan of a record's `spans` is a plan of `space` within its limits."""
    try:
        return space.feasible(Plan.of(spans or [], space.num_blocks))
    except (ValueError, TypeError):  # a plan of another space (PlanError is a ValueError)
        return False


def scored_records(records: list[dict[str, Any]], objectives, space: PlanSpace | None = None) -> list[dict[str, Any]]:
    """Complete, scored trials with every objective, one per distinct plan; with `space`, only the plans within its
    limits (`max_removed`, `min_kept`, the kinds' refusals): a resumed study may hold trials scored before a limit
    was set, and those are never on the front nor chosen."""
    seen, out = set(), []
    for r in records:
        if r["state"] != "COMPLETE" or not r.get("scored", True) or "duplicate_of" in r:
            continue
        if space is not None and not _within(space, r.get("spans")):
            continue
        if r.get(SCORED_ON, FULL) != FULL:  # scored on the subset only: never on the front
            continue
        # an objective that is undefined for this plan (the reason is in the record) ranks as the worst value
        r = {**r, **{o.name: o.worst_value for o in objectives if r.get(undefined_key(o.name))}}
        if any(not isinstance(r.get(o.name), (int, float)) or not np.isfinite(r.get(o.name)) for o in objectives):
            continue
        key = json.dumps(r.get("spans"))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def reported_fields() -> tuple[str, ...]:
    """The fields of a record that front.json reports: the plan, every registered objective's, the run's."""
    objective_fields = (
        k for o in OBJECTIVES.values() for k in (*o.columns, *((o.search_field,) if o.search_field else ()))
    )
    return ("number", "spans", "plan", *objective_fields, "feasible", "seconds")


def reported(record: dict[str, Any]) -> dict[str, Any]:
    """The record's reported fields; NaN / inf (e.g. CKA of constant features) as null, so the JSON is standard."""

    def value(k: str):
        v = record[k]
        undefined = bool(
            record.get(undefined_key(k))
        )  # ranked as the worst value; reported as missing, with the reason
        return None if undefined or (isinstance(v, float) and not math.isfinite(v)) else v

    return {k: value(k) for k in reported_fields() if k in record and not (k.endswith("_undefined") and not record[k])}
