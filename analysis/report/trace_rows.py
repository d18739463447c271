"""A trace's rows in the report: which trace each trial replayed, and which of its rows it sent.

For every trial that replayed a trace (`dataset=trace`: the summary's `records.TRACE_SHA256`), one
row: the trace's name or path (`dataset.path`), the first 12 hex digits of its file's sha256, its
window (`dataset.start_s`, `dataset.duration_s`), `dataset.too_long`, and the rows sent, left out
(too long, `skip`) and cut to fit (`truncate`). Sweeps without a trace add nothing, and then the
section does not appear.
"""

from __future__ import annotations

import pandas as pd

from analysis.report.sections import MISSING, Section, formatted
from sweep.core import records as rec

PATH, START, DURATION, TOO_LONG = (
    "dataset.path", "dataset.start_s", "dataset.duration_s", "dataset.too_long",
)  # fmt: skip


def trace_sections(trials: pd.DataFrame) -> list[Section]:
    """The "Trace rows" section, when some trial replayed a trace."""
    if rec.TRACE_SHA256 not in trials:
        return []
    replayed = trials[trials[rec.TRACE_SHA256].notna()]
    if replayed.empty:
        return []

    def column(name: str) -> pd.Series:
        values = replayed[name] if name in replayed else pd.Series(None, index=replayed.index)
        return values.astype(object).where(values.notna(), MISSING).astype(str)

    shown = pd.DataFrame(
        {
            "Trial": replayed.get(rec.LABEL, replayed[rec.TRIAL_ID]),
            "Trace": column(PATH),
            "sha256": replayed[rec.TRACE_SHA256].astype(str).str[:12],
            "Start (s)": formatted(replayed.get(START), ",.1f"),
            "Duration (s)": formatted(replayed.get(DURATION), ",.1f"),
            "Too long": column(TOO_LONG),
            "Rows sent": formatted(replayed[rec.TRACE_ROWS_USED], ",.0f"),
            "Rows skipped": formatted(replayed[rec.TRACE_ROWS_SKIPPED], ",.0f"),
            "Rows truncated": formatted(replayed[rec.TRACE_ROWS_TRUNCATED], ",.0f"),
        }
    )
    text = (
        "The trace each trial replayed (its file's sha256) and its rows: sent (warm-up "
        "included), left out because they did not fit the context (`dataset.too_long=skip`), "
        "and sent with their input, then output, cut to fit (`truncate`)."
    )
    return [Section("Trace rows", text, table=shown)]
