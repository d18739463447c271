"""The server's own view in the report: where a first token's time went, and the server's counters.

Built from the summary's server-side columns (`sweep.core.server_view`, from each trial's
/metrics deltas), one row per configuration (series and load, repeats averaged). Each section
appears only when some trial's server exported what it shows, and each column only when some
row has a value: a TGI server has a queue histogram but no first-token one, the sim no prefix
cache, a vLLM server without a drafter no acceptance.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import load_values, series_labels
from analysis.report.sections import MISSING, Section, formatted
from sweep.core import records as rec

CONFIGURATION, LOAD = "Configuration", "Load"
CLIENT_TTFT = rec.latency_column("ttft", "mean")
CLIENT_TPOT = rec.latency_column("tpot", "mean")
SERVER_TTFT = rec.latency_column(rec.SERVER_TTFT, "mean")
GAP = "network_and_client_ms"
# Where the time went: display name and summary column (means in ms; GAP is derived).
TIME_COLUMNS = {
    "Client TTFT (ms)": CLIENT_TTFT,
    "Server TTFT (ms)": SERVER_TTFT,
    "Network and client (ms)": GAP,
    "Server queue (ms)": rec.latency_column(rec.SERVER_QUEUE, "mean"),
    "Server prefill (ms)": rec.latency_column(rec.SERVER_PREFILL, "mean"),
    "Client TPOT (ms)": CLIENT_TPOT,
    "Server TPOT (ms)": rec.latency_column(rec.SERVER_TPOT, "mean"),
    "Server ITL (ms)": rec.latency_column(rec.SERVER_ITL, "mean"),
}
# The server-side columns whose presence makes a row of the time table.
SERVER_TIMES = [rec.latency_column(role, "mean") for role in rec.SERVER_LATENCIES]
# The counters table: display name, summary column, number format.
PREFIX_CACHE_HITS = "Prefix-cache hits (%)"
COUNTER_COLUMNS = {
    PREFIX_CACHE_HITS: (rec.SERVER_PREFIX_CACHE_HIT_PERCENT, ",.1f"),
    "Preemptions": (rec.SERVER_PREEMPTIONS, ",.0f"),
    "Draft acceptance (%)": (rec.SPEC_ACCEPTANCE_PERCENT, ",.1f"),
    "Drafted tokens": (rec.SERVER_SPEC_DRAFT_TOKENS, ",.0f"),
}
# Beside the prefix-cache hits: what the trial's prompts offered a cache (from the prompts alone).
PROMPT_COLUMNS = {
    "Reusable prefix, ideal (%)": (rec.PROMPT_REUSABLE_PREFIX_PERCENT, ",.1f"),
    "Repeated prompts (%)": (rec.PROMPT_REPEAT_PERCENT, ",.1f"),
}


def server_sections(trials: pd.DataFrame) -> list[Section]:
    """The sections "Where the time went" and "Server counters", each only where it has data."""
    configurations = _per_configuration(trials)
    if configurations.empty:
        return []
    return [*_where_the_time_went(configurations), *_counters(configurations)]


def _per_configuration(trials: pd.DataFrame) -> pd.DataFrame:
    """Successful trials averaged per series and load (server-side columns that exist only)."""
    columns = [
        c
        for c in (*SERVER_TIMES, *TIME_COLUMNS.values(), *(c for c, _ in COUNTER_COLUMNS.values()))
        if c in trials
    ]
    columns += [c for c in (rec.COMPLETED_REQUESTS, rec.SERVER_REQUESTS) if c in trials]
    columns += [c for c, _ in PROMPT_COLUMNS.values() if c in trials]
    if not any(c in trials for c in (*SERVER_TIMES, *(c for c, _ in COUNTER_COLUMNS.values()))):
        return pd.DataFrame()
    frame = trials[list(dict.fromkeys(columns))].apply(pd.to_numeric, errors="coerce")
    frame[CONFIGURATION], frame[LOAD] = series_labels(trials), load_values(trials)
    ok = frame[trials[rec.TRIAL_STATUS] == rec.STATUS_OK]
    return ok.groupby([CONFIGURATION, LOAD], sort=False, dropna=False).mean().reset_index()


def _where_the_time_went(per: pd.DataFrame) -> list[Section]:
    times = [c for c in SERVER_TIMES if c in per]
    rows = per[per[times].notna().any(axis=1)] if times else per.iloc[:0]
    if rows.empty:
        return []
    rows = rows.reset_index(drop=True)
    if CLIENT_TTFT in rows and SERVER_TTFT in rows:
        rows[GAP] = rows[CLIENT_TTFT] - rows[SERVER_TTFT]
    table = _key_columns(rows)
    requests = [rows.get(c) for c in (rec.COMPLETED_REQUESTS, rec.SERVER_REQUESTS)]
    if all(r is not None for r in requests):
        counts = [formatted(r, ",.0f") for r in requests]
        table["Requests (client / server)"] = counts[0] + " / " + counts[1]
    for name, column in TIME_COLUMNS.items():
        if column in rows and rows[column].notna().any():
            table[name] = formatted(rows[column], ",.2f")
    text = (
        "Means per request in ms, repeats averaged: means add up where medians do not. The "
        "server's first-token time is its queue, its prefill and its own front end (tokenizing, "
        "scheduling); the client's exceeds it by the network and the client itself. The server "
        "counts every request of a trial, warm-up and out-of-window ones included, the client "
        "only the measured ones (Requests). Server medians and p99 (interpolated in its "
        "histogram buckets) are in summary.csv."
    )
    return [Section("Where the time went", text, table=table)]


def _counters(per: pd.DataFrame) -> list[Section]:
    shown = {
        name: (column, fmt)
        for name, (column, fmt) in COUNTER_COLUMNS.items()
        if column in per and per[column].notna().any()
    }
    if not shown:
        return []
    rows = per[per[[c for c, _ in shown.values()]].notna().any(axis=1)].reset_index(drop=True)
    if PREFIX_CACHE_HITS in shown:  # what the prompts offered, beside what the server hit
        offered = {
            name: (column, fmt)
            for name, (column, fmt) in PROMPT_COLUMNS.items()
            if column in per and per[column].notna().any()
        }
        shown = {PREFIX_CACHE_HITS: shown.pop(PREFIX_CACHE_HITS), **offered, **shown}
    table = _key_columns(rows)
    for name, (column, fmt) in shown.items():
        table[name] = formatted(rows[column], fmt)
    text = (
        "Counted by the server over each trial (the deltas of its counters, repeats averaged): "
        "prefix-cache hits as a share of the prompt tokens it looked up, requests it preempted, "
        "and the share of speculative draft tokens it accepted. Beside the hits, what the "
        "prompts offered: the share of their tokens a perfect prefix cache could reuse (each "
        "prompt's longest prefix shared with an earlier one) and the share of prompts repeating "
        "an earlier one; a real cache reuses whole blocks only."
    )
    return [Section("Server counters", text, table=table)]


def _key_columns(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            CONFIGURATION: rows[CONFIGURATION],
            LOAD: rows[LOAD].map(lambda v: MISSING if pd.isna(v) else f"{v:g}"),
        }
    )
