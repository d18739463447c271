"""The sim server's own latency histograms, named as vLLM names them (under a `sim:` prefix).

`Latencies` is a Prometheus collector the sim server (`backends.sim_server`) registers beside
its gauges: queue time, prefill time, time to first token, inter-token latency and time per
output token, what a real server reports of the requests it served, so the trial's /metrics
capture and its mapping (`backends.sim.SIM_SERVER_SERIES`) are tested against a server whose
truth is its configured schedule. Kept without locks: the server's event loop is the only
writer and reader, and a chunk costs one bisection.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# Bounds (s): fine where configured latencies lie (1 to 100 ms), so a configured value reads
# back within a bucket of a few milliseconds.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025,
    0.03, 0.035, 0.04, 0.045, 0.05, 0.055, 0.06, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15, 0.2, 0.25,
    0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, float("inf"),
)  # fmt: skip


class Sent(Protocol):
    """What the histograms read of a stream: when it arrived and was admitted, tokens sent."""

    arrival_ns: int
    admitted_ns: int
    sent: int


class Histogram:
    """A Prometheus histogram over LATENCY_BUCKETS_S."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.counts = [0] * len(LATENCY_BUCKETS_S)
        self.total_s = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        """Count `times` observations of `seconds`."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += times
        self.total_s += seconds * times

    def family(self) -> HistogramMetricFamily:
        """The histogram as Prometheus renders it (cumulative buckets, sum, count)."""
        cumulative = itertools.accumulate(self.counts)
        bounds = map(floatToGoString, LATENCY_BUCKETS_S)
        buckets = list(zip(bounds, cumulative, strict=True))
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.total_s
        )


class Latencies:
    """The server's own view of its requests: a collector of five histograms.

    Queue time is arrival to admission (0 unless `max_num_seqs` requests were running), observed
    on admission; prefill is admission to first token; TTFT is arrival to first token. ITL is per
    token (a chunk of k tokens after a gap g counts k gaps of g/k, as the load generator counts
    them); TPOT is per request, (end - first token) / (n - 1).
    """

    def __init__(self) -> None:
        self.queue = Histogram("sim:request_queue_time_seconds", "Arrival to scheduled")
        self.prefill = Histogram("sim:request_prefill_time_seconds", "Scheduled to first token")
        self.ttft = Histogram("sim:time_to_first_token_seconds", "Arrival to first token")
        self.itl = Histogram("sim:inter_token_latency_seconds", "Gap between output tokens")
        self.tpot = Histogram("sim:request_time_per_output_token_seconds", "Per-request TPOT")
        self.sent_ns: dict[Sent, tuple[int, int]] = {}  # first and latest chunk of a stream

    def admitted(self, s: Sent) -> None:
        """`s` has left the queue and is running."""
        self.queue.observe((s.admitted_ns - s.arrival_ns) / 1e9)

    def chunk(self, s: Sent, k: int, now: int, first: bool, finish: bool) -> None:
        """A chunk of `k` tokens of `s` sent at `now` (the last one when `finish`)."""
        if first:
            self.prefill.observe((now - s.admitted_ns) / 1e9)
            self.ttft.observe((now - s.arrival_ns) / 1e9)
            first_ns = now
        else:
            first_ns, last_ns = self.sent_ns[s]
            self.itl.observe((now - last_ns) / 1e9 / k, k)
        self.sent_ns[s] = (first_ns, now)
        if finish and s.sent > 1:
            self.tpot.observe((now - first_ns) / 1e9 / (s.sent - 1))

    def forget(self, s: Sent) -> None:
        """`s` has ended (finished, faulted or closed)."""
        self.sent_ns.pop(s, None)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The histograms, for the registry's exposition."""
        for histogram in (self.queue, self.prefill, self.ttft, self.itl, self.tpot):
            yield histogram.family()
