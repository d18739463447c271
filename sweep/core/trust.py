"""Which requests and trials a summary can be trusted on: the steady-state window and size rules.

`steady_state_window` is a pure filter on one trial's request records. With
`workload.steady_state` on, it keeps only the requests sent while the offered load was at its
target: in the closed-loop modes, those after the first `concurrency` sends (the ramp-up, while
the workers fill the server) and before the last `concurrency` sends (the drain, when finished
requests are no longer replaced); in open loop, those due inside the schedule less the first and
last `steady_state_trim` of its span. Batches have no ramp (`discard_first_batch` is their
warm-up). The requests of an open loop's ramp to its target rate (`workload.ramp`) are outside
the window whether `steady_state` is on or not: they were sent below the load the trial asks
about. With `workload.stages`, each stage has its own window, as if it were a trial of its own.
The records keep every request; `with_window` writes the verdict into `in_window`, and
`sweep.core.summary.summarize` measures only the requests inside.

`too_short` is the minimum-size rule, after MLPerf LoadGen's minimum duration and query count:
a trial whose measured requests span less than `workload.min_duration_s`, that completed fewer
than `workload.min_requests`, or whose steady-state window is empty, is too short to trust.
`below_minimum` applies the same rule to request records as the summary will measure them: an
in-process engine's runner asks it after each pass of its requests (`workload.repeat_to_minimum`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from sweep.core import records as rec
from sweep.core.summary import summarize


def steady_state_window(requests: pd.DataFrame, workload: object) -> np.ndarray:
    """Per request, whether it is inside the steady-state window (all are when it is off).

    A ramp's requests (`phase` ramp) are always outside, and the open loop's trim applies to
    the schedule after it; with `workload.stages` each stage has a window of its own.
    """
    inside = np.zeros(len(requests), dtype=bool)
    ramp = np.zeros(len(requests), dtype=bool)
    if rec.PHASE in requests:
        ramp = requests[rec.PHASE].eq(rec.PHASE_RAMP).to_numpy(dtype=bool, na_value=False)
    if workload.stages and rec.STAGE in requests:
        stage = pd.to_numeric(requests[rec.STAGE], errors="coerce").to_numpy(dtype=float)
        for index in range(len(workload.stages)):
            mine = stage == index
            inside[mine] = _window(requests[mine], workload.stage_workload(index))
        return inside
    inside[~ramp] = _window(requests[~ramp], workload)
    return inside


def _window(requests: pd.DataFrame, workload: object) -> np.ndarray:
    """`steady_state_window` of requests sent at one target load."""
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
    names = [rec.SCHEDULED_S, rec.SENT_S, rec.PHASE, rec.STAGE]
    columns = requests.select([n for n in names if n in requests.column_names]).to_pandas()
    inside = pa.array(steady_state_window(columns, workload), pa.bool_())
    return requests.set_column(
        requests.schema.get_field_index(rec.IN_WINDOW), rec.IN_WINDOW, inside
    )


def too_short(summary: Mapping[str, object], workload: object) -> bool:
    """Whether the trial summarized by `summary` is below the workload's minimum size."""
    duration = float(summary.get(rec.DURATION_S) or 0.0)
    completed = int(summary.get(rec.COMPLETED_REQUESTS) or 0)
    measured = workload.steady_state or workload.ramp != "none"  # a ramp is never measured
    empty_window = measured and not summary.get(rec.NUM_REQUESTS)
    return bool(
        empty_window or duration < workload.min_duration_s or completed < workload.min_requests
    )


def below_minimum(requests: pa.Table, workload: object) -> bool:
    """`too_short` of request records (`records.REQUESTS_SCHEMA`), measured as `summarize` does."""
    frame = with_window(requests, workload).to_pandas()
    return too_short(summarize(frame, num_gpus=0, price_per_hour=0.0), workload)
