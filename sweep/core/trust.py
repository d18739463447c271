"""Which requests and trials a summary can be trusted on: the steady-state window and size rules.

`steady_state_window` is a pure filter on one trial's request records. With
`workload.steady_state` on, it keeps only the requests sent while the offered load was at its
target: in the closed-loop modes, those after the first `concurrency` sends (the ramp-up, while
the workers fill the server) and before the last `concurrency` sends (the drain, when finished
requests are no longer replaced); in open loop, those due inside the schedule less the first and
last `steady_state_trim` of its span. Batches have no ramp (`discard_first_batch` is their
warm-up). The records keep every request; `with_window` writes the verdict into `in_window`, and
`sweep.core.summary.summarize` measures only the requests inside.

`too_short` is the minimum-size rule, after MLPerf LoadGen's minimum duration and query count:
a trial whose measured requests span less than `workload.min_duration_s`, that completed fewer
than `workload.min_requests`, or whose steady-state window is empty, is too short to trust.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from sweep.core import records as rec


def steady_state_window(requests: pd.DataFrame, workload: object) -> np.ndarray:
    """Per request, whether it is inside the steady-state window (all are when it is off)."""
    count = len(requests)
    inside = np.ones(count, dtype=bool)
    if not workload.steady_state or count == 0 or workload.name == "offline_batch":
        return inside
    if workload.name == "open_loop":
        due = pd.to_numeric(requests[rec.SCHEDULED_S], errors="coerce").to_numpy(dtype=float)
        first, last = np.nanmin(due), np.nanmax(due)
        cut = workload.steady_state_trim * (last - first)
        return (due >= first + cut) & (due <= last - cut)
    sent = pd.to_numeric(requests[rec.SENT_S], errors="coerce").to_numpy(dtype=float)
    rank = np.empty(count, dtype=np.int64)
    rank[np.argsort(sent, kind="stable")] = np.arange(count)  # unsent (NaN) requests rank last
    streams = workload.streams
    return (rank >= streams) & (rank < count - streams)


def with_window(requests: pa.Table, workload: object) -> pa.Table:
    """The request table with `in_window` set by `steady_state_window`."""
    columns = requests.select([rec.SCHEDULED_S, rec.SENT_S]).to_pandas()
    inside = pa.array(steady_state_window(columns, workload), pa.bool_())
    return requests.set_column(
        requests.schema.get_field_index(rec.IN_WINDOW), rec.IN_WINDOW, inside
    )


def too_short(summary: Mapping[str, object], workload: object) -> bool:
    """Whether the trial summarized by `summary` is below the workload's minimum size."""
    duration = float(summary.get(rec.DURATION_S) or 0.0)
    completed = int(summary.get(rec.COMPLETED_REQUESTS) or 0)
    empty_window = workload.steady_state and not summary.get(rec.NUM_REQUESTS)
    return bool(
        empty_window or duration < workload.min_duration_s or completed < workload.min_requests
    )
