"""Arrival schedules of open-loop workloads: when each request is due, relative to the start.

Pure and seeded by `workload.seed`, so a trial offers the same schedule every time it runs. Gaps
are Poisson (exponential) at burstiness 1, else gamma with shape = burstiness and the same mean
1 / rate (as `vllm bench serve` draws them): burstiness < 1 is burstier, > 1 more regular.
The gaps are scaled so that the schedule's mean rate is exactly the configured one. Requests
replayed from a trace (`dataset=trace`) carry their own arrivals instead (`trace_offsets`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def arrival_offsets(
    count: int, request_rate: float | None, burstiness: float = 1.0, seed: int = 0
) -> list[float]:
    """Seconds from the start at which each of `count` requests is due; the first is at 0.

    A rate of None or infinity sends every request at once.
    """
    if count <= 0:
        return []
    if request_rate is None or math.isinf(request_rate):
        return [0.0] * count
    if request_rate <= 0 or burstiness <= 0:
        raise ValueError("request_rate and burstiness must be > 0")
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=count - 1)
    # Rescale so the schedule offers exactly the configured rate: an unscaled draw of a few hundred
    # gaps misses it by several percent, which would then read as the server's fault (vLLM's
    # client rescales the same way).
    gaps *= (count - 1) / request_rate / gaps.sum()
    return [0.0, *np.cumsum(gaps).tolist()]


def trace_offsets(requests: Sequence) -> list[float] | None:
    """A trace's own schedule: each request's `arrival_s` less the first one's (first at 0).

    None where the requests carry no arrivals: the workload's arrival process decides.
    """
    if not requests or requests[0].arrival_s is None:
        return None
    first = requests[0].arrival_s
    return [r.arrival_s - first for r in requests]
