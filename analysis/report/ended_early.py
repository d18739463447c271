"""The table of trials whose client hung up on requests: cancelled on purpose or timed out.

Reads the summary's columns of `sweep.core.summary` (`CANCELLED_REQUESTS`, `TIMED_OUT_REQUESTS`)
and of `sweep.core.cancel_release` (how long the server held what the client left), one line per
trial that had any, so a server that frees a slot at once and one that decodes to the end for
nobody can be told apart.
"""

from __future__ import annotations

import pandas as pd

from analysis.report.sections import MISSING, Section, formatted
from sweep.core import records as rec

ENDED_EARLY = (rec.CANCELLED_REQUESTS, rec.TIMED_OUT_REQUESTS)


def ended_early_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with at least one cancelled or timed-out request."""
    counts = [pd.to_numeric(trials[c], errors="coerce") for c in ENDED_EARLY if c in trials]
    if not counts:
        return trials.iloc[0:0]
    return trials[sum(count.fillna(0) for count in counts) > 0]


def ended_early_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row of display strings per trial that hung up on requests, in the trials' order."""
    rows = ended_early_trials(trials).reset_index(drop=True)

    def col(name: str, fmt: str) -> pd.Series:
        if name not in rows:
            return pd.Series(MISSING, index=rows.index)
        return formatted(rows[name], fmt)

    return pd.DataFrame(
        {
            "Trial": rows[rec.LABEL] if rec.LABEL in rows else rows[rec.TRIAL_ID],
            "Requests": col(rec.NUM_REQUESTS, ".0f"),
            "Completed": col(rec.COMPLETED_REQUESTS, ".0f"),
            "Cancelled": col(rec.CANCELLED_REQUESTS, ".0f"),
            "Timed out": col(rec.TIMED_OUT_REQUESTS, ".0f"),
            "Server held a hang-up, mean (ms)": col(rec.CANCEL_RELEASE_MS_MEAN, ",.0f"),
            "Held at most": col(rec.CANCEL_HELD_MAX, ".0f"),
            "Samples": col(rec.CANCEL_RELEASE_SAMPLES, ".0f"),
        }
    )


def ended_early_sections(trials: pd.DataFrame) -> list[Section]:
    """The table; nothing when no trial cancelled or timed out a request."""
    if ended_early_trials(trials).empty:
        return []
    text = (
        "Requests the client closed on purpose (`workload.cancel_rate`) or gave up on "
        "(`workload.timeout_s`). Cancelled ones are in no metric; timed-out ones failed. How "
        "long the server held one after the client left is estimated from its sampled running "
        "and waiting requests beside the client's in flight (Little's law): near 0 for a server "
        "that aborts at once, the rest of the answer's time for one that decodes on for nobody."
    )
    return [Section("Cancelled and timed-out requests", text, table=ended_early_table(trials))]
