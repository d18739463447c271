"""Resource timelines of a sweep's trials: KV-cache usage and memory against time.

Pure functions from the long-format time series (`analysis.read.load.load_timeseries`: t_s, source,
metric, value) to matplotlib Figures, one line per trial (and per source where a trial has
several, e.g. one per GPU), and `write_timeline_plots`, which saves those that have data as PNG
for the report. Memory is the GPUs' when any trial sampled it, else the process's resident set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.figures.canvas import new_figure
from sweep.core import records as rec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Legend entries per column beside the plot.
LEGEND_ROWS = 24


@dataclass(frozen=True)
class TimelineSpec:
    """One timeline: the time-series metric, its title, y label and file name."""

    metric: str
    title: str
    ylabel: str
    file_name: str


KV_CACHE = TimelineSpec(
    rec.KV_CACHE_USAGE_PERCENT, "KV-cache usage", "KV cache in use (%)", "kv_cache_timeline.png"
)
GPU_MEMORY = TimelineSpec(
    rec.GPU_MEMORY_USED_MB, "GPU memory", "GPU memory used (MiB)", "gpu_memory_timeline.png"
)
PROCESS_MEMORY = TimelineSpec(
    rec.PROCESS_RSS_MB,
    "Process memory (no GPU samples)",
    "resident set size (MiB)",
    "process_memory_timeline.png",
)
TIMELINE_TITLES = {spec.file_name: spec.title for spec in (KV_CACHE, GPU_MEMORY, PROCESS_MEMORY)}


def timeline_specs(timeseries: pd.DataFrame) -> list[TimelineSpec]:
    """The timelines that `timeseries` has samples for: KV cache, then GPU or process memory."""
    present = set(timeseries[rec.METRIC].unique()) if len(timeseries) else set()
    memory = GPU_MEMORY if GPU_MEMORY.metric in present else PROCESS_MEMORY
    return [spec for spec in (KV_CACHE, memory) if spec.metric in present]


def timeline_figure(
    timeseries: pd.DataFrame, labels: pd.Series, spec: TimelineSpec, sweep: str | None = None
) -> Figure:
    """One line per trial (and source) of `spec.metric` against seconds since the trial began.

    Args:
        timeseries: long-format samples of one or more trials.
        labels: trial label by trial id; ids without one are shown as the id.
        spec: which metric and how to title it.
        sweep: the sweep's name, appended to the title.
    """
    samples = timeseries[timeseries[rec.METRIC] == spec.metric].sort_values(rec.T_S)
    fig = new_figure(9.0, 4.5)
    ax = fig.add_subplot()
    sources = samples.groupby(rec.TRIAL_ID)[rec.SOURCE].nunique()
    lines = {
        _line_name(trial_id, source, labels, sources[trial_id] > 1): line
        for (trial_id, source), line in samples.groupby([rec.TRIAL_ID, rec.SOURCE])
    }
    for name in sorted(lines):
        ax.plot(lines[name][rec.T_S], lines[name][rec.VALUE], marker=".", label=name)
    ax.set_xlabel("time since the trial started (s)")
    ax.set_ylabel(spec.ylabel)
    ax.set_title(spec.title + (f" — {sweep}" if sweep else ""))
    top = samples[rec.VALUE].max() if len(samples) else 0
    ax.set_ylim(0, top * 1.08 if top > 0 else None)  # lines at the maximum stay visible
    ax.grid(True, alpha=0.3)
    if lines:  # beside the axes: lines of many trials would hide under a legend inside
        trial_legend(fig, len(lines))
    return fig


def trial_legend(fig: Figure, trials: int, *handles_labels: list) -> None:
    """One legend of the trials' lines beside the axes, in columns of `LEGEND_ROWS`."""
    fig.legend(
        *handles_labels,
        title="trial",
        loc="outside right upper",
        ncols=1 + trials // LEGEND_ROWS,
        fontsize="small" if trials <= LEGEND_ROWS // 2 else "x-small",
    )


def write_timeline_plots(
    timeseries: pd.DataFrame, summary: pd.DataFrame, out_dir: str | Path, sweep: str | None = None
) -> list[Path]:
    """Save every timeline with samples as PNG in `out_dir` and return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = summary.set_index(rec.TRIAL_ID)[rec.LABEL] if rec.LABEL in summary else pd.Series()
    paths = []
    for spec in timeline_specs(timeseries):
        path = out / spec.file_name
        timeline_figure(timeseries, labels, spec, sweep).savefig(path)
        paths.append(path)
    return paths


def _line_name(trial_id: str, source: str, labels: pd.Series, several_sources: bool) -> str:
    label = str(labels.get(trial_id, trial_id))
    return f"{label} ({source})" if several_sources else label
