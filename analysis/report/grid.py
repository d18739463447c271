"""The results grid of a large sweep: one row per series and load, its repeats pooled.

A sweep of more than `sections.LISTED_UP_TO` trials does not list them in the report's opening
pages: its "Results" section is this grid (trials and failures counted, each metric's mean over the
successful repeats with its 95% interval, from `analysis.figures.plots.repeat_points` as the plots
draw them), and the per-trial rows go to `trials.csv` and the sortable table at the end of
report.html (`analysis.report.html`).
"""

from __future__ import annotations

import pandas as pd

from analysis.figures.plots import repeat_points
from analysis.read.columns import load_values, series_labels
from analysis.report.sections import MISSING
from sweep.core import records as rec

TRIALS_CSV = "trials.csv"  # the per-trial table of a large sweep, as report.html shows it
# metric -> (header, number format, scale)
GRID_METRICS = {
    rec.OUTPUT_THROUGHPUT: ("Output tok/s", ",.1f", 1.0),
    rec.latency_column("ttft", "median"): ("TTFT p50 (ms)", ",.1f", 1.0),
    rec.latency_column("ttft", "p99"): ("TTFT p99 (ms)", ",.1f", 1.0),
    rec.latency_column("tpot", "median"): ("TPOT p50 (ms)", ",.1f", 1.0),
    rec.latency_column("e2e", "median"): ("E2E p50 (s)", ",.2f", 1e-3),
    rec.COST_PER_1M_OUTPUT: ("USD / 1M output tok", ",.2f", 1.0),
}


def grid_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Series, load, trials (failed), and each metric's mean [95% interval] over the repeats."""
    keys = pd.DataFrame(
        {
            "series": series_labels(trials),
            "load": load_values(trials),
            "failed": trials[rec.TRIAL_STATUS] != rec.STATUS_OK,
        }
    )
    counts = keys.groupby(["series", "load"], dropna=False)["failed"].agg(["size", "sum"])
    metrics = [m for m in GRID_METRICS if m in trials]
    points = repeat_points(trials, metrics).set_index(["series", "load"])
    table = counts.join(points, how="left").reset_index()
    shown = pd.DataFrame(
        {
            "Series": table["series"],
            "Load": table["load"].map(lambda v: MISSING if pd.isna(v) else f"{v:g}"),
            "Trials": table["size"].astype(int).astype(str),
            "Failed": table["sum"].astype(int).astype(str),
        }
    )
    for metric in metrics:
        name, fmt, scale = GRID_METRICS[metric]
        mean, low, high = (table[rec.ci_column(metric, s)] * scale for s in rec.CI_STATS)
        shown[f"{name}, mean [95% CI]"] = [
            _interval(m, lo, hi, fmt) for m, lo, hi in zip(mean, low, high, strict=True)
        ]
    return shown


def _interval(mean: float, low: float, high: float, fmt: str) -> str:
    if pd.isna(mean):
        return MISSING
    if pd.isna(low) or pd.isna(high):
        return format(mean, fmt)
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"
