"""The per-adapter table of trials whose requests went to LoRA adapters (`backends.lora`).

Reads adapters.parquet rows (`analysis.read.load.load_adapters`, written by
`sweep.core.adapter_summary`) and shows one line per adapter of each trial: how many requests it
was sent and their share, its output throughput, TTFT and TPOT, so a skewed assignment's popular
and rare adapters can be compared, and a sweep over the number of adapters read side by side.
"""

from __future__ import annotations

import pandas as pd

from analysis.report.sections import MISSING, Section, formatted
from sweep.core import records as rec


def adapter_table(adapters: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row of display strings per (trial, adapter), in trial order, busiest adapter first."""
    labels = summary.set_index(rec.TRIAL_ID)[rec.LABEL] if rec.LABEL in summary else pd.Series()
    rows = adapters.sort_values(
        [rec.TRIAL_ID, rec.ADAPTER_REQUESTS, rec.ADAPTER], ascending=[True, False, True]
    ).reset_index(drop=True)

    def col(name: str, fmt: str, scale: float = 1.0) -> pd.Series:
        if name not in rows:
            return pd.Series(MISSING, index=rows.index)
        return formatted(rows[name], fmt, scale)

    completed = col(rec.COMPLETED_REQUESTS, ".0f")
    return pd.DataFrame(
        {
            "Trial": rows[rec.TRIAL_ID].map(lambda t: str(labels.get(t, t))),
            "Adapter": rows[rec.ADAPTER].astype(str),
            "Requests": col(rec.ADAPTER_REQUESTS, ".0f"),
            "Share (%)": col(rec.ADAPTER_SHARE, ".1f", scale=100.0),
            "Requests ok": (completed + "/" + col(rec.NUM_REQUESTS, ".0f")).where(
                completed != MISSING, MISSING
            ),
            "Output tok/s": col(rec.OUTPUT_THROUGHPUT, ",.1f"),
            "TTFT p50 (ms)": col(rec.latency_column("ttft", "median"), ",.1f"),
            "TTFT p99 (ms)": col(rec.latency_column("ttft", "p99"), ",.1f"),
            "TPOT p50 (ms)": col(rec.latency_column("tpot", "median"), ",.2f"),
            "TPOT p99 (ms)": col(rec.latency_column("tpot", "p99"), ",.2f"),
        }
    )


def adapter_sections(adapters: pd.DataFrame | None, summary: pd.DataFrame) -> list[Section]:
    """The per-adapter table; nothing when no trial sent requests to adapters."""
    if adapters is None or adapters.empty:
        return []
    text = (
        "Trials against a server holding LoRA adapters gave each request one "
        "(`workload.lora_assignment`); each adapter is summarised on its own requests. Output "
        "tok/s is its requests' tokens over their own span, so the adapters' add up to about "
        "the trial's."
    )
    return [Section("LoRA adapters", text, table=adapter_table(adapters, summary))]
