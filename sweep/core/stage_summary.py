"""Per-stage summaries of a trial with `workload.stages`: each stage measured on its own.

A staged trial runs its stages back to back against one server (`sweep.loadgen.stages`); its
summary row measures them together, and `stage_summaries` adds one row per stage
(`records.STAGES_FILE`): the stage's index and what it asked for, the rate at which it sent
(requests sent / its duration), then `sweep.core.summary.summarize` over the requests the stage
sent (its own steady-state window applied) and the telemetry samples taken while they ran.
The server's /metrics are read once per trial, so the server-side columns are left out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

from sweep.core import records as rec
from sweep.core.summary import summarize


def stage_summaries(
    requests: pd.DataFrame,
    workload: Any,
    trial_id: str,
    *,
    num_gpus: int,
    price_per_hour: float,
    slo: dict[str, float] | None = None,
    timeseries: pd.DataFrame | None = None,
) -> pa.Table:
    """One row per stage of `workload.stages` (none without stages)."""
    stage = pd.to_numeric(requests[rec.STAGE], errors="coerce").to_numpy(dtype=float)
    rows = []
    for index, asked in enumerate(workload.stages):
        mine = requests[stage == index]
        sent = pd.to_numeric(mine[rec.SENT_S], errors="coerce").dropna()
        end = pd.to_numeric(mine[rec.END_S], errors="coerce").dropna()
        samples = timeseries
        if timeseries is not None and len(sent):
            t = timeseries[rec.T_S]
            samples = timeseries[(t >= sent.min()) & (t <= max(end.max(), sent.max()))]
        metrics = summarize(
            mine,
            num_gpus=num_gpus,
            price_per_hour=price_per_hour,
            slo=slo,
            timeseries=samples,
        )
        rows.append(
            {
                rec.TRIAL_ID: trial_id,
                rec.STAGE: index,
                rec.STAGE_REQUEST_RATE: asked.request_rate,
                rec.STAGE_CONCURRENCY: asked.concurrency,
                rec.STAGE_DURATION_S: asked.duration_s,
                rec.SEND_RATE: len(sent) / asked.duration_s,
                **metrics,
            }
        )
    return pa.Table.from_pylist(rows)
