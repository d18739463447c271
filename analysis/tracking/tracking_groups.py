"""Grouped W&B runs for large sweeps: one run per deployment, its trials as steps and table rows.

A run per trial stops being usable past a few hundred trials (10,000 runs a night are slow to
log and cannot be compared in W&B's UI). A deployment is one configuration (model, engine,
settings, hardware: `records.DEPLOYMENT_GROUPS`) and its trials are that configuration at
several loads and repeats, so one run per deployment makes W&B draw what a person compares: a
line per configuration of any metric against the load. A run per sweep would put every
configuration on one line.

`run_layout` resolves `tracking.runs` (`auto`: per deployment above `tracking.group_above`
trials). `DeploymentRuns` keeps one open run per deployment while the sweep runs (deployments
run side by side, so several are open at once): each finished trial is one `log` step of its
numeric metrics and load (`wandb_cells.trial_metrics`) and one row of the run's `trials` table,
which is set on the run's summary when the run finishes, beside the metrics of the deployment's
highest-throughput trial (what the workspace's parallel-coordinates view compares).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from analysis.tracking.wandb_cells import is_number
from sweep.core import records as rec
from sweep.core.config import TrackingConfig

PER_TRIAL, PER_DEPLOYMENT = "per_trial", "per_deployment"
TRIALS_TABLE = "trials"
BEST_TRIAL = "best_trial"
# Run config of a deployment's run beside its groups' columns: what every trial of it shares.
DEPLOYMENT_IDENTITY = (*rec.BACKEND_FACTS, rec.DEPLOYMENT_ID, rec.SWEEP_NAME)

OpenRun = Callable[[str, str, dict[str, Any]], Any]


def run_layout(config: TrackingConfig, trials: int) -> str:
    """`per_trial` or `per_deployment`: `config.runs`, or for `auto` the one `trials` calls for."""
    if config.runs != "auto":
        return config.runs
    return PER_DEPLOYMENT if trials > config.group_above else PER_TRIAL


def deployment_config(row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a trial's row that every trial of its deployment shares."""
    return {
        k: v
        for k, v in row.items()
        if k in DEPLOYMENT_IDENTITY or k.partition(rec.CONFIG_SEPARATOR)[0] in rec.DEPLOYMENT_GROUPS
    }


def deployment_name(row: Mapping[str, Any]) -> str:
    """A run name that says what the deployment is: backend, model and its id."""
    parts = (row.get(rec.BACKEND_NAME), row.get(rec.MODEL_NAME), row.get(rec.DEPLOYMENT_ID))
    return " ".join(str(p) for p in parts if p)


class DeploymentRuns:
    """The open runs of a sweep's deployments, each trial a step and a table row.

    Args:
        open_run: starts a run from (name, job type, config) and returns it (`Tracker`'s).
        table: makes a `wandb.Table` of a frame (`wandb_cells.wandb_table`).
    """

    def __init__(self, open_run: OpenRun, table: Callable[[pd.DataFrame], Any]) -> None:
        self._open_run, self._table = open_run, table
        self._runs: dict[str, Any] = {}
        self._rows: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def log(self, row: dict[str, Any], metrics: dict[str, Any]) -> None:
        """One finished trial: a step of its numeric metrics in its deployment's run."""
        key = str(row.get(rec.DEPLOYMENT_ID))
        if key not in self._runs:
            self._runs[key] = self._open_run(
                deployment_name(row), str(row.get(rec.BACKEND_NAME)), deployment_config(row)
            )
            self._rows[key] = []
        self._runs[key].log({k: v for k, v in metrics.items() if is_number(v)})
        self._rows[key].append((row, metrics))

    def finish(self) -> int:
        """Finish every open run with its table of trials and best trial; returns how many."""
        finished = 0
        while self._runs:
            key, run = next(iter(self._runs.items()))
            trials = self._rows[key]
            run.summary[TRIALS_TABLE] = self._table(pd.DataFrame([r for r, _ in trials]))
            run.summary.update(best_trial(trials))
            del self._runs[key], self._rows[key]
            run.finish()
            finished += 1
        return finished

    def abandon(self) -> None:
        """Mark every open run failed (after a wandb error: the tracker is off)."""
        runs, self._runs, self._rows = list(self._runs.values()), {}, {}
        for run in runs:
            try:
                run.finish(exit_code=1)
            except Exception:  # the run is lost either way; the tracker has said why
                pass


def best_trial(trials: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """The numeric metrics of the completed trial with the highest output throughput, and its label.

    A deployment whose trials all failed has none: its summary stays the last trial's.
    """
    done = [
        (row, metrics)
        for row, metrics in trials
        if row.get(rec.TRIAL_STATUS) == rec.STATUS_OK
        and is_number(metrics.get(rec.OUTPUT_THROUGHPUT))
    ]
    if not done:
        return {}
    row, metrics = max(done, key=lambda trial: trial[1][rec.OUTPUT_THROUGHPUT])
    return {BEST_TRIAL: row.get(rec.LABEL), **{k: v for k, v in metrics.items() if is_number(v)}}
