"""Mean and 95% intervals over repeats: `confidence_interval` and `aggregate_repeats`.

The report and the sweep comparison hand these the per-trial summary rows that the worker
computed (`sweep.core.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist

import numpy as np
import pandas as pd

from sweep.core import records as rec

try:
    from scipy import stats as _scipy_stats
except ImportError:  # scipy is optional: the t table below covers the usual 95% interval
    _scipy_stats = None

# Two-sided 95% Student t quantiles for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


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
    half = _t_quantile(level, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
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


def _t_quantile(level: float, df: int) -> float:
    if _scipy_stats is not None:
        return float(_scipy_stats.t.ppf((1 + level) / 2, df))
    if df > len(_T95):
        return NormalDist().inv_cdf((1 + level) / 2)  # 1.96 at 95%; t is within 1.5% of it
    if math.isclose(level, 0.95):
        return _T95[df - 1]
    raise ValueError(f"confidence level {level} with {df + 1} values needs scipy installed")
