"""Figures of a sweep: output throughput, median TTFT and cost against the offered load.

Pure functions from the summary frame (`analysis.load.load_summary`) to matplotlib Figures drawn
on the Agg canvas, and `write_plots`, which saves them as PNG files for the report. The helpers
`load_values`, `load_axis_label` and `series_labels` decide where a trial sits on the x axis and
which line it belongs to, and `repeat_points` gives each point its mean and 95% interval over
the repeats (`analysis.intervals`); the report's tables use them too, so that a plot draws the
interval its table states, as an error bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.canvas import new_figure
from analysis.intervals import aggregate_repeats
from sweep.core import records as rec
from sweep.core.config import streams_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Both are the load axis (concurrency where set, else batch size), so neither makes a series.
LOAD_COLUMNS = (rec.WORKLOAD_CONCURRENCY, rec.WORKLOAD_BATCH_SIZE)
GROUP_JOIN = " · "
NO_SERIES = "all trials"
# Columns of the Pareto points frame (`analysis.compare.pareto_points`).
CONFIGURATION = "configuration"
LATENCY_MS = "latency_ms"
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


# The summary columns `load_values` reads, and all it reads.
LOAD_COLUMNS = (rec.WORKLOAD_NAME, rec.WORKLOAD_CONCURRENCY, rec.WORKLOAD_BATCH_SIZE)


def load_values(summary: pd.DataFrame) -> pd.Series:
    """Offered load of each trial: the streams it keeps in flight (`streams_of`).

    An uncapped open loop has no stream count; it sits at its batch size, as before.
    """
    name, concurrency_column, batch_column = LOAD_COLUMNS
    concurrency = numeric_column(summary, concurrency_column)
    batch = numeric_column(summary, batch_column)
    modes = summary.get(name, pd.Series(None, index=summary.index, dtype=object))
    keys = list(zip(modes.map(str), _integers(concurrency), _integers(batch), strict=True))
    rule = {key: streams_of(*key) for key in set(keys)}  # a sweep has a few distinct loads
    streams = [rule[key] for key in keys]
    return pd.Series(streams, index=summary.index, dtype=float).fillna(batch)


def _integers(values: pd.Series) -> list[int | None]:
    """Floats as ints, None for NaN."""
    return [None if v != v else int(v) for v in values.tolist()]


def load_axis_label(summary: pd.DataFrame) -> str:
    """Name of the load axis: concurrency, batch size, or both when trials mix them."""
    by_concurrency = numeric_column(summary, rec.WORKLOAD_CONCURRENCY).notna()
    if by_concurrency.all():
        return "concurrency"
    return "concurrency or batch size" if by_concurrency.any() else "batch size"


def series_columns(summary: pd.DataFrame, exclude_groups: tuple[str, ...] = ()) -> list[str]:
    """Config columns that tell the lines apart: `backend.name`, then every other varying one.

    A column joins only if it still splits some line, so values that follow from the backend
    (its own settings, null for the others) do not clutter the legend. Columns of the config
    groups in `exclude_groups` (e.g. `dataset`, when the task is shown on its own) never join.
    """
    keys = {
        col: display_texts(summary[col])
        for col in summary.columns
        if _is_config(col)
        and col.partition(rec.CONFIG_SEPARATOR)[0] not in exclude_groups
        and (col == rec.BACKEND_NAME or _varies(summary[col]))
    }
    chosen = [rec.BACKEND_NAME] if rec.BACKEND_NAME in keys else []
    for col, values in keys.items():
        if col in chosen or col in LOAD_COLUMNS or values.nunique() < 2:
            continue
        if not chosen or values.groupby([keys[c] for c in chosen]).nunique().max() > 1:
            chosen.append(col)
    return chosen


def series_labels(summary: pd.DataFrame, exclude_groups: tuple[str, ...] = ()) -> pd.Series:
    """Legend label of each trial, e.g. "hf per_request · random" (see `series_columns`)."""
    columns = series_columns(summary, exclude_groups)

    def label(row: pd.Series) -> str:
        groups: dict[str, list[str]] = {}
        for col in columns:
            text = display_text(row[col])
            if not text:
                continue
            group, _, field = col.partition(rec.CONFIG_SEPARATOR)
            # Names read on their own ("vllm"); numbers and flags need their field ("dtype=...").
            shown = text if isinstance(row[col], str) else f"{field}={text}"
            groups.setdefault(group, []).append(shown)
        return GROUP_JOIN.join(" ".join(parts) for parts in groups.values()) or NO_SERIES

    if not len(summary):
        return pd.Series(dtype=str)
    if not columns:
        return pd.Series(NO_SERIES, index=summary.index, dtype=object)
    # One label per distinct combination of the columns' texts, not per trial: a sweep of
    # 10,000 trials has a few dozen series.
    texts = pd.DataFrame({c: display_texts(summary[c]) for c in columns}, index=summary.index)
    named = texts.assign(**{f"{c}\x00str": summary[c].map(_is_text) for c in columns})
    firsts = ~named.duplicated()
    labels = summary.loc[firsts].apply(label, axis=1)
    keys = list(named.columns)
    table = named.loc[firsts].assign(_label=labels.to_numpy())
    return named.merge(table, on=keys, how="left").set_index(summary.index)["_label"]


def _varies(values: pd.Series) -> bool:
    """Whether a column holds two or more values (null counts as one): cheaper than its texts.

    A column of one value has one text, so it can never tell lines apart; most config columns of
    a large sweep are such, and their texts need not be worked out.
    """
    try:
        return values.nunique(dropna=False) > 1
    except TypeError:  # lists or dicts: unhashable, judged by their texts
        return True


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def display_texts(values: pd.Series) -> pd.Series:
    """`display_text` of every value, worked out once per distinct value."""
    try:
        uniques = pd.unique(values)
    except TypeError:  # lists or dicts: unhashable, one at a time
        return values.map(display_text)
    texts = {value: display_text(value) for value in uniques if not pd.isna(value)}
    return values.map(texts).fillna("").astype(object)


def sweep_title(summary: pd.DataFrame, fallback: str) -> str:
    """The sweep's name from its trials, or `fallback` (e.g. the folder name)."""
    names = summary[rec.SWEEP_NAME].dropna().unique() if rec.SWEEP_NAME in summary else []
    return ", ".join(sorted(map(str, names))) or fallback


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
        points: `analysis.compare.pareto_points`: configuration, latency_ms, throughput per
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
    if {"latency_low", "throughput_low"} <= set(points.columns):  # intervals from analysis.noise
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


def numeric_column(summary: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN for nulls and non-numbers); all NaN when the column is absent."""
    if column not in summary:
        return pd.Series(np.nan, index=summary.index, dtype=float)
    return pd.to_numeric(summary[column], errors="coerce").astype(float)


def reasoned(frame: pd.DataFrame) -> bool:
    """Whether some trial (or stage) of `frame` streamed a reasoning model's thinking.

    Then its tables show the time to the answer's first token beside TTFT; otherwise that time
    is TTFT's and is left out.
    """
    return bool((numeric_column(frame, rec.REASONING_TOKENS_TOTAL) > 0).any())


def number(value: object) -> float | None:
    """A single value as a float; None for nulls and non-numbers."""
    parsed = pd.to_numeric(value, errors="coerce") if value is not None else None
    return None if parsed is None or pd.isna(parsed) else float(parsed)


def text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as display text (`display_text`); all "" when the column is absent."""
    if column not in frame:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].map(display_text)


def _is_config(column: str) -> bool:
    return rec.CONFIG_SEPARATOR in column and not column.startswith(rec.ENV_PREFIX)


def display_text(value: object) -> str:
    """A config value as legend text; "" for null. Lists and dicts become their repr."""
    if isinstance(value, list | tuple | dict | np.ndarray):
        return str(list(value) if isinstance(value, np.ndarray) else value)
    if value is None or pd.isna(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an int column with nulls comes back as float
    return str(value)
