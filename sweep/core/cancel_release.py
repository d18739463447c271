"""How soon the server let go of the requests its client hung up on, from its sampled counts.

A request the client cancelled (`workload.cancel_rate`) or gave up on (`workload.timeout_s`) is
over for the client at once; the server holds its slot until it notices the disconnect (vLLM
aborts it at its next output, a server that does not look keeps generating). The trial samples
the server's running and waiting requests (`records.RUNNING_REQUESTS`, `WAITING_REQUESTS`, every
`SERVER_INTERVAL_S`); at each sample the client knows how many of its requests were in flight
(sent, not yet ended: a hung-up one ends when the client closed it). What the server holds beyond
that is what it has not let go of yet:

    held(t) = max(0, server running + waiting at t - client in flight at t)

which holds under the trial's own load: the other requests are in both counts. Over the trial's
span (first send to last end), Little's law turns the mean of `held` into the mean time a
hang-up stays held: `held` on average = hang-ups per second x that time, so

    CANCEL_RELEASE_MS_MEAN = mean held(t) / (hang-ups / span) x 1000.

Resolution: an estimate of the mean, not of each release; it needs no sample at the release
itself, so its bias does not grow with the interval, but its spread does: it averages
CANCEL_RELEASE_SAMPLES samples (one a second by default: a 60 s trial gives 60), each counting
whole requests. It leans low by the time a request spends in transit: one sent and not yet
counted by the server, or ended by the server before the client read its last token, makes the
server's count smaller than the client's for that moment (on loopback, well under a ms).
CANCEL_HELD_MAX is the most hang-ups the server held at one sample: a server that never lets go
holds about as many as it was sent while their answers would have run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.core import records as rec

Columns = dict[str, float | int | None]


def release_columns(requests: pd.DataFrame, timeseries: pd.DataFrame | None) -> Columns:
    """The release columns of one trial; none for a trial whose client hung up on nothing.

    Args:
        requests: every request record of the trial (`records.REQUESTS_SCHEMA`), all of them:
            the steady-state window does not change what the server held.
        timeseries: the trial's samples (`records.TIMESERIES_SCHEMA`), same clock.

    Returns:
        `CANCEL_RELEASE_MS_MEAN`, `CANCEL_HELD_MAX` and `CANCEL_RELEASE_SAMPLES`; the first two
        None where the server's running requests were not sampled during the span.
    """
    hung_up = int(_flag(requests, rec.CANCELLED).sum() + _flag(requests, rec.TIMED_OUT).sum())
    if not hung_up:
        return {}
    sent, end = _spans(requests)
    times, server = _server_counts(timeseries)
    span = float(end[-1] - sent[0]) if sent.size else 0.0
    if span > 0:
        inside = (times >= sent[0]) & (times <= end[-1])
        times, server = times[inside], server[inside]
    if span <= 0 or not times.size:
        return {rec.CANCEL_RELEASE_MS_MEAN: None, rec.CANCEL_HELD_MAX: None,
                rec.CANCEL_RELEASE_SAMPLES: 0}  # fmt: skip
    # Sent by t, less ended by t: in flight at t (each request ends after it was sent).
    in_flight = np.searchsorted(sent, times, "right") - np.searchsorted(end, times, "right")
    held = np.clip(server - in_flight, 0, None)
    return {
        rec.CANCEL_RELEASE_MS_MEAN: float(held.mean() / (hung_up / span) * 1e3),
        rec.CANCEL_HELD_MAX: int(held.max()),
        rec.CANCEL_RELEASE_SAMPLES: int(times.size),
    }


def _spans(requests: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The send times and the end times of the requests sent, each sorted."""
    sent, end = _numeric(requests, rec.SENT_S), _numeric(requests, rec.END_S)
    known = ~np.isnan(sent) & ~np.isnan(end)
    return np.sort(sent[known]), np.sort(end[known])


def _server_counts(timeseries: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Sample times and the server's running + waiting requests at each (running sampled)."""
    if timeseries is None or timeseries.empty:
        return np.empty(0), np.empty(0)
    wanted = timeseries[rec.METRIC].isin([rec.RUNNING_REQUESTS, rec.WAITING_REQUESTS])
    rows = timeseries[wanted]
    running = rows[rows[rec.METRIC] == rec.RUNNING_REQUESTS]
    if running.empty:
        return np.empty(0), np.empty(0)
    counts = rows.groupby(rec.T_S)[rec.VALUE].sum()  # one scrape: both at one time
    counts = counts[counts.index.isin(running[rec.T_S])]
    return counts.index.to_numpy(dtype=float), counts.to_numpy(dtype=float)


def _flag(requests: pd.DataFrame, column: str) -> np.ndarray:
    if column not in requests:
        return np.zeros(len(requests), dtype=bool)
    return requests[column].eq(True).to_numpy(dtype=bool)


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
