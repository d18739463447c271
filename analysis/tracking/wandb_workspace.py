"""The saved W&B workspace of a sweep: panels that compare its configurations.

`workspace_spec` describes the panels from the sweep's summary and what its runs logged, as plain
dataclasses (`WorkspaceSpec`): throughput and latency percentiles against the load per
configuration, the capacity table, the Pareto front, and a parallel-coordinates view of the grid.
Each panel names its metrics with their source (`history`, `summary`, `config`, `table`,
`media`), so every one is a key the runs log. The spec is written next to the results
(`<results>/wandb_workspace.json`: `write_spec`, `read_spec`), and `build_workspace` turns it
into W&B's own workspace object (`wandb_workspaces`), which `save_workspace` saves to the project;
`publish` writes the file and, online, saves it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.read.columns import load_values, numeric_column
from analysis.tracking.tracking_groups import PER_DEPLOYMENT
from analysis.tracking.wandb_cells import LOAD
from sweep.core import records as rec
from sweep.core.errors import SweepError

SPEC_FILE = "wandb_workspace.json"
SOURCES = ("history", "summary", "config", "table", "media")
KINDS = ("line", "scatter", "parallel", "table", "media")
LATENCIES = ("ttft", "tpot", "e2e")
PERCENTILES = ("median", "p90", "p99")
# Tables and images the sweep's run logs (`analysis.tracking.tracking.Tracker.sweep_finished`).
CAPACITY_TABLE = "capacity"
PARETO_TABLE = "pareto_front"
STARTUP_TABLE = "startup"  # one row per deployment (`analysis.stats.startup`)
PARETO_PLOT = "plots/pareto"
# Summary metrics beside the grid's axes in the parallel-coordinates view, where logged.
GRID_METRICS = (
    rec.OUTPUT_THROUGHPUT,
    rec.latency_column("ttft", "p99"),
    rec.latency_column("tpot", "median"),
    rec.COST_PER_1M_OUTPUT,
)


@dataclass(frozen=True)
class MetricRef:
    """A key a run logs, and where: its history, summary or config, or a table or image."""

    source: str
    name: str

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise SweepError(f"workspace: metric source {self.source!r} is not one of {SOURCES}")


@dataclass(frozen=True)
class PanelSpec:
    """One panel and the metrics it draws, in order.

    A line plot's are x then its y lines; a scatter's x then y; a parallel-coordinates plot's
    its columns; a table or image panel has one key.
    """

    kind: str
    title: str
    metrics: tuple[MetricRef, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SweepError(f"workspace: panel kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True)
class SectionSpec:
    """A named, open section of panels."""

    name: str
    panels: tuple[PanelSpec, ...]


@dataclass(frozen=True)
class WorkspaceSpec:
    """A sweep's workspace: its name, the run group it shows, its sections."""

    name: str
    group: str
    sections: tuple[SectionSpec, ...]

    def metrics(self) -> list[MetricRef]:
        """Every metric of every panel."""
        return [m for s in self.sections for p in s.panels for m in p.metrics]


def workspace_spec(
    summary: pd.DataFrame, sweep: str, layout: str, logged: set[str]
) -> WorkspaceSpec:
    """The panels for a sweep's runs.

    Args:
        summary: the sweep's summary rows (`analysis.read.load.load_summary`).
        sweep: its name, the runs' group.
        layout: `per_trial` (a trial per run: its metrics are summary, drawn as scatters) or
            `per_deployment` (a configuration per run: its trials are steps, drawn as lines).
        logged: the table and image keys the sweep's run logged.
    """
    grouped = layout == PER_DEPLOYMENT
    source = "history" if grouped else "summary"
    present = {c for c in summary.columns if numeric_column(summary, c).notna().any()}
    if load_values(summary).notna().any():
        present.add(LOAD)
    load = MetricRef(source, LOAD)
    panels = []
    for title, columns in against_load():
        ys = [MetricRef(source, c) for c in columns if c in present]
        if not ys or LOAD not in present:
            continue
        if grouped:  # a line per run, that is per configuration
            panels.append(PanelSpec("line", f"{title} against load", (load, *ys)))
        else:  # a point per run, that is per trial
            panels += [PanelSpec("scatter", f"{m.name} against load", (load, m)) for m in ys]
    sections = [SectionSpec("Throughput and latency against load", tuple(panels))]
    if CAPACITY_TABLE in logged:
        capacity = PanelSpec("table", "Capacity", (MetricRef("table", CAPACITY_TABLE),))
        sections.append(SectionSpec("Capacity", (capacity,)))
    front = []
    if PARETO_TABLE in logged:
        front.append(PanelSpec("table", "Pareto front", (MetricRef("table", PARETO_TABLE),)))
    if PARETO_PLOT in logged:
        front.append(PanelSpec("media", "Pareto front", (MetricRef("media", PARETO_PLOT),)))
    if front:
        sections.append(SectionSpec("Pareto front", tuple(front)))
    if STARTUP_TABLE in logged:
        startup = PanelSpec("table", "Server start-up", (MetricRef("table", STARTUP_TABLE),))
        sections.append(SectionSpec("Server start-up", (startup,)))
    columns = [MetricRef("config", c) for c in grid_axes(summary, grouped)]
    columns += [MetricRef("summary", c) for c in (LOAD, *GRID_METRICS) if c in present]
    sections.append(SectionSpec("Grid", (PanelSpec("parallel", "The grid", tuple(columns)),)))
    return WorkspaceSpec(f"{sweep}: configurations compared", sweep, tuple(sections))


def against_load() -> list[tuple[str, list[str]]]:
    """The metrics drawn against the load: output throughput, then each latency's percentiles."""
    latencies = [
        (f"{m.upper()} (ms)", [rec.latency_column(m, s) for s in PERCENTILES]) for m in LATENCIES
    ]
    return [("Output throughput (tok/s)", [rec.OUTPUT_THROUGHPUT]), *latencies]


def grid_axes(summary: pd.DataFrame, grouped: bool) -> list[str]:
    """Config columns whose value varies across the trials (across deployments when grouped).

    The environment (`env.*`: versions, the worker's pid) is not an axis of the grid.
    """
    axes = []
    for column in summary.columns:
        group = column.partition(rec.CONFIG_SEPARATOR)[0]
        if rec.CONFIG_SEPARATOR not in column or column.startswith(rec.ENV_PREFIX):
            continue
        if grouped and group not in rec.DEPLOYMENT_GROUPS:
            continue
        if summary[column].astype(str).nunique() > 1:
            axes.append(column)
    return axes


def write_spec(spec: WorkspaceSpec, results_dir: str | Path) -> Path:
    """Write the spec as JSON next to the results; returns its path."""
    path = Path(results_dir) / SPEC_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(spec), indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def read_spec(path: str | Path) -> WorkspaceSpec:
    """A spec written by `write_spec`.

    Raises:
        SweepError: the file is not a workspace spec (unknown or missing keys, bad values).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        sections = tuple(
            SectionSpec(**{**s, "panels": tuple(_panel(p) for p in s["panels"])})
            for s in data["sections"]
        )
        return WorkspaceSpec(**{**data, "sections": sections})
    except (KeyError, TypeError, ValueError) as exc:
        raise SweepError(f"{path}: not a W&B workspace definition ({exc})") from exc


def _panel(data: dict[str, Any]) -> PanelSpec:
    """A panel from its JSON (unknown keys are a TypeError)."""
    return PanelSpec(**{**data, "metrics": tuple(MetricRef(**m) for m in data["metrics"])})


def build_workspace(spec: WorkspaceSpec, entity: str, project: str) -> Any:
    """The spec as a `wandb_workspaces.workspaces.Workspace` of `entity/project` (not saved)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def ref(metric: MetricRef) -> Any:
        if metric.source == "config":
            return wr.Config(metric.name)
        return wr.SummaryMetric(metric.name) if metric.source == "summary" else metric.name

    def panel(p: PanelSpec) -> Any:
        first, *rest = p.metrics
        if p.kind == "line":
            return wr.LinePlot(title=p.title, x=first.name, y=[m.name for m in rest])
        if p.kind == "scatter":
            return wr.ScatterPlot(title=p.title, x=ref(first), y=ref(rest[0]))
        if p.kind == "parallel":
            columns = [wr.ParallelCoordinatesPlotColumn(metric=ref(m)) for m in p.metrics]
            return wr.ParallelCoordinatesPlot(title=p.title, columns=columns)
        if p.kind == "table":
            return wr.WeavePanelSummaryTable(table_name=first.name)
        return wr.MediaBrowser(title=p.title, media_keys=[first.name])

    sections = [
        ws.Section(name=s.name, is_open=True, panels=[panel(p) for p in s.panels])
        for s in spec.sections
    ]
    runs = ws.RunsetSettings(filters=ws.And(ws.Metric("Group") == spec.group))
    return ws.Workspace(
        entity=entity, project=project, name=spec.name, sections=sections, runset_settings=runs
    )


def save_workspace(spec: WorkspaceSpec, entity: str, project: str) -> str:
    """Save the workspace to W&B (needs credentials); returns its URL."""
    return build_workspace(spec, entity, project).save().url


def publish(
    spec: WorkspaceSpec, results_dir: str | Path, online: tuple[str, str] | None
) -> tuple[Path, str | None]:
    """Write the spec next to the results and, given `online` (entity, project), save it to W&B.

    Returns:
        The spec's file and the saved workspace's URL (None offline).
    """
    path = write_spec(spec, results_dir)
    return path, save_workspace(spec, *online) if online else None
