"""Each deployment's start-up, once: from its trials' rows to one row per deployment.

Every trial of a deployment carries the same start-up columns (`records.SERVER_START_S`, its
phases `START_PHASES`, what the server reported `START_REPORTED`, and `START_CACHE`;
`backends.process.startup`). The report's table (`analysis.report.startup_table`) and the W&B
sweep run's `startup` table read them here: one row per deployment that started, fastest first.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import series_labels
from sweep.core import records as rec

DEPLOYMENT = "deployment"  # its label: the config that sets its server apart
START_COLUMNS = (rec.SERVER_START_S, *rec.START_PHASES, *rec.START_REPORTED, rec.START_CACHE)
# Config groups that do not change a deployment's server: the load and what it sends.
NOT_THE_SERVER = ("workload", "dataset", "slo", "search", "proxy")


def deployment_startups(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per deployment that recorded its start: its label and the start-up columns."""
    if rec.SERVER_START_S not in trials or rec.DEPLOYMENT_ID not in trials:
        return pd.DataFrame()
    started = trials[pd.to_numeric(trials[rec.SERVER_START_S], errors="coerce").notna()]
    if started.empty:
        return pd.DataFrame()
    labels = series_labels(started, exclude_groups=NOT_THE_SERVER)
    rows = started.assign(**{DEPLOYMENT: labels}).drop_duplicates(rec.DEPLOYMENT_ID)
    columns = [DEPLOYMENT, rec.DEPLOYMENT_ID, *(c for c in START_COLUMNS if c in rows)]
    rows = rows[columns].sort_values(rec.SERVER_START_S, kind="stable")
    return rows.reset_index(drop=True)
