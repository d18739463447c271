"""Per-adapter summaries of a trial whose requests went to LoRA adapters (`backends.lora`).

A trial against a backend that serves adapters gives each request one (`sweep.loadgen.adapters`)
and records it (`records.ADAPTER`). Its summary row measures all of them together;
`adapter_summaries` adds one row per adapter (`records.ADAPTERS_FILE`): the adapter, how many
requests it was sent and their share of the trial's, then `sweep.core.summary.summarize` over
its requests alone (the trial's steady-state window kept). An adapter's throughputs are its
requests' tokens over their own span (first send to last end), which under interleaved load is
the trial's: the adapters' output tok/s add up to about the trial's. The server's /metrics are
read once per trial, so the server-side columns are left out.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from sweep.core import records as rec
from sweep.core.summary import summarize


def adapter_summaries(
    requests: pd.DataFrame,
    trial_id: str,
    *,
    num_gpus: int,
    price_per_hour: float,
    slo: dict[str, float] | None = None,
) -> pa.Table | None:
    """One row per adapter the trial's requests asked for; None when none asked for one."""
    if rec.ADAPTER not in requests or requests[rec.ADAPTER].isna().all():
        return None
    named = requests[requests[rec.ADAPTER].notna()]
    rows = []
    for adapter, mine in named.groupby(rec.ADAPTER, sort=True):
        metrics = summarize(mine, num_gpus=num_gpus, price_per_hour=price_per_hour, slo=slo)
        rows.append(
            {
                rec.TRIAL_ID: trial_id,
                rec.ADAPTER: adapter,
                rec.ADAPTER_REQUESTS: len(mine),
                rec.ADAPTER_SHARE: len(mine) / len(requests),
                **metrics,
            }
        )
    return pa.Table.from_pylist(rows)
