"""The per-stage table of trials that ran `workload.stages`: each stage measured on its own.

Reads stages.parquet rows (`analysis.read.load.load_stages`, written by `sweep.core.stage_summary`)
and shows one line per stage: the load it asked for, the rate it sent at, and its throughput
and latencies, so a staged trial's steps can be compared side by side.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import reasoned
from analysis.report.sections import ANSWER_COLUMNS, MISSING, Section, formatted
from sweep.core import records as rec


def stage_table(stages: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row of display strings per stage, in trial and stage order."""
    labels = summary.set_index(rec.TRIAL_ID)[rec.LABEL] if rec.LABEL in summary else pd.Series()
    rows = stages.sort_values([rec.TRIAL_ID, rec.STAGE], kind="stable").reset_index(drop=True)

    def col(name: str, fmt: str, scale: float = 1.0) -> pd.Series:
        if name not in rows:
            return pd.Series(MISSING, index=rows.index)
        return formatted(rows[name], fmt, scale)

    rate = formatted(rows.get(rec.STAGE_REQUEST_RATE), "g")
    streams = formatted(rows.get(rec.STAGE_CONCURRENCY), ".0f")
    completed = col(rec.COMPLETED_REQUESTS, ".0f")
    return pd.DataFrame(
        {
            "Trial": rows[rec.TRIAL_ID].map(lambda t: str(labels.get(t, t))),
            "Stage": rows[rec.STAGE].astype(int),
            "Load asked": (rate + " req/s").where(rate != MISSING, streams + " streams"),
            "Duration (s)": col(rec.STAGE_DURATION_S, "g"),
            "Sent req/s": col(rec.SEND_RATE, ",.2f"),
            "Requests ok": (completed + "/" + col(rec.NUM_REQUESTS, ".0f")).where(
                completed != MISSING, MISSING
            ),
            "Output tok/s": col(rec.OUTPUT_THROUGHPUT, ",.1f"),
            "TTFT p50 (ms)": col(rec.latency_column("ttft", "median"), ",.1f"),
            "TTFT p99 (ms)": col(rec.latency_column("ttft", "p99"), ",.1f"),
            **(
                {name: col(column, ",.1f") for name, column in ANSWER_COLUMNS.items()}
                if reasoned(rows)
                else {}
            ),
            "ITL p50 (ms)": col(rec.latency_column("itl", "median"), ",.1f"),
            "E2E p50 (s)": col(rec.latency_column("e2e", "median"), ",.2f", scale=1e-3),
        }
    )


def stage_sections(stages: pd.DataFrame | None, summary: pd.DataFrame) -> list[Section]:
    """The per-stage table; nothing when no trial ran stages."""
    if stages is None or stages.empty:
        return []
    text = (
        "Trials with `workload.stages` ran them back to back against one server; each stage "
        "is summarised on its own requests (its own steady-state window). Sent req/s is the "
        "requests it sent over its duration."
    )
    return [Section("Stages", text, table=stage_table(stages, summary))]
