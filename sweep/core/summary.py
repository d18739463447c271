"""Per-trial summary metrics from request records: what the worker computes for every trial.

`summarize` turns one trial's request records (and its optional resource time series) into the
summary metric columns named in `sweep.core.records`. The sweep worker calls it for every trial,
so it is pure, does no I/O and never raises on an empty or all-failed trial: throughputs are then
0 and latencies None. The server's own view (its /metrics deltas) comes from
`sweep.core.server_view`. Definitions follow `vllm bench serve` (design.md, "Metric definitions").
Requests whose `in_window` is false (outside the steady-state window, `sweep.core.trust`) are left
out of every metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sweep.core import records as rec
from sweep.core.energy import energy_columns
from sweep.core.server_view import server_columns

# Keys of the SLO mapping (`sweep.core.config.SLOConfig` fields); a None bound is ignored.
SLO_TTFT_MS = "ttft_ms"
SLO_TPOT_MS = "tpot_ms"
SLO_E2E_MS = "e2e_ms"
SLO_ANSWER_MS = "answer_ms"  # time to the first answer token (a reasoning model's)
PEAK_BUCKET_S = 1.0

Summary = dict[str, float | int | None]


def summarize(
    requests: pd.DataFrame,
    *,
    num_gpus: int,
    price_per_hour: float,
    slo: Mapping[str, float | None] | None = None,
    timeseries: pd.DataFrame | None = None,
    server_metrics: pd.DataFrame | None = None,
    server_series: Mapping[str, str] | None = None,
    server: bool = False,
) -> Summary:
    """Summary metrics of one trial.

    Args:
        requests: the trial's request records (columns of `records.REQUESTS_SCHEMA`, times in
            seconds from the trial's start).
        num_gpus: GPUs of the deployment; 0 (CPU) is priced as one instance.
        price_per_hour: price of one GPU (or instance) hour in USD.
        slo: per-request bounds for goodput and the attained fraction, keys `ttft_ms`,
            `tpot_ms`, `e2e_ms`, `answer_ms` (`SLOConfig.request_bounds()`); None values are
            ignored.
        timeseries: the trial's resource samples in long format, if any were taken.
        server_metrics: the trial's /metrics capture (`records.SERVER_METRICS_SCHEMA`), if any.
        server_series: the backend's map of roles to its Prometheus families
            (`Backend.server_series`); without one the server-side columns are None.
        server: the requests went to a server, whose usage should count each prompt (an
            in-process engine counts none: its input is unverified by nobody).

    Returns:
        One value per summary metric column of `sweep.core.records` (plain ints, floats or None).
    """
    requests, excluded = _in_window(requests)
    ok = requests[requests[rec.STATUS] == rec.STATUS_OK]
    duration = _duration_s(ok)
    input_tokens = int(np.nansum(_numeric(ok, rec.INPUT_TOKENS)))
    output_tokens = int(np.nansum(_numeric(ok, rec.OUTPUT_TOKENS)))
    output_throughput = _rate(output_tokens, duration)
    row: Summary = {
        rec.NUM_REQUESTS: len(requests),
        rec.COMPLETED_REQUESTS: len(ok),
        rec.FAILED_REQUESTS: len(requests) - len(ok) - (_flagged(requests, rec.CANCELLED) or 0),
        rec.DURATION_S: duration,
        rec.REQUEST_THROUGHPUT: _rate(len(ok), duration),
        rec.OUTPUT_THROUGHPUT: output_throughput,
        rec.TOTAL_THROUGHPUT: _rate(input_tokens + output_tokens, duration),
        rec.PEAK_OUTPUT_THROUGHPUT: _peak_output_throughput(ok),
        rec.INPUT_TOKENS_TOTAL: input_tokens,
        rec.OUTPUT_TOKENS_TOTAL: output_tokens,
        rec.COST_PER_1M_OUTPUT: cost_per_1m_output(output_throughput, num_gpus, price_per_hour),
        rec.GOODPUT: _goodput(ok, duration, slo),
        rec.SLO_ATTAINED_FRACTION: _attained_fraction(requests, ok, slo),
        rec.BATCH_LATENCY_S_MEAN: _batch_latency_mean_s(ok),
        rec.TOKEN_MISMATCH_REQUESTS: _token_mismatches(ok),
        rec.SHORT_OUTPUT_REQUESTS: _short_outputs(ok),
        rec.ONE_READ_REQUESTS: _one_read(ok),
        rec.OUTPUT_LENGTH_OFF_PERCENT: _length_off_percent(ok),
        **_input_checks(ok, server),
        rec.ESTIMATED_OUTPUT_REQUESTS: _estimated_outputs(ok),
        rec.OUT_OF_WINDOW_REQUESTS: excluded,
        rec.REASONING_TOKENS_TOTAL: _total(ok, rec.REASONING_TOKENS),
        rec.ANSWER_TOKENS_TOTAL: _total(ok, rec.ANSWER_TOKENS),
    }
    row.update(_client_lag(requests))
    row.update(_ended_early(requests))
    row.update(_structured(ok))
    for metric, samples_s in _latency_samples_s(ok).items():
        for stat in rec.LATENCY_STATS:
            row[rec.latency_column(metric, stat)] = _statistic(samples_s * 1e3, stat)
    row.update(_resources(timeseries))
    row.update(energy_columns(timeseries, _span(ok), output_tokens, len(ok)))
    row.update(server_columns(server_metrics, server_series or {}))
    row.update(_sessions(requests))
    row[rec.CACHE_HIT_PERCENT] = _cache_hit_percent(requests)
    row[rec.CACHED_INPUT_PERCENT] = _cached_input_percent(ok)
    return row


def _cache_hit_percent(requests: pd.DataFrame) -> float | None:
    """Share of the requests a semantic-cache proxy answered from its cache (None: no proxy)."""
    if rec.CACHE_HIT not in requests:
        return None
    marked = requests[rec.CACHE_HIT].dropna()
    return 100.0 * float(marked.astype(bool).mean()) if len(marked) else None


def _sessions(requests: pd.DataFrame) -> Summary:
    """Sessions and truncated histories of a multi-turn trial; nothing for other trials."""
    if rec.SESSION not in requests or requests[rec.SESSION].isna().all():
        return {}
    dropped = _numeric(requests, rec.DROPPED_TURNS)
    row: Summary = {
        rec.SESSIONS: int(requests[rec.SESSION].nunique()),
        rec.TRUNCATED_REQUESTS: int(np.sum(dropped > 0)),
        rec.SESSION_S_P50: _session_s_p50(requests),
    }
    if rec.TOOL_RESULT in requests and requests[rec.TOOL_RESULT].notna().any():
        ok = requests[requests[rec.STATUS] == rec.STATUS_OK]
        calls = _numeric(ok, rec.TOOL_CALLS)
        checked = ok[rec.TOOL_ARGS_VALID].dropna()
        waits = _numeric(ok, rec.TOOL_CALL_S)
        waits = waits[~np.isnan(waits)]
        valid = float(checked.astype(bool).mean()) if len(checked) else None
        row.update({
            rec.TOOL_CALLS_TOTAL: int(np.nansum(calls)),
            rec.TOOL_ARGS_VALID_FRACTION: valid,
            rec.TOOL_CALL_MS_P50: float(np.median(waits)) * 1e3 if len(waits) else None,
        })  # fmt: skip
    return row


def _session_s_p50(requests: pd.DataFrame) -> float | None:
    """The median time of the sessions whose every turn completed: first sent to last token."""
    whole = requests.groupby(rec.SESSION).filter(lambda s: (s[rec.STATUS] == rec.STATUS_OK).all())
    if whole.empty:
        return None
    spans = whole.groupby(rec.SESSION).agg(first=(rec.SENT_S, "min"), last=(rec.END_S, "max"))
    return float((spans["last"] - spans["first"]).median())


def _cached_input_percent(ok: pd.DataFrame) -> float | None:
    """The share of the input tokens the server's prefix cache held, where it says (percent)."""
    if rec.CACHED_INPUT_TOKENS not in ok:
        return None
    known = ok[ok[rec.CACHED_INPUT_TOKENS].notna()]
    inputs = _numeric(known, rec.SERVER_INPUT_TOKENS)
    if not len(known) or np.nansum(inputs) <= 0:
        return None
    return 100.0 * float(np.nansum(_numeric(known, rec.CACHED_INPUT_TOKENS)) / np.nansum(inputs))


def _ended_early(requests: pd.DataFrame) -> Summary:
    """Requests the client timed out on (failed ones) and cancelled (neither ok nor failed).

    A cancelled request counts in no metric: not in the throughputs, not in the latencies (its
    TTFT, where its first token came, is in its record only), not in the SLO's fractions.
    """
    return {
        rec.TIMED_OUT_REQUESTS: _flagged(requests, rec.TIMED_OUT),
        rec.CANCELLED_REQUESTS: _flagged(requests, rec.CANCELLED),
    }


def _structured(ok: pd.DataFrame) -> Summary:
    """Completed answers checked against the trial's constraint, and the share that kept to it.

    Both null for a trial without one (`sweep.core.structured`).
    """
    if rec.STRUCTURED_VALID not in ok or ok[rec.STRUCTURED_VALID].isna().all():
        return {rec.STRUCTURED_CHECKED: None, rec.STRUCTURED_VALID_FRACTION: None}
    checked = ok[rec.STRUCTURED_VALID].dropna()
    return {
        rec.STRUCTURED_CHECKED: len(checked),
        rec.STRUCTURED_VALID_FRACTION: float(checked.astype(bool).mean()),
    }


def _flagged(requests: pd.DataFrame, column: str) -> int | None:
    """Requests whose boolean `column` is true; None where the records predate it."""
    if column not in requests:
        return None
    return int(requests[column].eq(True).sum())


def cost_per_1m_output(output_tok_s: float, num_gpus: int, price_per_hour: float) -> float | None:
    """USD per million output tokens at the given throughput; None when nothing was produced."""
    if output_tok_s <= 0:
        return None
    return max(num_gpus, 1) * price_per_hour / 3600.0 / output_tok_s * 1e6


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float array with NaN for nulls, whatever nullable dtype it arrived in.

    All NaN where the records have no such column (written before it existed).
    """
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _total(ok: pd.DataFrame, column: str) -> int | None:
    """The sum of a token column over the completed requests; None where none recorded it."""
    values = _numeric(ok, column)
    return int(np.nansum(values)) if np.isfinite(values).any() or ok.empty else None


def _gaps(itl: object) -> np.ndarray:
    # A Parquet list cell arrives as an ndarray, a hand-built one as a list, a null as None/NaN.
    if itl is None or (isinstance(itl, float) and math.isnan(itl)):
        return np.empty(0)
    return np.asarray(itl, dtype=float)


def _rate(count: float, duration_s: float) -> float:
    return count / duration_s if duration_s > 0 else 0.0


def _duration_s(ok: pd.DataFrame) -> float:
    span = _span(ok)
    return 0.0 if span is None else span[1] - span[0]


def _span(ok: pd.DataFrame) -> tuple[float, float] | None:
    """First send to last end of the measured requests; None when that spans no time."""
    if ok.empty:
        return None
    start, end = np.nanmin(_numeric(ok, rec.SENT_S)), np.nanmax(_numeric(ok, rec.END_S))
    span = end - start
    return (float(start), float(end)) if np.isfinite(span) and span > 0 else None


def _peak_output_throughput(ok: pd.DataFrame) -> float:
    """Tokens in the busiest 1-second bucket of token arrival times, per second."""
    if ok.empty:
        return 0.0
    start = np.nanmin(_numeric(ok, rec.SENT_S))
    times, weights = [], []
    for first, itl, n_out in zip(
        _numeric(ok, rec.FIRST_TOKEN_S), ok[rec.ITL_S], _numeric(ok, rec.OUTPUT_TOKENS), strict=True
    ):
        if np.isnan(first):
            continue
        gaps = _gaps(itl)
        times.append(first + np.concatenate(([0.0], np.cumsum(gaps))))
        # Every gap ends at one token; the rest of the output arrived with the first chunk.
        first_chunk = n_out - gaps.size if np.isfinite(n_out) and n_out > gaps.size else 1
        weights.append(np.concatenate(([first_chunk], np.ones(gaps.size))))
    if not times:
        return 0.0
    buckets = np.floor((np.concatenate(times) - start) / PEAK_BUCKET_S).astype(np.int64)
    counts = np.bincount(buckets - buckets.min(), weights=np.concatenate(weights))
    return float(counts.max() / PEAK_BUCKET_S)


def measured(requests: pd.DataFrame) -> pd.DataFrame:
    """The requests every metric of `summarize` is measured on: completed, inside the window."""
    inside, _ = _in_window(requests)
    return inside[inside[rec.STATUS] == rec.STATUS_OK]


def windowed(requests: pd.DataFrame) -> pd.DataFrame:
    """The requests `summarize` counts (`num_requests`): inside the window, failed ones too."""
    inside, _ = _in_window(requests)
    return inside


def latency_samples_ms(requests: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-request TTFT, TPOT and E2E and every ITL gap, in ms, of the `measured` requests."""
    return {k: v * 1e3 for k, v in _latency_samples_s(measured(requests)).items()}


def statistic(values: np.ndarray, stat: str) -> float | None:
    """A latency statistic (`mean`, `median`, `pNN`) exactly as the summary computes it."""
    return _statistic(np.asarray(values, dtype=float), stat)


def _tpot_s(ok: pd.DataFrame) -> np.ndarray:
    """Per-request TPOT, NaN where a request has fewer than two output tokens."""
    n_out = _numeric(ok, rec.OUTPUT_TOKENS)
    decode_s = _numeric(ok, rec.E2E_S) - _numeric(ok, rec.TTFT_S)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_out > 1, decode_s / (n_out - 1), np.nan)


def _latency_samples_s(ok: pd.DataFrame) -> dict[str, np.ndarray]:
    itl = [_gaps(cell) for cell in ok[rec.ITL_S]]
    samples = (
        _numeric(ok, rec.TTFT_S),
        _tpot_s(ok),
        np.concatenate(itl) if itl else np.empty(0),
        _numeric(ok, rec.E2E_S),
        _numeric(ok, rec.ANSWER_S),
    )
    # In the order records.LATENCY_METRICS lists them: ttft, tpot, itl, e2e, answer.
    return dict(zip(rec.LATENCY_METRICS, samples, strict=True))


def _statistic(values: np.ndarray, stat: str) -> float | None:
    """`mean`, `median` or a percentile written `pNN`, as records.LATENCY_STATS names them."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    if stat == "mean":
        return float(values.mean())
    q = 50.0 if stat == "median" else float(stat.removeprefix("p"))
    return float(np.percentile(values, q))  # numpy's default linear interpolation


def meets_slo(ok: pd.DataFrame, slo: Mapping[str, float | None]) -> np.ndarray:
    """Which of the successful requests `ok` meet every bound of `slo` (None bounds ignored).

    A request whose answer never began (the output cap ended its thinking) misses an
    `answer_ms` bound.

    Raises:
        ValueError: `slo` has a key other than `ttft_ms`, `tpot_ms`, `e2e_ms` and `answer_ms`.
    """
    bounds = {key: bound for key, bound in slo.items() if bound is not None}
    per_request_ms = {
        SLO_TTFT_MS: _numeric(ok, rec.TTFT_S) * 1e3,
        # As vLLM does, a single-token request has no TPOT and so cannot break its bound.
        SLO_TPOT_MS: np.nan_to_num(_tpot_s(ok), nan=0.0) * 1e3,
        SLO_E2E_MS: _numeric(ok, rec.E2E_S) * 1e3,
        SLO_ANSWER_MS: _numeric(ok, rec.ANSWER_S) * 1e3,
    }
    unknown = set(bounds) - set(per_request_ms)
    if unknown:
        raise ValueError(f"unknown SLO keys {sorted(unknown)}; use {sorted(per_request_ms)}")
    good = np.ones(len(ok), dtype=bool)
    for key, bound in bounds.items():
        good &= per_request_ms[key] <= bound  # NaN (missing timestamp) fails the bound
    return good


def _goodput(
    ok: pd.DataFrame, duration_s: float, slo: Mapping[str, float | None] | None
) -> float | None:
    if all(bound is None for bound in (slo or {}).values()):
        return None
    return _rate(int(meets_slo(ok, slo).sum()), duration_s)


def _attained_fraction(
    requests: pd.DataFrame, ok: pd.DataFrame, slo: Mapping[str, float | None] | None
) -> float | None:
    """Share of the requests meeting every per-request bound; a failed request misses.

    A cancelled request neither meets nor misses: the client ended it.
    """
    judged = len(requests) - (_flagged(requests, rec.CANCELLED) or 0)
    if all(bound is None for bound in (slo or {}).values()) or not judged:
        return None
    return int(meets_slo(ok, slo).sum()) / judged


def _batch_latency_mean_s(ok: pd.DataFrame) -> float | None:
    if ok.empty or ok[rec.BATCH_IDX].isna().all():
        return None
    batches = ok.groupby(rec.BATCH_IDX)
    spans = (batches[rec.END_S].max() - batches[rec.SENT_S].min()).dropna()
    return float(spans.mean()) if not spans.empty else None


def _token_mismatches(ok: pd.DataFrame) -> int:
    server = _numeric(ok, rec.SERVER_OUTPUT_TOKENS)
    return int((~np.isnan(server) & (server != _numeric(ok, rec.OUTPUT_TOKENS))).sum())


def _input_checks(ok: pd.DataFrame, server: bool) -> Summary:
    """How the server's prompt counts compare with the client's, over text-only requests.

    A prompt the server counts otherwise was not the workload asked for (another tokenizer,
    a template the client did not count): such requests, and by how much on average.
    """
    text_only = _numeric(ok, rec.IMAGES)
    text_only = np.isnan(text_only) | (text_only == 0)
    client, counted = _numeric(ok, rec.INPUT_TOKENS), _numeric(ok, rec.SERVER_INPUT_TOKENS)
    differ = text_only & ~np.isnan(counted) & ~np.isnan(client) & (counted != client)
    unverified = int((text_only & np.isnan(counted)).sum())
    return {
        rec.INPUT_MISMATCH_REQUESTS: int(differ.sum()),
        rec.INPUT_MISMATCH_TOKENS_MEAN: (
            float(np.mean(counted[differ] - client[differ])) if differ.any() else None
        ),
        rec.INPUT_UNVERIFIED_REQUESTS: unverified if server else None,
    }


def _short_outputs(ok: pd.DataFrame) -> int:
    """Completed requests counted below their request; an estimated count says nothing of it.

    A structured answer or a tool call ends where its constraint or its arguments do: its length
    was never asked to be the requested one, so it is not counted short.
    """
    requested = _numeric(ok, rec.REQUESTED_OUTPUT_TOKENS)
    short = _numeric(ok, rec.OUTPUT_TOKENS) < requested  # NaN compares False
    return int((short & ~_estimated(ok) & ~_ended_by_form(ok)).sum())


def _ended_by_form(ok: pd.DataFrame) -> np.ndarray:
    """Requests whose length their structured answer's constraint or their tool call set."""
    form = np.zeros(len(ok), dtype=bool)
    if rec.STRUCTURED_VALID in ok:
        form |= ok[rec.STRUCTURED_VALID].notna().to_numpy()
    if rec.TOOL_CALLS in ok:
        form |= _numeric(ok, rec.TOOL_CALLS) > 0
    return form


def _one_read(ok: pd.DataFrame) -> int:
    """Completed requests whose token-bearing chunks (two or more) all arrived at one instant.

    The client stamps each network read once, so gaps of exactly 0 between every chunk mean one
    read carried the whole stream: the first token was seen only when the last one was.
    """
    if rec.ITL_S not in ok:
        return 0
    return sum(1 for gaps in ok[rec.ITL_S] if _all_zero(gaps))


def _all_zero(gaps: object) -> bool:
    """Whether a request's ITL list holds at least one gap and every gap is 0."""
    if gaps is None or isinstance(gaps, float):  # null: no gaps recorded
        return False
    values = np.asarray(gaps, dtype=float)
    return bool(values.size) and not np.any(values)


def _length_off_percent(ok: pd.DataFrame) -> float | None:
    """Mean output length against the mean asked for, in percent (None: no length asked).

    Over the completed requests with a requested length; an output count that is an estimate
    is still the best count there is, so it is kept.
    """
    requested, output = _numeric(ok, rec.REQUESTED_OUTPUT_TOKENS), _numeric(ok, rec.OUTPUT_TOKENS)
    asked = ~np.isnan(requested) & ~np.isnan(output) & (requested > 0)
    if not asked.any():
        return None
    return 100.0 * (float(output[asked].mean()) / float(requested[asked].mean()) - 1.0)


def _estimated_outputs(ok: pd.DataFrame) -> int | None:
    """Completed requests whose output count is an estimate; None where records predate the flag."""
    return int(_estimated(ok).sum()) if rec.OUTPUT_TOKENS_ESTIMATED in ok else None


def _estimated(ok: pd.DataFrame) -> np.ndarray:
    """Per request: whether its output count is an estimate (null or absent: no)."""
    if rec.OUTPUT_TOKENS_ESTIMATED not in ok:
        return np.zeros(len(ok), dtype=bool)
    return ok[rec.OUTPUT_TOKENS_ESTIMATED].eq(True).to_numpy(dtype=bool)


def _client_lag(requests: pd.DataFrame) -> Summary:
    lag_ms = (_numeric(requests, rec.SENT_S) - _numeric(requests, rec.SCHEDULED_S)) * 1e3
    lag_ms = lag_ms[~np.isnan(lag_ms)]
    return {
        rec.CLIENT_LAG_MS_MEAN: float(lag_ms.mean()) if lag_ms.size else None,
        rec.CLIENT_LAG_MS_MAX: float(lag_ms.max()) if lag_ms.size else None,
        rec.SEND_LAG_MS_P50: _statistic(lag_ms, "median"),
        rec.SEND_LAG_MS_P99: _statistic(lag_ms, "p99"),
    }


def _in_window(requests: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The requests inside the steady-state window, and how many were left out.

    Records written before the window existed have no `in_window` column: all of them count.
    """
    if rec.IN_WINDOW not in requests:
        return requests, 0
    outside = requests[rec.IN_WINDOW].eq(False).fillna(False).astype(bool).to_numpy()
    return requests[~outside], int(outside.sum())


def _resources(timeseries: pd.DataFrame | None) -> Summary:
    def samples(metric: str) -> np.ndarray:
        if timeseries is None or timeseries.empty:
            return np.empty(0)
        values = _numeric(timeseries[timeseries[rec.METRIC] == metric], rec.VALUE)
        return values[~np.isnan(values)]

    rss, gpu, kv = (
        samples(m) for m in (rec.PROCESS_RSS_MB, rec.GPU_MEMORY_USED_MB, rec.KV_CACHE_USAGE_PERCENT)
    )
    return {
        rec.PEAK_RSS_MB: float(rss.max()) if rss.size else None,
        # Largest single sample: with several GPUs, the fullest one.
        rec.PEAK_GPU_MEMORY_MB: float(gpu.max()) if gpu.size else None,
        rec.MEAN_KV_CACHE_USAGE: float(kv.mean()) if kv.size else None,
        rec.PEAK_KV_CACHE_USAGE: float(kv.max()) if kv.size else None,
    }
