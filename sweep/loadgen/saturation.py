"""When the load generator, not the server, set the pace: the client's self-measurement and rule.

Every trial measures its own client. The send lag of a request is its actual send minus its
scheduled send: in open loop the schedule is the arrival deadline; in the closed-loop modes,
where a worker sends as soon as its last request ended, it is when that request let its stream
go (`RequestTracker.freed`: `[DONE]` or the body's end, which a server may send well after the
last token), so the lag is the client's turnaround. `CpuMeter` takes the CPU time of the thread
running the event loop over the measured phase (the worker process also runs telemetry and Ray's
threads, which are not the generator); with the generator sharded into processes, each shard's
loop is measured and `ClientUsage` sums them. `client_columns` writes the summary columns and
applies the one rule:

    client_saturated = send lag p99 > lag_limit_ms(workload)
                       or the busiest event loop used more than 90% of a core

The lag limit is 10 ms in the closed-loop modes, and in open loop the mean inter-arrival gap
(a request later than that is overtaken by the next arrival: the schedule no longer holds),
clamped to [2, 10] ms: asyncio's timers fire up to a millisecond late, so a tighter bound would
flag idle clients. Where lag does not measure the client, only the CPU rule applies: an open
loop with a concurrency cap (waiting for the cap is the server's pace), and requests due all at
once (offline batches, an open loop without a rate), whose lag is the fan-out of the batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sweep.core import records as R
from sweep.loadgen.clock import now_s

CPU_LIMIT_PERCENT = 90.0
LAG_LIMIT_MS = 10.0
MIN_LAG_LIMIT_MS = 2.0
OPEN_LOOP_LAG_GAPS = 1.0


@dataclass(frozen=True)
class ClientUsage:
    """CPU seconds of each of the generator's event loops over the measured phase, and wall time."""

    cpu_s: tuple[float, ...]
    wall_s: float

    @property
    def percent(self) -> float | None:
        """CPU time of all loops / wall time, in percent of one core."""
        return sum(self.cpu_s) / self.wall_s * 100 if self.wall_s > 0 else None

    @property
    def busiest_percent(self) -> float | None:
        """The busiest loop's CPU time / wall time: above 100% of a core no loop can go."""
        return max(self.cpu_s) / self.wall_s * 100 if self.wall_s > 0 and self.cpu_s else None


class CpuMeter:
    """CPU time of the calling thread, and wall time, from creation to `usage()`."""

    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.thread_time(), now_s()

    def usage(self) -> ClientUsage:
        """What the thread used so far."""
        return ClientUsage((time.thread_time() - self.cpu0,), now_s() - self.wall0)


def merge(usages: list[ClientUsage]) -> ClientUsage:
    """The usage of shards that ran side by side: their loops, over the longest wall time."""
    return ClientUsage(
        tuple(c for u in usages for c in u.cpu_s), max((u.wall_s for u in usages), default=0.0)
    )


def lag_limit_ms(workload: object) -> float | None:
    """The p99 send lag above which the client is saturated; None where lag does not tell."""
    if workload.name == "offline_batch":
        return None  # a batch is due at once: its lag is the fan-out, which grows with its size
    if workload.name != "open_loop":
        return LAG_LIMIT_MS
    rate = workload.request_rate
    if workload.concurrency or rate is None or math.isinf(rate):
        return None  # waits for the cap are the server's pace; all due at once is a batch
    return min(LAG_LIMIT_MS, max(MIN_LAG_LIMIT_MS, OPEN_LOOP_LAG_GAPS * 1e3 / rate))


def is_saturated(
    send_lag_p99_ms: float | None, limit_ms: float | None, usage: ClientUsage | None
) -> bool:
    """The rule: lag over its limit, or a loop above `CPU_LIMIT_PERCENT` of a core."""
    lagging = None not in (send_lag_p99_ms, limit_ms) and send_lag_p99_ms > limit_ms
    busiest = None if usage is None else usage.busiest_percent
    return bool(lagging or (busiest is not None and busiest > CPU_LIMIT_PERCENT))


def client_columns(
    summary: Mapping[str, object], workload: object, usage: ClientUsage | None
) -> dict[str, object]:
    """`client_cpu_percent` and `client_saturated` of a trial whose `summary` has its send lag."""
    lag = summary.get(R.SEND_LAG_MS_P99)
    lag = None if lag is None or math.isnan(lag) else float(lag)
    return {
        R.CLIENT_CPU_PERCENT: None if usage is None else usage.percent,
        R.CLIENT_SATURATED: is_saturated(lag, lag_limit_ms(workload), usage),
    }
