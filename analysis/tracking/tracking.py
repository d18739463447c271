"""Weights & Biases tracking: runs for the trials and the sweep; the one module importing wandb.

`Tracker` is built from the sweep's `TrackingConfig`, its name, its results folder and its number
of trials; with `tracking=none` every call does nothing. `tracking.runs` says how trials become
runs (`analysis.tracking.tracking_groups.run_layout`; `auto` groups them past
`tracking.group_above`):
- per trial: each finished trial is a run (group = sweep, job type = backend, name = trial label)
  holding the trial's flattened config (secrets scrubbed), its metrics and load as summary, its
  resource time series as history and a sample of its request records as a table;
- per deployment (`analysis.tracking.tracking_groups`): a run per deployment, each finished trial
  one step of its metrics and one row of the run's `trials` table.
`sweep_finished` adds a run with the summary table, the capacity table of a search
(`analysis.stats.capacity`), the Pareto front's points, the report's plots and, with `quality=on`,
the quality table and its front on (USD per 1M output tokens, KL) as a W&B scatter
(`analysis.figures.quality_front`); then it writes the sweep's workspace
(`analysis.tracking.wandb_workspace`) to `<results>/wandb_workspace.json` and, online, saves it to
the project. Without credentials the runs are written offline under `<results>/<sweep>/wandb/` and
`close` prints the `wandb sync` command. Tracking never fails a sweep: the first wandb error is
logged as one warning line and turns the tracker off. `upload_results` tracks a finished folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.figures.quality_front import COST, KL, front_points
from analysis.read.columns import sweep_title
from analysis.read.load import load_requests, load_summary, load_timeseries
from analysis.stats.capacity import capacity_table, search_settings
from analysis.stats.compare import pareto_points
from analysis.stats.roofline import roofline
from analysis.stats.startup import deployment_startups
from analysis.stats.tuning import Tuning, describe, load_tuning, params_of
from analysis.tracking.tracking_groups import PER_DEPLOYMENT, DeploymentRuns, run_layout
from analysis.tracking.wandb_cells import (
    history_steps,
    is_config,
    plain,
    request_sample,
    trial_metrics,
    wandb_table,
)
from analysis.tracking.wandb_settings import QUIET_SETTINGS, resolve_mode, sweep_tracking
from analysis.tracking.wandb_workspace import (
    CAPACITY_TABLE,
    PARETO_TABLE,
    STARTUP_TABLE,
    publish,
    workspace_spec,
)
from sweep.core import records as rec
from sweep.core.config import TrackingConfig
from sweep.core.secrets import scrub

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "llm-sweep"
WANDB_DIR = "wandb"
SWEEP_JOB_TYPE = "sweep"


class Tracker:
    """Logs trials and the sweep to W&B as they finish; a no-op unless `config.name` is wandb.

    `trials` is the number of trials the sweep runs: with `tracking.runs=auto` it picks the
    layout (a run per trial, or per deployment past `tracking.group_above`).
    """

    def __init__(
        self,
        config: TrackingConfig,
        sweep: str,
        results_dir: str | Path,
        echo: Callable[[str], None] = print,
        trials: int = 0,
    ) -> None:
        self.enabled = config.name == "wandb"
        self.sweep = sweep
        self.project = config.project or DEFAULT_PROJECT
        self.entity = config.entity
        self.mode = resolve_mode(config.mode) if self.enabled else "disabled"
        self.layout = run_layout(config, trials)
        self.root = _local_dir(str(results_dir))
        self.wandb_dir = self.root / WANDB_DIR
        self.workspace_file: Path | None = None
        self.runs_logged = 0
        self._echo = echo
        self._wandb: Any = None
        self._run: Any = None
        self._groups = DeploymentRuns(self._open_run, lambda f: wandb_table(self._wandb, f))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def trial_finished(
        self, summary_row: Mapping[str, Any], requests: pd.DataFrame, timeseries: pd.DataFrame
    ) -> None:
        """Log one finished trial (failed trials too, with their error as summary).

        Per trial, a run of its own; per deployment, a step and a table row of its deployment's.
        """
        if not self.enabled:
            return
        row = {key: plain(value) for key, value in summary_row.items()}
        with self._guard(f"logging trial {row.get(rec.LABEL)}"):
            metrics = trial_metrics(row)
            if self.layout == PER_DEPLOYMENT:
                self._import()
                self._groups.log(row, metrics)
                return
            config = {k: v for k, v in row.items() if is_config(k)}
            wandb = self._start(
                row.get(rec.LABEL) or row.get(rec.TRIAL_ID), str(row.get(rec.BACKEND_NAME)), config
            )
            steps = history_steps(timeseries)
            self._run.define_metric(rec.T_S)
            for prefix in {key.split("/")[0] for step in steps for key in step if "/" in key}:
                self._run.define_metric(f"{prefix}/*", step_metric=rec.T_S)
            for step in steps:
                self._run.log(step)
            self._run.summary.update(scrub(metrics))
            if len(requests):
                sample = request_sample(requests)
                self._run.log({"requests": wandb_table(wandb, sample)})
            self._finish()

    def sweep_finished(
        self,
        summary: pd.DataFrame,
        plots: list[Path],
        capacity: pd.DataFrame | None = None,
        findings: tuple[str, ...] | list[str] = (),
        quality: pd.DataFrame | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        """Finish the deployments' runs, log the sweep's run, write and save its workspace.

        The sweep's run holds the summary, capacity, Pareto front, findings, quality and
        start-up (`analysis.stats.startup`, one row per deployment) tables and the plots.
        Without `capacity` it is computed from `summary` with the sweep.yaml's search settings;
        `findings` are the report's sentences (`analysis.report.findings`), one row each;
        `quality` is `analysis.report.quality.quality_table`, logged with its front
        (`quality_front`: a scatter of USD per 1M output tokens against KL, and
        `quality_front_points`, whose `on_quality_front` marks the front). A tuning sweep's
        study (`analysis.stats.tuning`, read from the folder when None) adds its configurations
        (`tuning`), the importances (`tuning_importance`), the best so far against
        deployment-hours (a line) and the best configuration in the run's summary.
        """
        if not self.enabled:
            return
        if tuning is None:
            tuning = load_tuning(self.root)
        with self._guard("logging the sweep"):
            self.runs_logged += self._groups.finish()
            if capacity is None:
                capacity = capacity_table(summary, *search_settings(self.root))
            wandb = self._start(
                self.sweep, SWEEP_JOB_TYPE, {rec.SWEEP_NAME: self.sweep, "trials": len(summary)}
            )
            front = pareto_points(summary)
            tables = {"summary": wandb_table(wandb, summary)}
            for key, frame in (
                (CAPACITY_TABLE, capacity),
                (PARETO_TABLE, front),
                ("quality", quality),
                (STARTUP_TABLE, deployment_startups(summary)),
            ):
                if frame is not None and len(frame):
                    tables[key] = wandb_table(wandb, frame)
            if findings:
                tables["findings"] = wandb.Table(columns=["finding"], data=[[f] for f in findings])
            if quality is not None and len(quality):
                tables.update(_quality_front(wandb, quality))
            if tuning is not None:
                tables.update(_tuning(wandb, self._run, tuning))
            images = {f"plots/{p.stem}": wandb.Image(str(p), caption=p.stem) for p in plots}
            self._run.log({**tables, **images})
            self._finish()
        if not self.enabled:
            return
        with self._guard("writing the workspace"):
            spec = workspace_spec(summary, self.sweep, self.layout, {*tables, *images})
            online = None
            if self.mode == "online":  # a workspace needs its entity: the user's by default
                online = (self.entity or self._import().Api().default_entity, self.project)
            self.workspace_file, url = publish(spec, self.root, online)
            if url:
                self._echo(f"W&B workspace: {url}")

    def close(self) -> None:
        """Finish open runs, stop the wandb service process, say how to upload offline runs."""
        if len(self._groups):
            with self._guard("finishing the deployments' runs"):
                self.runs_logged += self._groups.finish()
        if self._wandb is not None:
            with self._guard("shutting down"):
                self._wandb.teardown()
            self._wandb = None
        if self.mode == "offline" and self.runs_logged:
            self._echo(
                f"W&B: {self.runs_logged} runs saved offline; upload them with: "
                f"wandb sync {self.wandb_dir}/offline-run-*"
            )

    def _open_run(self, name: str, job_type: str, config: dict[str, Any]) -> Any:
        wandb = self._import()
        self.root.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.sweep,
            job_type=job_type,
            name=name,
            config=scrub(config),
            dir=str(self.root),
            mode=self.mode,
            reinit="create_new",
            settings=wandb.Settings(**QUIET_SETTINGS),
        )

    def _start(self, name: str, job_type: str, config: dict[str, Any]) -> Any:
        self._run = self._open_run(name, job_type, config)
        return self._import()

    def _finish(self) -> None:
        run, self._run = self._run, None
        run.finish()
        self.runs_logged += 1

    def _import(self) -> Any:
        if self._wandb is None:
            os.environ.setdefault("WANDB_SILENT", "true")  # before import: wandb reads it once
            import wandb

            logging.getLogger("wandb").setLevel(logging.ERROR)
            self._wandb = wandb
        return self._wandb

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Turn any wandb failure into one warning and a disabled tracker."""
        try:
            yield
        except Exception as exc:  # an outage or a wandb bug must never fail the sweep
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("W&B tracking turned off after an error while %s: %s", doing, reason)
            self.enabled = False
            self._groups.abandon()
            if self._run is not None:
                run, self._run = self._run, None
                try:
                    run.finish(exit_code=1)
                except Exception:  # the run is lost either way; the warning above says why
                    pass


def upload_results(
    results_dir: str | Path,
    plots: list[Path],
    project: str | None = None,
    capacity: pd.DataFrame | None = None,
    findings: tuple[str, ...] | list[str] = (),
    quality: pd.DataFrame | None = None,
    tuning: Tuning | None = None,
) -> Tracker:
    """Log a finished results folder: its trials, the sweep run and workspace; returns the tracker.

    The runs are laid out as the sweep's `tracking` settings (its sweep.yaml) say, `auto` by
    default. `capacity` is the report's capacity table (with its target rate); computed when
    None. `quality` is the report's quality table (`ReportPaths.quality`); `tuning` the tuning
    study (`ReportPaths.tuning`), read from the folder when None.
    """
    summary = load_summary(results_dir)
    requests, timeseries = load_requests(results_dir), load_timeseries(results_dir)
    sweep = sweep_title(summary, fallback=Path(results_dir).name)
    by_trial = {
        name: dict(tuple(frame.groupby(rec.TRIAL_ID)))
        for name, frame in (("requests", requests), ("timeseries", timeseries))
    }
    config = sweep_tracking(results_dir, project or DEFAULT_PROJECT)
    with Tracker(config, sweep, results_dir, trials=len(summary)) as tracker:
        derived = roofline(summary)  # at once: row by row costs 30 ms a trial
        rows = summary.assign(**{k: derived[k] for k in (rec.MBU, rec.MFU)})
        for row in rows.to_dict("records"):
            trial_id = row[rec.TRIAL_ID]
            tracker.trial_finished(
                row,
                by_trial["requests"].get(trial_id, requests.iloc[:0]),
                by_trial["timeseries"].get(trial_id, timeseries.iloc[:0]),
            )
        tracker.sweep_finished(summary, plots, capacity, findings, quality, tuning)
    return tracker


def _tuning(wandb: Any, run: Any, tuning: Tuning) -> dict[str, Any]:
    """A tuning study as W&B tables, a line of the best so far, and the best in the summary."""
    importance = pd.DataFrame(
        [(i.param, i.importance, i.judged_on) for i in tuning.importances],
        columns=["param", "importance", "configurations"],
    )
    progress = tuning.progress.dropna(subset=["best_so_far"])
    logged = {
        "tuning": wandb_table(wandb, tuning.rows),
        "tuning_importance": wandb_table(wandb, importance),
    }
    if len(progress):
        table = wandb_table(wandb, progress)
        logged["tuning_best_so_far"] = wandb.plot.line(
            table, "deployment_hours", "best_so_far", title="best so far against deployment-hours"
        )
    if tuning.best is not None:
        run.summary["tuning/best_value"] = float(tuning.best["value"])
        run.summary["tuning/best_params"] = describe(params_of(tuning.best))
        run.summary["tuning/deployment_hours"] = tuning.deployment_hours
        run.summary["tuning/saved_hours"] = tuning.saved_hours
    return logged


def _quality_front(wandb: Any, quality: pd.DataFrame) -> dict[str, Any]:
    """The front on (USD per 1M output tokens, KL): its points as a table and a scatter of them."""
    points = front_points(quality)
    if points.empty:
        return {}
    table = wandb_table(wandb, points)
    scatter = wandb.plot.scatter(table, COST, KL, title="Quality against cost (KL from baseline)")
    return {"quality_front_points": table, "quality_front": scatter}


def _local_dir(results_dir: str) -> Path:
    """Where wandb writes: the results folder, or a local folder when results go to a URI."""
    if "://" in results_dir:
        return Path(WANDB_DIR, results_dir.rstrip("/").rsplit("/", 1)[-1]).resolve()
    return Path(results_dir).resolve()
