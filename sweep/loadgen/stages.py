"""The load's shape over time: duration-bounded trials, an open loop's ramp, and stages.

- `workload.duration_s`: nothing is sent once the load has run that long; `num_requests` stays
  an upper bound. Requests in flight then finish and are recorded like any other: cutting them
  off would drop exactly the slowest ones and flatter the latencies. So a trial's load ends
  within `duration_s` plus its slowest request (at most `workload.timeout_s`). A request still
  waiting for an open loop's concurrency cap at that time is not sent, and not recorded.
- `workload.ramp`: the open-loop schedule is bent onto the ramp (`sweep.loadgen.ramp`); the
  requests due before `ramp_s` are marked `phase=ramp` and stay out of the steady-state window.
- `workload.stages` run back to back from one queue of requests: an open-loop stage sends
  round(request_rate x duration_s) requests on a seeded schedule of its own (seed + its index),
  a closed-loop stage keeps `concurrency` requests in flight until its time is up. A stage
  begins when the one before ends by the clock, while that one's last requests still run: the
  load changes as a server would see it change, not after a drain. Each request records its
  stage; a stage that finds the queue empty (`num_requests` too small) sends nothing.
The HTTP runner (`sweep.loadgen.http`) hands in its open- and closed-loop drivers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from sweep.core import records as R
from sweep.loadgen.arrivals import arrival_offsets
from sweep.loadgen.ramp import ramped
from sweep.loadgen.wakeup import sleep_until

log = logging.getLogger(__name__)

# (items, due offsets, start, until) and (items, concurrency, until): the runner's drivers.
OpenLoop = Callable[[list, list[float], float, float], Awaitable[None]]
ClosedLoop = Callable[[Iterable, int, float], Awaitable[None]]


def open_loop_schedule(offsets: Sequence[float], workload: object) -> list[float]:
    """An open loop's due offsets after its ramp, cut at `duration_s` (pure)."""
    if workload.ramp != "none":
        offsets = ramped(
            offsets, workload.request_rate, workload.ramp, workload.ramp_s, workload.ramp_start_rate
        )
    if workload.duration_s is None:
        return list(offsets)
    return [t for t in offsets if t < workload.duration_s]


def mark_phases(items: list, offsets: Sequence[float], workload: object) -> list:
    """Mark the requests due inside the ramp as `phase=ramp`; returns `items`."""
    if workload.ramp != "none":
        for (_, tracker), offset in zip(items, offsets, strict=True):
            tracker.phase = R.PHASE_RAMP if offset < workload.ramp_s else R.PHASE_TARGET
    return items


def send_until(begin: float, workload: object) -> float | None:
    """The monotonic time after which nothing is sent (`duration_s`), None without a bound."""
    return None if workload.duration_s is None else begin + workload.duration_s


def stage_offsets(stage: object, burstiness: float, seed: int) -> list[float]:
    """Due offsets of an open-loop stage: exactly its rate over its duration."""
    count = max(1, round(stage.request_rate * stage.duration_s))
    return arrival_offsets(count, stage.request_rate, burstiness, seed)


async def run_stages(
    workload: object, items: list, begin: float, open_loop: OpenLoop, closed_loop: ClosedLoop
) -> None:
    """Offer `workload.stages` back to back from `begin`, marking each request's stage."""
    queue = iter(items)
    tasks = []
    at = begin
    for index, stage in enumerate(workload.stages):
        until = at + stage.duration_s
        await sleep_until(at)
        if stage.request_rate is not None:
            offsets = stage_offsets(stage, workload.burstiness, workload.seed + index)
            taken = [_marked(item, index) for item in itertools.islice(queue, len(offsets))]
            if len(taken) < len(offsets):
                log.warning("stage %d: workload.num_requests ran out", index)
            run = open_loop(taken, offsets[: len(taken)], at, until)
        else:
            run = closed_loop(_stage_queue(queue, index), stage.concurrency, until)
        tasks.append(asyncio.create_task(run))
        at = until
    await asyncio.gather(*tasks)


def _marked(item: tuple, index: int) -> tuple:
    item[1].stage = index
    return item


def _stage_queue(queue: Iterator, index: int) -> Iterator:
    """The shared queue as one stage pulls it: each request taken is marked with the stage."""
    for item in queue:
        yield _marked(item, index)
