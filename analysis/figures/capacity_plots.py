"""Figures of a capacity search: latency against offered load, and capacity per dollar.

Pure functions from the probes (`analysis.stats.capacity.search_probes`) and the capacity table
(`analysis.stats.capacity.capacity_table`) to matplotlib Figures on the Agg canvas, drawn as
`analysis.figures.plots` draws the sweep's figures, and `write_capacity_plots`, which saves them as
PNG beside the report's other plots. The latency plotted is the one the SLO bounds (the limit most
searches on a load axis set), else TTFT p99.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.figures.canvas import new_figure, plain_log_ticks
from analysis.read.columns import CONFIGURATION, numeric_column
from analysis.stats.capacity import (
    CAPACITY_LOAD,
    CAPACITY_REQ_S,
    CONCURRENCY_AXIS,
    LOAD,
    PASSED,
    REQ_S_PER_USD_HOUR,
    search_probes,
    slo_limits,
)
from sweep.core import records as rec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LATENCY_FILE = "capacity_latency.png"
PER_DOLLAR_FILE = "capacity_per_dollar.png"
CAPACITY_TITLES = {
    LATENCY_FILE: "Latency against offered load, SLO limit and capacity",
    PER_DOLLAR_FILE: "Capacity per dollar",
}
DEFAULT_METRIC = rec.latency_column("ttft", "p99")
AXIS_NAMES = {CONCURRENCY_AXIS: "concurrency (streams)"}


def slo_metric(probes: pd.DataFrame) -> str:
    """The summary column most searches' SLO bounds (the first bound of each), else TTFT p99."""
    firsts = probes.groupby(rec.SEARCH_ID, sort=True).head(1)
    bounded = [next(iter(slo_limits(row)), None) for _, row in firsts.iterrows()]
    named = pd.Series([b for b in bounded if b is not None and b in probes], dtype=object)
    return str(named.value_counts().index[0]) if len(named) else DEFAULT_METRIC


def latency_figure(
    probes: pd.DataFrame, table: pd.DataFrame, metric: str | None = None, sweep: str | None = None
) -> Figure:
    """Latency against offered load, one line per search and one panel per load axis.

    Each panel shows `metric`, or the latency its searches' SLO bounds (`slo_metric`). Passing
    probes are dots, failing ones crosses; the capacity is a star on a dashed vertical line in
    the search's colour, the SLO limit a red dotted horizontal line.
    """
    axes_names = sorted(probes[rec.SEARCH_AXIS].dropna().unique()) or [""]
    fig = new_figure(7.5 * len(axes_names), 4.8)
    colors = _colors(table)
    for position, axis_name in enumerate(axes_names, start=1):
        ax = fig.add_subplot(1, len(axes_names), position)
        on_axis = probes[probes[rec.SEARCH_AXIS] == axis_name] if axis_name else probes
        shown = metric or slo_metric(on_axis)
        _draw_searches(ax, on_axis, table, shown, colors)
        ax.scatter([], [], color="gray", s=24, label="probe passed")
        ax.scatter([], [], color="gray", marker="x", s=36, label="probe failed")
        ax.scatter([], [], color="gray", marker="*", s=120, label="capacity")
        limits = {slo_limits(r).get(shown) for _, r in on_axis.iterrows()} - {None}
        for limit in sorted(limits):
            ax.axhline(limit, color="tab:red", linestyle=":", label=f"SLO {shown} ≤ {limit:g}")
        loads = numeric_column(on_axis, LOAD).dropna()
        if len(loads) and loads.min() > 0 and loads.max() / loads.min() >= 8:
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
        ax.set_xlabel("offered load: " + AXIS_NAMES.get(axis_name, "request rate (req/s)"))
        ax.set_ylabel(f"{shown} (ms)")
        ax.set_title(f"{shown} vs offered load", fontsize="medium")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
        if numeric_column(on_axis, shown).isna().all():
            ax.text(0.5, 0.5, f"no probe has {shown}", ha="center", transform=ax.transAxes)
    fig.suptitle("Latency vs offered load" + (f" — {sweep}" if sweep else ""))
    return fig


def per_dollar_figure(table: pd.DataFrame, sweep: str | None = None) -> Figure:
    """Horizontal bars of req/s per USD-hour per search, best at the top.

    Without a hardware price anywhere the bars are the capacity in req/s.
    """
    priced = numeric_column(table, REQ_S_PER_USD_HOUR).notna().any()
    column = REQ_S_PER_USD_HOUR if priced else CAPACITY_REQ_S
    values = numeric_column(table, column).fillna(0.0)
    fig = new_figure(7.5, 1.2 + 0.45 * max(len(table), 1))
    ax = fig.add_subplot()
    positions = np.arange(len(table))[::-1]  # the table's first (best) row on top
    colors = _colors(table)
    ax.barh(positions, values, color=[colors[s] for s in table[rec.SEARCH_ID]])
    ax.set_yticks(positions, list(table[CONFIGURATION]), fontsize="small")
    for y, value in zip(positions, values, strict=True):
        ax.annotate(f"{value:,.3g}", (value, y), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize="x-small")  # fmt: skip
    ax.set_xlabel("requests / s per USD-hour" if priced else "capacity (req/s); no price known")
    ax.set_title("Capacity per dollar" + (f" — {sweep}" if sweep else ""))
    ax.margins(x=0.15)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def write_capacity_plots(
    trials: pd.DataFrame, table: pd.DataFrame, out_dir: str | Path, sweep: str | None = None
) -> list[Path]:
    """Save both figures as PNG in `out_dir`; nothing when no search ran."""
    if table.empty:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probes = search_probes(trials)
    latency, per_dollar = out / LATENCY_FILE, out / PER_DOLLAR_FILE
    latency_figure(probes, table, sweep=sweep).savefig(latency)
    per_dollar_figure(table, sweep).savefig(per_dollar)
    return [latency, per_dollar]


def _draw_searches(
    ax: Axes, probes: pd.DataFrame, table: pd.DataFrame, metric: str, colors: dict
) -> None:
    capacities = table.set_index(rec.SEARCH_ID)
    for search_id, search in probes.groupby(rec.SEARCH_ID, sort=False):
        points = pd.DataFrame(
            {"load": search[LOAD], "value": numeric_column(search, metric), "ok": search[PASSED]}
        ).dropna(subset=["load", "value"])
        points = points.sort_values("load")
        color, name = colors[search_id], search[CONFIGURATION].iloc[0]
        ax.plot(points["load"], points["value"], color=color, alpha=0.7, label=name)
        passed = points["ok"].fillna(False).astype(bool)
        ax.scatter(points.loc[passed, "load"], points.loc[passed, "value"], color=color, s=24)
        ax.scatter(points.loc[~passed, "load"], points.loc[~passed, "value"], color=color,
                   marker="x", s=36)  # fmt: skip
        capacity = capacities[CAPACITY_LOAD].get(search_id)
        if capacity is not None and pd.notna(capacity) and capacity > 0:
            ax.axvline(capacity, color=color, linestyle="--", alpha=0.6)
            at = points.loc[passed & (points["load"] == capacity), "value"]
            if len(at):
                ax.scatter([capacity], [at.mean()], color=color, marker="*", s=160,
                           edgecolors="black", zorder=3)  # fmt: skip


def _colors(table: pd.DataFrame) -> dict[str, object]:
    """One colour per search, in the table's order, shared by both figures."""
    palette = [f"C{i % 10}" for i in range(len(table))]
    return dict(zip(table[rec.SEARCH_ID], palette, strict=True))
