"""The tuner: Optuna's ask-and-tell over the driver's deployments.

`Tuner` is the driver's `DeploymentSource` (`sweep.driver.driver`): one scheduler, ours, runs
everything (placement, pinning, retries, node waits), and the tuner only says what to run next.
Each configuration Optuna asks for is planned as one point (`sweep.plan.plan.build_plan` with
the point's values), whose seed is a capacity search (or one trial, for a summary-column
objective), and becomes one deployment. While fewer than `search.tune.parallel` configurations
are in flight (0: as many as the cluster holds deployments of this shape) and the budget allows,
it asks for more; when a seed is recorded it reads the outcome from the results folder
(`sweep.tune.outcome`) and tells the study.

- Stopping losers: with the capacity objective, each new search starts at the best capacity
  found so far and stops (`pruned`) once a probe fails at or below it (`SearchConfig.stop_below`,
  `sweep.worker.search`); the bound is kept in the Optuna trial, so a resumed search replays it.
- Resume: the study is the results folder's journal (`sweep.tune.study`). Trials a killed run
  left running are run again with their parameters and bound, their probes on disk reused
  (`sweep.driver.resume.with_recorded_probes`); the budget counts configurations ended, so a
  resumed sweep ends with as many as one left alone, and a re-run with a larger budget adds
  the difference.
- Duplicates: a configuration already measured (the same search id) is not run again: Optuna is
  told its earlier value, and the budget does not count it. After `EXPLORE_AFTER` repeats in a
  row (TPE on a small discrete space keeps to what it knows) the next asks sample at random, and
  after `MAX_DUPLICATES` the space counts as spent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import optuna
import ray

from sweep.core.errors import ConfigError
from sweep.core.tune_config import parse_space
from sweep.driver.placement import room_for
from sweep.driver.resume import with_recorded_probes
from sweep.plan.plan import SweepPlan, build_plan
from sweep.spec import Deployment, TrialSpec
from sweep.tune.outcome import COMPLETE, FAILED, PRUNED, Outcome, read_outcome
from sweep.tune.space import distributions, suggest
from sweep.tune.study import FINISHED, open_study
from sweep.tune.table import DUPLICATE, TuneTable
from sweep.worker.search_run import search_finished

log = logging.getLogger(__name__)
STATES = {
    COMPLETE: optuna.trial.TrialState.COMPLETE,
    PRUNED: optuna.trial.TrialState.PRUNED,
    FAILED: optuna.trial.TrialState.FAIL,
}
EXPLORE_AFTER = 5  # asks in a row that repeat measured configurations: sample at random
MAX_DUPLICATES = 200  # ... and after this many, the space is spent


@dataclass
class _Flight:
    """A configuration being measured: its Optuna trial, values and seed."""

    number: int
    params: dict[str, Any]
    seed: TrialSpec
    stop_below: float | None


class Tuner:
    """Asks the study for configurations, hands them to the driver, tells it their outcomes."""

    def __init__(
        self, plan: SweepPlan, overrides: list[str], store: Any, progress: Any = None
    ) -> None:
        self.overrides, self.store, self.progress = list(overrides), store, progress
        self.search = plan.base.search
        self.tune = self.search.tune
        self.specs = parse_space(self.tune.space)
        self.study = open_study(store.root, plan.name, self.tune)
        self.table = TuneTable(store, self.tune.objective, self.tune.goal)
        self.flights: dict[str, _Flight] = {}  # seed id -> configuration in flight
        self.measured: dict[str, int] = {}  # seed id -> the trial number that measured it
        self.asked: dict[str, dict[str, Any]] = {}  # values asked (JSON) -> their seed's ids
        self.parallel = self.tune.parallel or room_for(plan.deployments[0], ray.nodes())
        self.duplicates, self.spent = 0, False
        self.explorer: optuna.Study | None = None  # the same study, sampled at random
        self.name = plan.name
        self._started = False
        self._catch_up()

    # ---- the driver's source ----
    def more(self, recorded: set[str]) -> list[Deployment] | None:
        """Tell what ended, then the deployments to start now; None when the study is done."""
        for seed_id in [s for s in self.flights if s in recorded]:
            self._finish(self.flights.pop(seed_id))
        out: list[Deployment] = []
        if not self._started:
            self._started = True
            out.extend(self._resume_running())
        while len(self.flights) < self.parallel and self.left() > 0:
            if self.duplicates >= MAX_DUPLICATES:
                if not self.spent:
                    self.spent = True
                    log.warning("the search space holds no configuration not measured yet")
                break
            deployment = self._ask()
            if deployment is not None:
                out.append(deployment)
        if not out and not self.flights:
            return None
        return out

    def left(self) -> int:
        """Configurations the budget still allows, those in flight counted."""
        return self.tune.budget - self.table.finished() - len(self.flights)

    # ---- asking ----
    def _ask(self) -> Deployment | None:
        study = self.study
        if self.duplicates >= EXPLORE_AFTER:  # the model keeps to what it measured: look around
            if self.explorer is None:
                sampler = optuna.samplers.RandomSampler(seed=self.tune.seed)
                self.explorer = open_study(self.store.root, self.name, self.tune, sampler)
            study = self.explorer
        trial = study.ask()
        params = suggest(trial, self.specs)
        key = _key(params)
        if key in self.asked:  # the same values again: no need to plan them to know
            ids = self.asked[key]
            self._duplicate(trial.number, params, ids, self.measured.get(ids["seed_id"]))
            return None
        bound = self._bound()
        try:
            seed = self._seed(params, bound)
        except ConfigError as exc:  # a value its field refuses: that configuration failed
            self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            outcome = Outcome(FAILED, None, reason=str(exc))
            self.table.add(trial.number, params, distributions(self.specs, params), outcome, {})
            return None
        earlier = self.measured.get(seed.trial_id)
        if earlier is not None or seed.trial_id in self.flights:
            self._duplicate(trial.number, params, _ids(seed), earlier)
            return None
        self.duplicates = 0
        self.asked[key] = _ids(seed)
        trial.set_user_attr("stop_below", bound)
        return self._launch(trial.number, params, seed, bound)

    def _launch(
        self, number: int, params: dict[str, Any], seed: TrialSpec, bound: float | None
    ) -> Deployment | None:
        """Hand the configuration to the driver, unless the folder already answers it."""
        flight = _Flight(number, params, seed, bound)
        if seed.search is not None:
            seed = with_recorded_probes(seed, self.store, retry_failed=False)
            flight.seed = seed
            if search_finished(seed):
                self._finish(flight)
                return None
        elif self.store.trial_status(seed.deployment_id, seed.trial_id) is not None:
            self._finish(flight)
            return None
        self.flights[seed.trial_id] = flight
        config = seed.config
        return Deployment(seed.deployment_id, seed.label, config, (seed,))

    def _seed(self, params: dict[str, Any], bound: float | None) -> TrialSpec:
        """The configuration's seed, its search told where to start and when to stop."""
        plan = build_plan(self.overrides, point=params)
        seed = plan.deployments[0].trials[0]
        if seed.search is None or bound is None:
            return seed
        settings = self.search
        start = max(bound, settings.min_load or 0.0)
        if settings.max_load:
            start = min(start, settings.max_load)
        search = dataclasses.replace(seed.config.search, stop_below=bound, start=start)
        return dataclasses.replace(seed, config=dataclasses.replace(seed.config, search=search))

    def _bound(self) -> float | None:
        """The best capacity found so far (its lower end), below which a search is pruned."""
        if not self.tune.prune or self.tune.objective != "capacity":
            return None
        lows = [r["low"] for r in self.table.rows.values()
                if r["state"] == COMPLETE and r["low"]]  # fmt: skip
        return max(lows) if lows else None

    # ---- telling ----
    def _finish(self, flight: _Flight) -> None:
        outcome = read_outcome(self.store, flight.seed, self.tune.objective)
        state = STATES[outcome.state]
        value = outcome.value if outcome.state == COMPLETE else None
        self.study.tell(flight.number, value, state=state, skip_if_finished=True)
        self.measured[flight.seed.trial_id] = flight.number
        self._record(flight.number, flight.params, flight.seed, outcome, flight.stop_below)
        self._say(flight, outcome)

    def _duplicate(
        self, number: int, params: dict[str, Any], ids: dict[str, Any], earlier: int | None
    ) -> None:
        """Tell a repeated configuration its earlier value (failed while that one runs)."""
        self.duplicates += 1
        row = self.table.rows.get(earlier) if earlier is not None else None
        if row is not None and row["state"] == COMPLETE:
            self.study.tell(number, row["value"])
        elif row is not None and row["state"] == PRUNED:
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        outcome = Outcome(DUPLICATE, row["value"] if row else None, reason="measured before")
        self.table.add(number, params, distributions(self.specs, params), outcome,
                       {**ids, "duplicate_of": earlier})  # fmt: skip

    def _record(
        self,
        number: int,
        params: dict[str, Any],
        seed: TrialSpec,
        outcome: Outcome,
        bound: float | None,
    ) -> None:
        ids = {**_ids(seed), "stop_below": bound}
        self.table.add(number, params, distributions(self.specs, params), outcome, ids)
        self.asked[_key(params)] = _ids(seed)

    def _say(self, flight: _Flight, outcome: Outcome) -> None:
        if self.progress is None:
            return
        values = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in flight.params.items())
        done = self.table.finished()
        what = (
            f"{outcome.state} {outcome.value:.4g}" if outcome.value is not None else outcome.state
        )
        self.progress.note(f"tune {done}/{self.tune.budget}: {values}: {what}")

    # ---- resume ----
    def _catch_up(self) -> None:
        """Read what an earlier run ended: rows it did not get to write are read again."""
        for trial in self.study.get_trials(deepcopy=False, states=FINISHED):
            row = self.table.rows.get(trial.number)
            if row is not None:
                if row["state"] != DUPLICATE and row.get("seed_id"):
                    self.measured[row["seed_id"]] = trial.number
                    self.asked[row["params"]] = {k: row[k] for k in IDS}
                continue
            seed = self._seed(trial.params, trial.user_attrs.get("stop_below"))
            if seed.trial_id in self.measured:
                continue
            outcome = read_outcome(self.store, seed, self.tune.objective)
            self.measured[seed.trial_id] = trial.number
            self._record(trial.number, trial.params, seed, outcome,
                         trial.user_attrs.get("stop_below"))  # fmt: skip

    def _resume_running(self) -> list[Deployment]:
        """Run again what a killed run left running: same parameters, same bound."""
        out = []
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for trial in running:
            bound = trial.user_attrs.get("stop_below")
            seed = self._seed(trial.params, bound)
            if seed.trial_id in self.measured or seed.trial_id in self.flights:
                earlier = self.measured.get(seed.trial_id)
                self._duplicate(trial.number, trial.params, _ids(seed), earlier)
                continue
            self.asked[_key(trial.params)] = _ids(seed)
            deployment = self._launch(trial.number, dict(trial.params), seed, bound)
            if deployment is not None:
                out.append(deployment)
        return out


IDS = ("seed_id", "deployment_id", "label")


def _ids(seed: TrialSpec) -> dict[str, Any]:
    """What the table says of the seed a configuration ran."""
    return dict(zip(IDS, (seed.trial_id, seed.deployment_id, seed.label), strict=True))


def _key(params: dict[str, Any]) -> str:
    """Values as the table writes them (`TuneTable.add`): the key of repeats."""
    return json.dumps(params, sort_keys=True)
