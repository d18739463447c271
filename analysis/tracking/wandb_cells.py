"""Values in the shapes wandb takes: plain Python scalars and table cells, secrets scrubbed.

`plain` turns a numpy or pandas value into plain Python (NaN and NA as None); `table_frame`
turns a frame into cells a `wandb.Table` accepts and `wandb_table` into the table;
`trial_metrics` picks from a trial's summary row what the tracker logs as metrics;
`history_steps` and `request_sample` shape a trial's time series and requests for its run.
Used by `analysis.tracking.tracking` and its grouped runs.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.read.columns import LOAD_COLUMNS, load_values
from analysis.stats.roofline import roofline
from sweep.core import records as rec
from sweep.core.secrets import scrub, secret_values

IDENTITY = (rec.TRIAL_ID, rec.DEPLOYMENT_ID, rec.SWEEP_NAME, rec.REPEAT, rec.LABEL)
# Logged as the run's config beside the flattened config: what the backend says of itself.
CONFIG_COLUMNS = (*IDENTITY, *rec.BACKEND_FACTS)
# The offered load of a trial (`analysis.read.columns.load_values`: the streams it keeps in flight),
# logged beside its metrics so that W&B can plot any metric against it.
LOAD = "load"
REQUEST_SAMPLE_ROWS = 200


def is_config(key: str) -> bool:
    """Whether a summary column is config (identity or a flattened config value), not a metric."""
    return key in CONFIG_COLUMNS or rec.CONFIG_SEPARATOR in key


def trial_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's metrics: its non-config values that are set, MBU and MFU, and its `LOAD`.

    MBU and MFU are the row's own where it has them (computed for a whole summary), else derived
    from the row (`analysis.stats.roofline`).
    """
    metrics = {k: v for k, v in row.items() if not is_config(k) and v is not None}
    if rec.MBU not in row:  # not computed for the whole sweep at once (`upload_results` does)
        derived = roofline(pd.DataFrame([row])).iloc[0]
        metrics.update({k: float(derived[k]) for k in (rec.MBU, rec.MFU) if pd.notna(derived[k])})
    # A frame of only the columns it reads: one of the whole row (some 190) costs 3 ms a trial.
    load = load_values(pd.DataFrame([{k: row[k] for k in LOAD_COLUMNS if k in row}])).iloc[0]
    if pd.notna(load):
        metrics[LOAD] = float(load)
    return metrics


def is_number(value: Any) -> bool:
    """A value W&B can plot: a real number, not a flag."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells a wandb.Table takes: scalars or None, lists as JSON text, secrets scrubbed."""
    secrets = secret_values()
    return frame.astype(object).map(lambda value: scrub(_cell(plain(value)), secrets))


def wandb_table(wandb: Any, frame: pd.DataFrame) -> Any:
    """A `wandb.Table` of the frame's cells (`table_frame`).

    Built from row lists, not `dataframe=`, which indexes the frame once per cell: a third of
    the time of a 2,000-row summary table.
    """
    cells = table_frame(frame)
    return wandb.Table(columns=[str(c) for c in cells.columns], data=cells.to_numpy().tolist())


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def plain(value: Any) -> Any:
    """A value from numpy or pandas as plain Python; NaN and NA as None."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (not isinstance(value, str | dict) and pd.isna(value)):
        return None
    return value


def history_steps(timeseries: pd.DataFrame) -> list[dict[str, float]]:
    """One history step per sample time: `t_s` and `source/metric` keys with their values."""
    if timeseries.empty:
        return []
    keyed = timeseries.assign(_key=timeseries[rec.SOURCE] + "/" + timeseries[rec.METRIC])
    wide = keyed.pivot_table(index=rec.T_S, columns="_key", values=rec.VALUE, aggfunc="mean")
    return [
        {rec.T_S: float(t), **{k: float(v) for k, v in row.items() if pd.notna(v)}}
        for t, row in wide.sort_index().iterrows()
    ]


def request_sample(requests: pd.DataFrame, rows: int = REQUEST_SAMPLE_ROWS) -> pd.DataFrame:
    """At most `rows` request records (a fixed random sample), in request order."""
    sample = requests.sample(rows, random_state=0) if len(requests) > rows else requests
    return sample.sort_values(rec.REQUEST_IDX) if rec.REQUEST_IDX in sample else sample
