"""The report's "Trace rows" section: one row per trial that replayed a trace, none otherwise."""

from __future__ import annotations

import pandas as pd

from analysis.report.sections import MISSING
from analysis.report.trace_rows import trace_sections
from sweep.core import records as rec


def test_trace_rows_show_the_hash_window_and_counts():
    trials = pd.DataFrame(
        {
            rec.TRIAL_ID: ["a", "b"],
            rec.LABEL: ["sim-mooncake_conversation", "sim-random"],
            "dataset.path": ["mooncake_conversation", None],
            "dataset.start_s": [0.0, None],
            "dataset.duration_s": [None, None],
            "dataset.too_long": ["skip", None],
            rec.TRACE_SHA256: ["b8cbb061a85206d729d91cdc", None],
            rec.TRACE_ROWS_USED: [279, None],
            rec.TRACE_ROWS_SKIPPED: [721, None],
            rec.TRACE_ROWS_TRUNCATED: [0, None],
        }
    )
    (section,) = trace_sections(trials)
    assert section.title == "Trace rows"
    assert section.table.to_dict("records") == [
        {
            "Trial": "sim-mooncake_conversation", "Trace": "mooncake_conversation",
            "sha256": "b8cbb061a852", "Start (s)": "0.0", "Duration (s)": MISSING,
            "Too long": "skip", "Rows sent": "279", "Rows skipped": "721", "Rows truncated": "0",
        }
    ]  # fmt: skip


def test_no_trace_no_section():
    trials = pd.DataFrame({rec.TRIAL_ID: ["a"], rec.LABEL: ["x"]})
    assert trace_sections(trials) == []
    trials[rec.TRACE_SHA256] = None
    assert trace_sections(trials) == []
