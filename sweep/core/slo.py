"""Whether one trial meets the SLO, by how much, and which bound it missed.

`verdict` holds a trial's summary row to `SLOConfig`: every trial-level limit
(`SLOConfig.trial_limits`: `ttft_ms_p99`, any column of `known_limit_columns`) is an upper bound
on that column, and `goodput_fraction` is a lower bound on the share of requests meeting every
per-request bound (`records.SLO_ATTAINED_FRACTION`, computed by `sweep.core.summary`). The
margin says how far the trial is from the nearest bound, as a share of it (> 0: inside): the
capacity search (`sweep.worker.search`) interpolates it to find where the SLO stops holding.
`check_names` rejects a limit on a column the summary does not have, before any trial runs.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sweep.core import records as rec
from sweep.core.config import SLOConfig
from sweep.core.errors import ConfigError

# Summary columns where a smaller value is a better service, other than the latencies: what it
# costs per output token, and signs of overload (failed requests, preemptions, a full KV cache).
# The client's own lag and the process's memory say how the measurement went, not the service.
_OTHER_LIMIT_COLUMNS = (
    rec.COST_PER_1M_OUTPUT,
    rec.FAILED_REQUESTS,
    rec.SERVER_PREEMPTIONS,
    rec.PEAK_KV_CACHE_USAGE,
    rec.MEAN_KV_CACHE_USAGE,
    rec.PEAK_GPU_MEMORY_MB,
)


@dataclass(frozen=True)
class Verdict:
    """A trial against the SLO.

    Attributes:
        passed: every bound holds (and the trial ran).
        margin: the tightest bound's (limit - value) / limit, (value - target) / target for the
            goodput fraction; > 0 is inside. None when the trial failed, a bounded value was
            not measured, or no bound is set.
        reason: the tightest bound missed, e.g. `ttft_ms_p99 812.4 > 500`; for a pass, the
            tightest bound met (`ttft_ms_p99 412.3 <= 500`).
    """

    passed: bool
    margin: float | None
    reason: str


def known_limit_columns() -> tuple[str, ...]:
    """The numeric summary columns a trial-level limit may name: lower is better in each.

    The client's latency statistics (`ttft_ms_p99`, ...: `records.LATENCY_METRICS` x
    `records.LATENCY_STATS`), the server's own latencies (`server_queue_ms_p99`, ...:
    `records.SERVER_LATENCIES` x `records.SERVER_LATENCY_STATS`), the cost per million output
    tokens, failed requests, preemptions, KV cache usage and peak GPU memory.
    """
    client = [rec.latency_column(m, s) for m in rec.LATENCY_METRICS for s in rec.LATENCY_STATS]
    server = [
        rec.latency_column(r, s) for r in rec.SERVER_LATENCIES for s in rec.SERVER_LATENCY_STATS
    ]
    return (*client, *server, *_OTHER_LIMIT_COLUMNS)


def check_names(slo: SLOConfig, known_columns: Iterable[str] | None = None) -> None:
    """Raise ConfigError (one line) when a trial-level limit names no known summary column.

    Args:
        slo: the SLO whose `trial_limits` are checked.
        known_columns: the columns that may be limited; `known_limit_columns()` when None.
    """
    known = list(known_limit_columns() if known_columns is None else known_columns)
    for name in slo.trial_limits():
        if name in known:
            continue
        key = f"slo.limits.{name}" if name in slo.limits else f"slo.{name}"
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"e.g. {', '.join(known[:3])}"
        raise ConfigError(f"{key}: the summary has no column {name!r} to limit; {hint}")


def verdict(slo: SLOConfig, row: Mapping[str, Any]) -> Verdict:
    """Hold one trial's summary row to the SLO.

    A failed trial (`trial_status` not `ok`) fails with its error as the reason; a row without
    `trial_status` (the metrics alone) is judged on its metrics. A bounded value that is
    missing, None or NaN fails the bound (`ttft_ms_p99 not measured`) and leaves the margin
    unknown. The reason names an unmeasured bound first, else the bound with the least margin.

    Args:
        slo: the bounds; with none set every trial passes (margin None).
        row: the trial's summary row (`records` columns).

    Returns:
        The verdict: passed, margin and reason.
    """
    status = row.get(rec.TRIAL_STATUS, rec.STATUS_OK)
    if status != rec.STATUS_OK:
        return Verdict(False, None, _failure(row))
    limits = slo.trial_limits().items()
    checks = [_upper(column, limit, row.get(column)) for column, limit in limits]
    if slo.goodput_fraction is not None:
        value = row.get(rec.SLO_ATTAINED_FRACTION)
        checks.append(_lower(rec.SLO_ATTAINED_FRACTION, slo.goodput_fraction, value))
    if not checks:
        return Verdict(True, None, "no SLO bound set")
    unmeasured = [reason for margin, reason in checks if margin is None]
    if unmeasured:
        return Verdict(False, None, unmeasured[0])
    margin, reason = min(checks, key=lambda check: check[0])
    return Verdict(margin >= 0.0, margin, reason)


def _upper(column: str, limit: float, value: Any) -> tuple[float | None, str]:
    number = _number(value)
    if number is None:
        return None, f"{column} not measured"
    sign = "<=" if number <= limit else ">"
    return (limit - number) / limit, f"{column} {_text(number)} {sign} {_text(limit)}"


def _lower(column: str, target: float, value: Any) -> tuple[float | None, str]:
    number = _number(value)
    if number is None:
        return None, f"{column} not measured"
    sign = ">=" if number >= target else "<"
    return (number - target) / target, f"{column} {_text(number)} {sign} {_text(target)}"


def _failure(row: Mapping[str, Any]) -> str:
    # A row read back from Parquet holds NaN, not None, where a text column is empty.
    message, kind = row.get(rec.ERROR_MESSAGE), row.get(rec.ERROR_KIND)
    lines = message.strip().splitlines() if isinstance(message, str) else []
    head = f"trial failed ({kind})" if isinstance(kind, str) and kind else "trial failed"
    return f"{head}: {lines[0]}" if lines else head


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _text(number: float) -> str:
    """A bound or value as a person reads it: `812.4`, `500`, `0.91`, `12345`."""
    return f"{number:.0f}" if abs(number) >= 1000 else f"{number:.4g}"
