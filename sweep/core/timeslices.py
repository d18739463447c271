"""Metrics per time slice of one trial: how its load and latencies moved while it ran.

`time_slices` cuts a trial into windows of `workload.slice_s` seconds (by default a twentieth of
its span, rounded down to 1, 2 or 5 times a power of ten) from its first send to its last end,
and hands on one row per window (`records.TIMESLICES_SCHEMA`), so warm-up, a ramp, stages,
degradation and queue build-up can be seen. Every request of the records counts, inside the
steady-state window or not: requests started (by `sent_s`), finished ok or failed (by `end_s`;
a request the client cancelled is neither), in flight at the window's end; output tokens where
they arrived (the first chunk's at the first token, then one per inter-token gap, as the
summary's peak throughput counts them), so the windows add up to the trial's completed requests
and output tokens; TTFT of the ok requests sent in the window and ITL of the gaps ending in it;
KV-cache use and waiting requests as the means of the server telemetry's samples in the window.
Pure: the worker calls it for every trial.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa

from sweep.core import records as rec

SLICES_PER_TRIAL = 20
NICE_STEPS = (5.0, 2.0, 1.0)


def slice_length(span_s: float, slice_s: float | None = None) -> float:
    """`slice_s`, else a twentieth of `span_s` rounded down to 1, 2 or 5 x 10^k seconds."""
    if slice_s is not None:
        return float(slice_s)
    if not span_s > 0:
        return 1.0
    raw = span_s / SLICES_PER_TRIAL
    power = 10.0 ** math.floor(math.log10(raw))
    return next(step * power for step in NICE_STEPS if step * power <= raw * (1 + 1e-9))


def time_slices(
    requests: pd.DataFrame,
    timeseries: pd.DataFrame | None = None,
    slice_s: float | None = None,
    trial_id: str = "",
) -> pa.Table:
    """One row per window of the trial's records (`records.TIMESLICES_SCHEMA`).

    Args:
        requests: the trial's request records (`records.REQUESTS_SCHEMA`, trial clock).
        timeseries: its telemetry samples in long format (`records.TIMESERIES_SCHEMA`), if any.
        slice_s: the window's length; None picks one from the trial's span (`slice_length`).
        trial_id: written into every row.
    """
    sent, end = _numeric(requests, rec.SENT_S), _numeric(requests, rec.END_S)
    if np.isnan(sent).all():
        return rec.TIMESLICES_SCHEMA.empty_table()
    status = requests[rec.STATUS].to_numpy()
    ok = (status == rec.STATUS_OK) & ~np.isnan(sent)
    tokens_at, tokens, gaps_at, gaps = _tokens(requests[ok])
    origin = float(np.nanmin(sent))
    last = float(np.nanmax(np.concatenate([sent, end, tokens_at])))
    length = slice_length(last - origin, slice_s)
    count = int((last - origin) // length) + 1

    def window(times: np.ndarray) -> np.ndarray:
        times = times[~np.isnan(times)]
        return np.clip(((times - origin) // length).astype(np.int64), 0, count - 1)

    def per_window(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(window(times), weights=weights, minlength=count)

    ended = end[~np.isnan(sent)]  # of the requests sent: in flight until they end
    started = per_window(sent)
    columns = {
        rec.TRIAL_ID: [trial_id] * count,
        rec.SLICE_IDX: list(range(count)),
        rec.SLICE_START_S: [origin + i * length for i in range(count)],
        rec.SLICE_END_S: [origin + (i + 1) * length for i in range(count)],
        rec.REQUESTS_STARTED: started.tolist(),
        rec.REQUESTS_FINISHED: per_window(end[ok]).tolist(),
        rec.REQUESTS_FAILED: per_window(end[~ok & (status != rec.STATUS_CANCELLED)]).tolist(),
        rec.REQUESTS_IN_FLIGHT: (np.cumsum(started) - np.cumsum(per_window(ended))).tolist(),
    }
    output = np.rint(per_window(tokens_at, tokens)).astype(np.int64)
    columns[rec.SLICE_OUTPUT_TOKENS] = output.tolist()
    columns[rec.SLICE_OUTPUT_THROUGHPUT] = (output / length).tolist()
    ttft_ms = _numeric(requests, rec.TTFT_S)[ok] * 1e3
    for metric, at, values in (("ttft", sent[ok], ttft_ms), ("itl", gaps_at, gaps * 1e3)):
        grouped = _grouped(window(at), values[~np.isnan(at)], count)
        for stat in rec.SLICE_LATENCY_STATS:
            columns[f"{metric}_ms_{stat}"] = [_percentile(v, stat) for v in grouped]
    for column, metric in (
        (rec.SLICE_KV_CACHE_USAGE, rec.KV_CACHE_USAGE_PERCENT),
        (rec.SLICE_WAITING_REQUESTS, rec.WAITING_REQUESTS),
    ):
        columns[column] = _sample_means(timeseries, metric, origin, length, count)
    return pa.Table.from_pydict(columns, schema=rec.TIMESLICES_SCHEMA)


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _tokens(ok: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrival time and count of the output tokens; end time and length of each ITL gap."""
    times, weights, gap_ends, gaps = [], [], [], []
    for first, itl, n_out in zip(
        _numeric(ok, rec.FIRST_TOKEN_S), ok[rec.ITL_S], _numeric(ok, rec.OUTPUT_TOKENS), strict=True
    ):
        if np.isnan(first) or np.isnan(n_out):
            continue
        cell = np.asarray([] if itl is None or np.ndim(itl) == 0 else itl, dtype=float)
        arrivals = first + np.concatenate(([0.0], np.cumsum(cell)))
        times.append(arrivals)
        # Every gap ends at one token; the rest of the output came with the first chunk.
        weights.append(np.concatenate(([n_out - cell.size], np.ones(cell.size))))
        gap_ends.append(arrivals[1:])
        gaps.append(cell)
    joined = (np.concatenate(x) if x else np.empty(0) for x in (times, weights, gap_ends, gaps))
    return tuple(joined)


def _grouped(windows: np.ndarray, values: np.ndarray, count: int) -> list[np.ndarray]:
    order = np.argsort(windows, kind="stable")
    bounds = np.searchsorted(windows[order], np.arange(count + 1))
    ordered = values[order]
    return [ordered[bounds[i] : bounds[i + 1]] for i in range(count)]


def _percentile(values: np.ndarray, stat: str) -> float | None:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    return float(np.percentile(values, 50.0 if stat == "median" else float(stat[1:])))


def _sample_means(
    timeseries: pd.DataFrame | None, metric: str, origin: float, length: float, count: int
) -> list[float | None]:
    """Mean of `metric`'s samples in each window; None where the window has none."""
    if timeseries is None or timeseries.empty:
        return [None] * count
    samples = timeseries[timeseries[rec.METRIC] == metric]
    at = (_numeric(samples, rec.T_S) - origin) // length
    values = _numeric(samples, rec.VALUE)
    keep = (at >= 0) & (at < count) & ~np.isnan(values)
    sums = np.bincount(at[keep].astype(np.int64), weights=values[keep], minlength=count)
    seen = np.bincount(at[keep].astype(np.int64), minlength=count)
    return [float(s / n) if n else None for s, n in zip(sums, seen, strict=True)]
