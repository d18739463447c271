"""The proxy in the report: a semantic cache's hit rate and the latency of its hits and misses.

For every trial that ran behind a proxy (`proxy.name` other than `none`; study D), one row: how
many of its completed in-window requests the cache answered (`records.CACHE_HIT`, from the
proxy's `X-Cache` header), the median TTFT and end-to-end latency of the hits and of the misses
(computed as the summary computes its statistics), and beside them the trial of the same
configuration without a proxy (every config column equal but `proxy.*`; the same repeat when
there is one), when the sweep ran it. A clipping proxy has no hits, only its comparison. Sweeps
without a proxy add nothing, and then the section does not appear.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.report.sections import MISSING, Section, formatted
from sweep.core import records as rec
from sweep.core.summary import statistic

PROXY_NAME = "proxy.name"
NO_PROXY = "none"
TTFT_MEDIAN, E2E_MEDIAN = rec.latency_column("ttft", "median"), rec.latency_column("e2e", "median")
# Config columns that do not make two trials different configurations.
_NOT_CONFIG = ("proxy.", rec.ENV_PREFIX, rec.SLO_PREFIX)


def cache_table(requests: pd.DataFrame | None, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial behind a proxy: hit rate, hits' and misses' medians, the cache-less."""
    if PROXY_NAME not in trials:
        return pd.DataFrame()
    proxied = trials[trials[PROXY_NAME].fillna(NO_PROXY) != NO_PROXY]
    if proxied.empty:
        return pd.DataFrame()
    plain = trials[trials[PROXY_NAME].fillna(NO_PROXY) == NO_PROXY]
    config = [c for c in trials if "." in c and not c.startswith(_NOT_CONFIG)]
    rows = []
    for _, trial in proxied.iterrows():
        ok = _ok_requests(requests, trial[rec.TRIAL_ID])
        marked = ok[ok[rec.CACHE_HIT].notna()] if rec.CACHE_HIT in ok else ok.iloc[:0]
        hit = marked[rec.CACHE_HIT].astype(bool) if len(marked) else pd.Series(dtype=bool)
        base = _without_proxy(trial, plain, config)
        rows.append(
            {
                "trial": trial.get(rec.LABEL, trial[rec.TRIAL_ID]),
                "proxy": trial[PROXY_NAME],
                "requests": len(ok),
                "hit_percent": 100.0 * hit.mean() if len(hit) else None,
                "ttft_ms_hit": _median_ms(marked[hit], rec.TTFT_S),
                "ttft_ms_miss": _median_ms(marked[~hit], rec.TTFT_S),
                "e2e_ms_hit": _median_ms(marked[hit], rec.E2E_S),
                "e2e_ms_miss": _median_ms(marked[~hit], rec.E2E_S),
                "base": None if base is None else base.get(rec.LABEL, base[rec.TRIAL_ID]),
                "base_ttft_ms": None if base is None else base.get(TTFT_MEDIAN),
                "base_e2e_ms": None if base is None else base.get(E2E_MEDIAN),
            }
        )
    return pd.DataFrame(rows)


def _ok_requests(requests: pd.DataFrame | None, trial_id: str) -> pd.DataFrame:
    if requests is None or requests.empty:
        return pd.DataFrame(columns=[rec.TTFT_S, rec.E2E_S])
    mine = requests[(requests[rec.TRIAL_ID] == trial_id) & (requests[rec.STATUS] == rec.STATUS_OK)]
    return mine[mine[rec.IN_WINDOW].fillna(True).astype(bool)]


def _median_ms(rows: pd.DataFrame, column: str) -> float | None:
    if rows.empty:
        return None
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
    return statistic(values * 1e3, "median")


def _without_proxy(trial: pd.Series, plain: pd.DataFrame, config: list[str]) -> pd.Series | None:
    """The cache-less trial of the same configuration (the same repeat if there is one)."""
    if plain.empty:
        return None
    same = np.ones(len(plain), dtype=bool)
    for column in config:
        same &= plain[column].map(_text).to_numpy() == _text(trial[column])
    matches = plain[same & (plain[rec.TRIAL_STATUS] == rec.STATUS_OK).to_numpy()]
    if matches.empty:
        return None
    if rec.REPEAT in matches and (matches[rec.REPEAT] == trial.get(rec.REPEAT)).any():
        matches = matches[matches[rec.REPEAT] == trial.get(rec.REPEAT)]
    return matches.iloc[0]


def _text(value: object) -> str:
    """A config value to compare: nulls (None or NaN, as columns hold them) all alike."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def cache_sections(requests: pd.DataFrame | None, trials: pd.DataFrame) -> list[Section]:
    """The "Proxy and semantic cache" section, when some trial ran behind a proxy."""
    table = cache_table(requests, trials)
    if table.empty:
        return []
    shown = pd.DataFrame(
        {
            "Trial": table["trial"],
            "Proxy": table["proxy"],
            "Requests ok": table["requests"].astype(str),
            "Hit rate (%)": formatted(table["hit_percent"], ",.1f"),
            "TTFT p50 hits (ms)": formatted(table["ttft_ms_hit"], ",.1f"),
            "TTFT p50 misses (ms)": formatted(table["ttft_ms_miss"], ",.1f"),
            "E2E p50 hits (s)": formatted(table["e2e_ms_hit"], ",.3f", scale=1e-3),
            "E2E p50 misses (s)": formatted(table["e2e_ms_miss"], ",.3f", scale=1e-3),
            "Without proxy": table["base"].fillna(MISSING),
            "TTFT p50 without (ms)": formatted(table["base_ttft_ms"], ",.1f"),
            "E2E p50 without (s)": formatted(table["base_e2e_ms"], ",.3f", scale=1e-3),
        }
    )
    text = (
        "Requests answered from the proxy's semantic cache (hits) and forwarded to the server "
        "(misses): medians over the completed requests, beside the same configuration run "
        "without a proxy when the sweep has it."
    )
    return [Section("Proxy and semantic cache", text, table=shown)]
