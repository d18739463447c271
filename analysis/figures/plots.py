"""Figures of a sweep: output throughput, median TTFT and cost against the offered load.

Pure functions from the summary frame (`analysis.read.load.load_summary`) to matplotlib Figures
drawn on the Agg canvas, and `write_plots`, which saves them as PNG files for the report. Where a
trial sits on the x axis and which line it belongs to come from `analysis.read.columns`;
`repeat_points` gives each point its mean and 95% interval over the repeats
(`analysis.stats.intervals`); the report's tables use it too, so that a plot draws the interval its
table states, as an error bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.figures.canvas import new_figure
from analysis.read.columns import (
    CONFIGURATION,
    LATENCY_MS,
    load_axis_label,
    load_values,
    numeric_column,
    series_labels,
)
from analysis.stats.intervals import aggregate_repeats
from sweep.core import records as rec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PARETO_FILE = "pareto.png"


@dataclass(frozen=True)
class PlotSpec:
    """One figure: the summary metric on the y axis, its title, axis label and file name."""

    metric: str
    title: str
    ylabel: str
    file_name: str


PLOTS = (
    PlotSpec(rec.OUTPUT_THROUGHPUT, "Output throughput", "output tokens / s", "throughput.png"),
    PlotSpec(
        rec.latency_column("ttft", "median"),
        "Median time to first token",
        "TTFT, median (ms)",
        "ttft_median.png",
    ),
    PlotSpec(
        rec.COST_PER_1M_OUTPUT,
        "Cost per million output tokens",
        "USD per 1M output tokens",
        "cost.png",
    ),
)


def metric_figure(summary: pd.DataFrame, spec: PlotSpec, sweep: str | None = None) -> Figure:
    """One line per series of `spec.metric` against the load; failed trials are left out.

    A point is the mean over its repeats; where it has two or more, its 95% interval
    (`repeat_points`, the Repeats table's) is drawn as an error bar.
    """
    points = repeat_points(summary, [spec.metric])
    mean, low, high = (rec.ci_column(spec.metric, stat) for stat in rec.CI_STATS)
    points = points.dropna(subset=["load", mean])
    fig = new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    for label, line in points.groupby("series", sort=True):
        if line[low].notna().any():
            bars = _error_bar(line[mean], line[low], line[high])
            ax.errorbar(line["load"], line[mean], yerr=bars, marker="o", capsize=3, label=label)
        else:
            ax.plot(line["load"], line[mean], marker="o", label=label)
    loads = np.sort(points["load"].unique())
    if _doubles(loads):
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    if 0 < loads.size <= 16:
        ax.set_xticks(loads, [f"{v:g}" for v in loads])
    axis = load_axis_label(summary)
    ax.set_xlabel(f"{axis} (requests)")
    ax.set_ylabel(spec.ylabel)
    ax.set_title(f"{spec.title} vs {axis}" + (f" — {sweep}" if sweep else ""))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if points.empty:
        ax.text(0.5, 0.5, "no successful trial has this metric", ha="center",
                transform=ax.transAxes)  # fmt: skip
    else:
        ax.legend(title="series", fontsize="small")
    return fig


def _error_bar(value: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Distances below and above each value (0 where the interval is unknown)."""
    below = (value - pd.to_numeric(low, errors="coerce")).clip(lower=0).fillna(0)
    above = (pd.to_numeric(high, errors="coerce") - value).clip(lower=0).fillna(0)
    return np.vstack([below.to_numpy(float), above.to_numpy(float)])


def pareto_figure(points: pd.DataFrame, latency_label: str, sweep: str | None = None) -> Figure:
    """Output tok/s per GPU against per-user latency; the front is joined and its points named.

    Args:
        points: `analysis.stats.compare.pareto_points`: configuration, latency_ms, throughput per
            GPU and whether the point is on the front (noise allowed for), with the 95%
            intervals drawn as error bars when it has them.
        latency_label: what the latency is, e.g. "TPOT, median (ms)".
        sweep: the sweep's name, appended to the title.
    """
    fig = new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    x, y = points[LATENCY_MS], points[rec.THROUGHPUT_PER_GPU]
    front = points[points[rec.ON_PARETO_FRONT]].sort_values(LATENCY_MS)
    ax.scatter(x, y, color="tab:gray", alpha=0.6, label="configuration")
    if {"latency_low", "throughput_low"} <= set(points.columns):  # from analysis.stats.noise
        ax.errorbar(
            x,
            y,
            xerr=_error_bar(x, points["latency_low"], points["latency_high"]),
            yerr=_error_bar(y, points["throughput_low"], points["throughput_high"]),
            fmt="none",
            ecolor="tab:gray",
            alpha=0.45,
            elinewidth=1,
            label="95% interval",
        )
    ax.plot(
        front[LATENCY_MS],
        front[rec.THROUGHPUT_PER_GPU],
        "o-",
        color="tab:red",
        drawstyle="steps-post",
        label="Pareto front",
    )
    for _, point in front.iterrows():
        ax.annotate(
            point[CONFIGURATION],
            (point[LATENCY_MS], point[rec.THROUGHPUT_PER_GPU]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize="x-small",
        )
    valid = x[x > 0]
    if valid.size and valid.max() / valid.min() >= 8:  # latencies spanning decades read on log
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)  # an interval may reach below 0; a latency cannot
    ax.set_xlabel(f"per-user latency: {latency_label}")
    ax.set_ylabel("output tokens / s per GPU")
    ax.set_title("Throughput per GPU vs latency" + (f" — {sweep}" if sweep else ""))
    top = y.max() if y.notna().any() else 0
    ax.set_ylim(0, top * 1.15 if top > 0 else None)  # headroom for the names of the front
    ax.margins(x=0.1)
    ax.grid(True, alpha=0.3)
    if points.empty:
        ax.text(0.5, 0.5, "no successful trial", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize="small", loc="lower right")
    return fig


def write_plots(summary: pd.DataFrame, out_dir: str | Path, sweep: str | None = None) -> list[Path]:
    """Save every figure of `PLOTS` as PNG in `out_dir` and return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in PLOTS:
        path = out / spec.file_name
        metric_figure(summary, spec, sweep).savefig(path)
        paths.append(path)
    return paths


def repeat_points(summary: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean and 95% interval of each metric per (series, load) over the successful trials.

    Series are labelled among all trials, as the results table and the legends label them.

    Returns:
        `intervals.aggregate_repeats`' frame: columns `series`, `load`, `records.NUM_REPEATS`
        and `records.ci_column(metric, stat)` per metric and stat.
    """
    points = pd.DataFrame({"series": series_labels(summary), "load": load_values(summary)})
    for metric in metrics:
        points[metric] = numeric_column(summary, metric)
    ok = points[(summary[rec.TRIAL_STATUS] == rec.STATUS_OK).to_numpy()]
    if ok.empty:
        columns = ["series", "load", rec.NUM_REPEATS]
        columns += [rec.ci_column(m, stat) for m in metrics for stat in rec.CI_STATS]
        return pd.DataFrame(columns=columns)
    return aggregate_repeats(ok, ["series", "load"], metrics)


def _doubles(loads: np.ndarray) -> bool:
    """Whether the load values step by powers of two (1, 2, 4, ...), so log2 spaces them evenly."""
    if loads.size < 3 or loads.min() <= 0:
        return False
    steps = np.log2(loads / loads[0])
    return bool(np.allclose(steps, np.round(steps)))
