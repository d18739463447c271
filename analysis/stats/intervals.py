"""Mean and 95% intervals over repeats: `confidence_interval` and `aggregate_repeats`.

The report and the sweep comparison hand these the per-trial summary rows that the worker
computed (`sweep.core.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import special

from sweep.core import records as rec


def confidence_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student t interval of `values` (NaN and None are skipped).

    Returns:
        (mean, low, high); low and high are NaN with fewer than two values, all NaN with none.
    """
    x = np.array([v for v in values if v is not None], dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    half = t_quantile(level, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def aggregate_repeats(summary: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean and 95% interval of each metric over the repeats of each grid point.

    Args:
        summary: one row per trial; pass only the successful trials.
        keys: columns identifying a grid point (everything that varies except the repeat index).
        metrics: metric columns to aggregate.

    Returns:
        One row per grid point: the keys, `records.NUM_REPEATS`, and for every metric the
        columns `records.ci_column(metric, stat)` for stat in `records.CI_STATS`.
    """
    rows = []
    for key_values, group in summary.groupby(keys, dropna=False, sort=True):
        row = dict(zip(keys, key_values, strict=True))
        row[rec.NUM_REPEATS] = len(group)
        for metric in metrics:
            interval = confidence_interval(pd.to_numeric(group[metric], errors="coerce"))
            for stat, value in zip(rec.CI_STATS, interval, strict=True):
                row[rec.ci_column(metric, stat)] = value
        rows.append(row)
    return pd.DataFrame(rows)


def t_quantile(level: float, df: float) -> float:
    """Two-sided Student t quantile at `level`; infinite degrees of freedom give the normal one."""
    if not math.isfinite(df):
        return float(special.ndtri((1 + level) / 2))
    # scipy.special's inverse of Student's t CDF: the same values as scipy.stats.t.ppf, without
    # the second of importing scipy.stats at the end of every sweep.
    return float(special.stdtrit(max(df, 1e-9), (1 + level) / 2))
