"""The server's own view of a trial: summary columns from the deltas of its /metrics capture.

`server_columns` reads one trial's `server_metrics.parquet` rows (`records.SERVER_METRICS_SCHEMA`)
through the backend's map (`Backend.server_series`: role -> Prometheus family) and hands
`sweep.core.summary` the server-side latencies (mean from the `_sum` / `_count` deltas, median
and p99 interpolated in the bucket deltas as Prometheus' `histogram_quantile` does), the
prefix-cache hit rate, preemptions and speculative-decoding acceptance. A latency is never
negative, so its q-quantile is at most mean / (1 - q) (Markov's inequality); the interpolation
is capped there, which matters where a histogram's lowest bucket is wide: vLLM's queue and
prefill buckets start at 0.3 s, where a uniform spread puts a 0.2 ms queue's median at 150 ms.
Series of several label sets (one per engine, say) are added up, as a Prometheus `sum by (le)`
would. Pure: no I/O, and every column is None when the server did not export what it needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sweep.core import records as rec

QUANTILES = {"median": 0.5, "p99": 0.99}

Columns = dict[str, float | int | None]
Stats = dict[str, float | None]


def server_columns(capture: pd.DataFrame | None, series: Mapping[str, str]) -> Columns:
    """Every server-side summary column of one trial (None where it cannot be computed).

    Args:
        capture: the trial's capture rows; None or empty when nothing was captured.
        series: role (`records.SERVER_LATENCIES`, the counter roles) -> Prometheus family name.
    """
    row: Columns = {
        rec.latency_column(role, stat): None
        for role in rec.SERVER_LATENCIES
        for stat in rec.SERVER_LATENCY_STATS
    }
    if capture is None or capture.empty or not series:
        return row | _counter_columns({}, None)
    deltas = capture[capture[rec.DELTA].notna()]
    requests = None
    for role in rec.SERVER_LATENCIES:  # TTFT after queue: its count wins, one per request
        family = series.get(role)
        if family is None:
            continue
        stats, count = histogram_stats(deltas[deltas[rec.FAMILY] == family], family)
        row |= {rec.latency_column(role, stat): value for stat, value in stats.items()}
        if role in (rec.SERVER_QUEUE, rec.SERVER_TTFT) and count is not None:
            requests = int(count)
    counters = {
        role: _total(deltas, family)
        for role, family in series.items()
        if role not in rec.SERVER_LATENCIES
    }
    return row | _counter_columns(counters, requests)


def histogram_stats(rows: pd.DataFrame, family: str) -> tuple[Stats, float | None]:
    """Mean, median and p99 in milliseconds of one histogram's deltas, and its count delta."""
    stats: Stats = dict.fromkeys(rec.SERVER_LATENCY_STATS)
    count = _sample_total(rows, f"{family}_count")
    total = _sample_total(rows, f"{family}_sum")
    if count is None or count <= 0:
        return stats, count
    if total is not None:
        stats["mean"] = total / count * 1e3
    buckets = rows[rows[rec.SAMPLE] == f"{family}_bucket"]
    if not buckets.empty:
        by_bound = buckets.groupby(rec.LE)[rec.DELTA].sum().sort_index()
        bounds, cumulative = by_bound.index.to_numpy(float), by_bound.to_numpy(float)
        for stat, q in QUANTILES.items():
            value = histogram_quantile(q, bounds, cumulative)
            if value is not None and total is not None:
                value = min(value, max(total, 0.0) / count / (1.0 - q))
            stats[stat] = None if value is None else value * 1e3
    return stats, count


def histogram_quantile(q: float, bounds: np.ndarray, cumulative: np.ndarray) -> float | None:
    """The q-quantile of a histogram given its upper bounds and cumulative counts.

    As Prometheus' `histogram_quantile`: linear interpolation inside the bucket that holds the
    rank, the lowest bucket starting at 0 (when its bound is positive), and the upper bound of
    the highest finite bucket when the rank falls in the +Inf one. Counts that decrease (two
    scrapes torn apart by a concurrent observation) are made monotonic first.

    Returns:
        The quantile in the histogram's unit; None without observations or without a +Inf bucket.
    """
    if bounds.size == 0 or not math.isinf(bounds[-1]):
        return None
    cumulative = np.maximum.accumulate(np.nan_to_num(cumulative, nan=0.0))
    observations = cumulative[-1]
    if observations <= 0:
        return None
    rank = q * observations
    i = int(np.searchsorted(cumulative, rank, side="left"))
    if i == bounds.size - 1:  # in the +Inf bucket: nothing to interpolate towards
        return float(bounds[-2]) if bounds.size > 1 else None
    upper = float(bounds[i])
    lower = float(bounds[i - 1]) if i > 0 else min(0.0, upper)
    below = cumulative[i - 1] if i > 0 else 0.0
    inside = cumulative[i] - below
    if inside <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / inside


def _counter_columns(counters: Mapping[str, float | None], requests: int | None) -> Columns:
    hits, queries = counters.get(rec.PREFIX_CACHE_HITS), counters.get(rec.PREFIX_CACHE_QUERIES)
    drafted = counters.get(rec.SPEC_DRAFT_TOKENS)
    accepted = counters.get(rec.SPEC_ACCEPTED_TOKENS)
    preemptions = counters.get(rec.PREEMPTIONS)
    return {
        rec.SERVER_REQUESTS: requests,
        rec.SERVER_PREFIX_CACHE_HIT_PERCENT: _percent(hits, queries),
        rec.SERVER_PREEMPTIONS: None if preemptions is None else int(preemptions),
        rec.SERVER_SPEC_DRAFT_TOKENS: None if drafted is None else int(drafted),
        rec.SERVER_SPEC_ACCEPTED_TOKENS: None if accepted is None else int(accepted),
        rec.SPEC_ACCEPTANCE_PERCENT: _percent(accepted, drafted),
    }


def _percent(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    return 100.0 * part / whole


def _total(deltas: pd.DataFrame, family: str) -> float | None:
    """A counter's delta over the trial, summed over its label sets; None if not exported."""
    rows = deltas[(deltas[rec.FAMILY] == family) & ~deltas[rec.SAMPLE].str.endswith("_created")]
    return float(rows[rec.DELTA].sum()) if not rows.empty else None


def _sample_total(rows: pd.DataFrame, sample: str) -> float | None:
    values = rows.loc[rows[rec.SAMPLE] == sample, rec.DELTA]
    return float(values.sum()) if not values.empty else None
