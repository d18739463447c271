"""Weights & Biases tracking: one run per trial and one per sweep; the one module importing wandb.

`Tracker` is built from the sweep's `TrackingConfig`, its name and its results folder; with
`tracking=none` every call does nothing. Otherwise each finished trial becomes a run (group = sweep,
job type = backend, name = trial label) holding the trial's flattened config (secrets scrubbed), its
metrics as summary, its resource time series as history and a sample of its request records as a
table; `sweep_finished` adds a run with the summary table, the capacity table of a search
(`analysis.capacity`), the report's plots and, with `quality=on`, the quality table and its front
on (USD per 1M output tokens, KL) as a W&B scatter (`analysis.quality_front`). Without credentials
the runs are written offline under `<results>/<sweep>/wandb/` and `close` prints the `wandb sync`
command. Tracking never fails a sweep: the first wandb error is logged as one warning line and
turns the tracker off. `upload_results` tracks a finished folder.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from analysis.capacity import capacity_table, search_settings
from analysis.load import load_requests, load_summary, load_timeseries
from analysis.plots import sweep_title
from analysis.quality_front import COST, KL, front_points
from analysis.roofline import roofline
from sweep.core import records as rec
from sweep.core.config import TrackingConfig
from sweep.core.secrets import scrub

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "llm-sweep"
WANDB_DIR = "wandb"
SWEEP_JOB_TYPE = "sweep"
REQUEST_SAMPLE_ROWS = 200
DEFAULT_HOST = "https://api.wandb.ai"
IDENTITY = (rec.TRIAL_ID, rec.DEPLOYMENT_ID, rec.SWEEP_NAME, rec.REPEAT, rec.LABEL)
# Logged as the run's config beside the flattened config: what the backend says of itself.
CONFIG_COLUMNS = (*IDENTITY, *rec.BACKEND_FACTS)
# No console capture, code, git, requirements or machine metadata: the sweep's own output stays
# readable, and nothing from the environment (where secrets live) is copied into the run.
QUIET_SETTINGS = {
    "silent": True,
    "console": "off",
    "save_code": False,
    "disable_git": True,
    "x_save_requirements": False,
    "x_disable_meta": True,
    "x_disable_stats": True,
    "x_disable_machine_info": True,
    "disable_job_creation": True,
    "init_timeout": 30.0,  # an outage costs one wait, then the tracker is off
}


class Tracker:
    """Logs trials and the sweep to W&B as they finish; a no-op unless `config.name` is wandb."""

    def __init__(
        self,
        config: TrackingConfig,
        sweep: str,
        results_dir: str | Path,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.enabled = config.name == "wandb"
        self.sweep = sweep
        self.project = config.project or DEFAULT_PROJECT
        self.entity = config.entity
        self.mode = resolve_mode(config.mode) if self.enabled else "disabled"
        self.root = _local_dir(str(results_dir))
        self.wandb_dir = self.root / WANDB_DIR
        self.runs_logged = 0
        self._echo = echo
        self._wandb: Any = None
        self._run: Any = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def trial_finished(
        self, summary_row: Mapping[str, Any], requests: pd.DataFrame, timeseries: pd.DataFrame
    ) -> None:
        """One run for one finished trial (failed trials too, with their error as summary)."""
        if not self.enabled:
            return
        row = {key: _plain(value) for key, value in summary_row.items()}
        config = {k: v for k, v in row.items() if k in CONFIG_COLUMNS or rec.CONFIG_SEPARATOR in k}
        metrics = {k: v for k, v in row.items() if k not in config and v is not None}
        derived = roofline(pd.DataFrame([row])).iloc[0]
        metrics.update({k: float(derived[k]) for k in (rec.MBU, rec.MFU) if pd.notna(derived[k])})
        with self._guard(f"logging trial {row.get(rec.LABEL)}"):
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
                self._run.log({"requests": wandb.Table(dataframe=_table_frame(sample))})
            self._finish()

    def sweep_finished(
        self,
        summary: pd.DataFrame,
        plots: list[Path],
        capacity: pd.DataFrame | None = None,
        findings: tuple[str, ...] | list[str] = (),
        quality: pd.DataFrame | None = None,
    ) -> None:
        """One run for the sweep: the summary, capacity, findings and quality tables, the plots.

        Without `capacity` it is computed from `summary` with the sweep.yaml's search settings;
        `findings` are the report's sentences (`analysis.findings`), one row each; `quality` is
        `analysis.quality.quality_table`, logged with its front (`quality_front`: a scatter of
        USD per 1M output tokens against KL, and `quality_front_points`, whose `on_quality_front`
        marks the front).
        """
        if not self.enabled:
            return
        with self._guard("logging the sweep"):
            if capacity is None:
                capacity = capacity_table(summary, *search_settings(self.root))
            wandb = self._start(
                self.sweep, SWEEP_JOB_TYPE, {rec.SWEEP_NAME: self.sweep, "trials": len(summary)}
            )
            tables = {"summary": wandb.Table(dataframe=_table_frame(summary))}
            if len(capacity):
                tables["capacity"] = wandb.Table(dataframe=_table_frame(capacity))
            if findings:
                tables["findings"] = wandb.Table(columns=["finding"], data=[[f] for f in findings])
            if quality is not None and len(quality):
                tables["quality"] = wandb.Table(dataframe=_table_frame(quality))
                tables.update(_quality_front(wandb, quality))
            images = {f"plots/{p.stem}": wandb.Image(str(p), caption=p.stem) for p in plots}
            self._run.log({**tables, **images})
            self._finish()

    def close(self) -> None:
        """Stop the wandb service process and say how to upload offline runs."""
        if self._wandb is not None:
            with self._guard("shutting down"):
                self._wandb.teardown()
            self._wandb = None
        if self.mode == "offline" and self.runs_logged:
            self._echo(
                f"W&B: {self.runs_logged} runs saved offline; upload them with: "
                f"wandb sync {self.wandb_dir}/offline-run-*"
            )

    def _start(self, name: str, job_type: str, config: dict[str, Any]) -> Any:
        wandb = self._import()
        self.root.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
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
        return wandb

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
            if self._run is not None:
                run, self._run = self._run, None
                try:
                    run.finish(exit_code=1)
                except Exception:  # the run is lost either way; the warning above says why
                    pass


def resolve_mode(configured: str | None) -> str:
    """The configured mode, else `WANDB_MODE`, else online with credentials, offline without."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_credentials() else "offline"


def has_credentials() -> bool:
    """Whether `WANDB_API_KEY` is set or the netrc file has a password for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def history_steps(timeseries: pd.DataFrame) -> list[dict[str, float]]:
    """One history step per sample time: `t_s` and `source/metric` keys with their values."""
    if timeseries.empty:
        return []
    keyed = timeseries.assign(_key=timeseries[rec.SOURCE] + "/" + timeseries[rec.METRIC])
    wide = keyed.pivot_table(index=rec.T_S, columns="_key", values=rec.VALUE, aggfunc="mean")
    return [
        {rec.T_S: float(t), **{k: float(v) for k, v in row.items() if pd.notna(v)}}
        for t, row in wide.sort_index().iterrows()
    ]


def request_sample(requests: pd.DataFrame, rows: int = REQUEST_SAMPLE_ROWS) -> pd.DataFrame:
    """At most `rows` request records (a fixed random sample), in request order."""
    sample = requests.sample(rows, random_state=0) if len(requests) > rows else requests
    return sample.sort_values(rec.REQUEST_IDX) if rec.REQUEST_IDX in sample else sample


def upload_results(
    results_dir: str | Path,
    plots: list[Path],
    project: str | None = None,
    capacity: pd.DataFrame | None = None,
    findings: tuple[str, ...] | list[str] = (),
    quality: pd.DataFrame | None = None,
) -> Tracker:
    """Log a finished results folder: one run per trial and the sweep run; returns the tracker.

    `capacity` is the report's capacity table (with its target rate); computed when None.
    `quality` is the report's quality table (`ReportPaths.quality`).
    """
    summary = load_summary(results_dir)
    requests, timeseries = load_requests(results_dir), load_timeseries(results_dir)
    sweep = sweep_title(summary, fallback=Path(results_dir).name)
    by_trial = {
        name: dict(tuple(frame.groupby(rec.TRIAL_ID)))
        for name, frame in (("requests", requests), ("timeseries", timeseries))
    }
    config = TrackingConfig(name="wandb", project=project or DEFAULT_PROJECT)
    with Tracker(config, sweep, results_dir) as tracker:
        for row in summary.to_dict("records"):
            trial_id = row[rec.TRIAL_ID]
            tracker.trial_finished(
                row,
                by_trial["requests"].get(trial_id, requests.iloc[:0]),
                by_trial["timeseries"].get(trial_id, timeseries.iloc[:0]),
            )
        tracker.sweep_finished(summary, plots, capacity, findings, quality)
    return tracker


def _quality_front(wandb: Any, quality: pd.DataFrame) -> dict[str, Any]:
    """The front on (USD per 1M output tokens, KL): its points as a table and a scatter of them."""
    points = front_points(quality)
    if points.empty:
        return {}
    table = wandb.Table(dataframe=_table_frame(points))
    scatter = wandb.plot.scatter(table, COST, KL, title="Quality against cost (KL from baseline)")
    return {"quality_front_points": table, "quality_front": scatter}


def _table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells a wandb.Table takes: scalars or None, lists as JSON text, secrets scrubbed."""
    return frame.astype(object).map(lambda value: scrub(_cell(_plain(value))))


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _plain(value: Any) -> Any:
    """A value from numpy or pandas as plain Python; NaN and NA as None."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (not isinstance(value, str | dict) and pd.isna(value)):
        return None
    return value


def _local_dir(results_dir: str) -> Path:
    """Where wandb writes: the results folder, or a local folder when results go to a URI."""
    if "://" in results_dir:
        return Path(WANDB_DIR, results_dir.rstrip("/").rsplit("/", 1)[-1]).resolve()
    return Path(results_dir).resolve()
