"""Metrics per time slice, plotted: how each trial's load and latencies moved while it ran.

A pure function from timeslices.parquet rows (`analysis.read.load.load_timeslices`) to one
matplotlib Figure of four panels over the time since each trial's load began, one line per trial:
requests in flight at each window's end (queue build-up), output tok/s (warm-up, a ramp, stages),
the median TTFT of the requests sent in the window (degradation), and the server's KV-cache use
where its telemetry has it, else the median ITL. `write_timeslice_plot` saves it for the report
and `timeslice_section` captions it. `analysis.figures.timeline_plots` draws the raw telemetry
samples; this draws what the requests saw, window by window (`sweep.core.timeslices`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.figures.canvas import new_figure
from analysis.figures.timeline_plots import trial_legend
from analysis.report.sections import Image, Section
from sweep.core import records as rec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TIMESLICE_FILE = "timeslices.png"
TITLE = "Metrics per time slice"
TTFT_MEDIAN = rec.latency_column("ttft", "median")
ITL_MEDIAN = rec.latency_column("itl", "median")
# (column, y label) of each panel; the last one is KV-cache use when any trial sampled it.
PANELS = (
    (rec.REQUESTS_IN_FLIGHT, "requests in flight"),
    (rec.SLICE_OUTPUT_THROUGHPUT, "output tok/s"),
    (TTFT_MEDIAN, "TTFT p50 (ms)"),
)
KV_PANEL = (rec.SLICE_KV_CACHE_USAGE, "KV cache in use (%)")
ITL_PANEL = (ITL_MEDIAN, "ITL p50 (ms)")


def timeslice_figure(slices: pd.DataFrame, labels: pd.Series, sweep: str | None = None) -> Figure:
    """Four panels of per-slice metrics against seconds since each trial's load began.

    Args:
        slices: timeslices.parquet rows of one or more trials.
        labels: trial label by trial id; ids without one are shown as the id.
        sweep: the sweep's name, appended to the title.
    """
    has_kv = slices[rec.SLICE_KV_CACHE_USAGE].notna().any() if len(slices) else False
    panels = (*PANELS, KV_PANEL if has_kv else ITL_PANEL)
    fig = new_figure(10.0, 6.5)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    trials = {
        str(labels.get(trial_id, trial_id)): rows.sort_values(rec.SLICE_IDX)
        for trial_id, rows in slices.groupby(rec.TRIAL_ID)
    }
    for ax, (column, ylabel) in zip(axes, panels, strict=True):
        for name in sorted(trials):
            _draw(ax, trials[name], column, name)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("time since the load began (s)")
    fig.suptitle(TITLE + (f" — {sweep}" if sweep else ""))
    if trials:  # beside the axes: lines of many trials would hide under a legend inside
        trial_legend(fig, len(trials), *axes[0].get_legend_handles_labels())
    return fig


def _draw(ax: object, rows: pd.DataFrame, column: str, name: str) -> None:
    """One trial's line: steps over whole windows; telemetry, sampled sparsely, as points."""
    origin = rows[rec.SLICE_START_S].min()
    values = pd.to_numeric(rows[column])
    if column == rec.SLICE_KV_CACHE_USAGE:  # about one sample a second: join the windows with one
        middle = (rows[rec.SLICE_START_S] + rows[rec.SLICE_END_S]) / 2 - origin
        ax.plot(middle[values.notna()], values.dropna(), marker=".", label=name)
        return
    # Each value holds over its whole window, the last one's too.
    edges = [*(rows[rec.SLICE_START_S] - origin), rows[rec.SLICE_END_S].iloc[-1] - origin]
    ax.step(edges, [*values, values.iloc[-1]], where="post", label=name)


def write_timeslice_plot(
    slices: pd.DataFrame | None,
    summary: pd.DataFrame,
    out_dir: str | Path,
    sweep: str | None = None,
) -> list[Path]:
    """Save the figure as PNG in `out_dir` when any trial has time slices; the paths written."""
    if slices is None or slices.empty:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = summary.set_index(rec.TRIAL_ID)[rec.LABEL] if rec.LABEL in summary else pd.Series()
    path = out / TIMESLICE_FILE
    timeslice_figure(slices, labels, sweep).savefig(path)
    return [path]


def timeslice_section(images: list[Path]) -> list[Section]:
    """The figure with its caption; nothing when no trial recorded time slices."""
    if not images:
        return []
    text = (
        "Each trial cut into windows of `workload.slice_s` (timeslices.parquet), every request "
        "counted, the ramp's and those outside the steady-state window too: warm-up, "
        "degradation and queue build-up show over time. TTFT is of the requests sent in the "
        "window; in flight is at the window's end."
    )
    return [Section(TITLE, text, images=tuple(Image(TITLE, p) for p in images))]
