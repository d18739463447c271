"""Offers a workload to an in-process engine: batches submitted together, tokens timestamped.

`latency_bound` submits one request at a time; `throughput_bound` and `offline_batch` submit
batches of `workload.batch_size` (how the engine schedules a batch is the engine's business:
the HF baseline's `per_request` mode processes it one request after another). Warm-up requests
run untimed first; `offline_batch` also discards its first batch, as study C did. With
`workload.duration_s` no batch starts after that time (`sweep.loadgen.stages` says why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa

from backends.base import EngineBackend, GenRequest
from sweep.core import records as R
from sweep.core.config import WorkloadConfig
from sweep.core.errors import ConfigError
from sweep.core.trust import below_minimum
from sweep.loadgen.clock import now_s
from sweep.loadgen.recorder import RequestTracker, Trackers


def batch_size_of(workload: object) -> int:
    """Requests submitted together under this workload."""
    return 1 if workload.name == "latency_bound" else workload.batch_size


def run_engine_workload(
    backend: EngineBackend,
    requests: Sequence[GenRequest],
    warmup: Sequence[GenRequest],
    workload: WorkloadConfig,
) -> Trackers:
    """Run `requests` in batches and return the trackers of the measured requests.

    With `workload.duration_s`, no batch starts once that time is up (the one running ends).

    Raises:
        ConfigError: the workload has stages, a ramp or cancellations, which only a server's
            runner offers.
    """
    if workload.stages or workload.ramp != "none":
        raise ConfigError(
            "workload.stages and workload.ramp shape a server's load: an in-process engine "
            "runs batches (use its server backend, e.g. vllm_server)"
        )
    if workload.structured != "none":
        raise ConfigError(
            "workload.structured asks a server for structured outputs: an in-process engine "
            "takes no constraint here (use its server backend, e.g. vllm_server)"
        )
    if workload.cancel_rate:
        raise ConfigError(
            "workload.cancel_rate closes requests' connections: an in-process engine has none "
            "(use its server backend, e.g. vllm_server)"
        )
    if warmup:
        backend.generate(list(warmup), lambda idx, n: None)
    size = batch_size_of(workload)
    trackers: list[RequestTracker] = []
    until = None if workload.duration_s is None else now_s() + workload.duration_s
    batches = (
        batch
        for requests_pass in _passes(requests, workload, trackers)
        for batch in _batches(requests_pass, size)
    )
    for batch_idx, batch in enumerate(batches):
        if until is not None and now_s() >= until:
            break
        by_idx = {
            r.idx: RequestTracker(r.idx, batch_idx, len(r.prompt_token_ids), r.max_tokens)
            for r in batch
        }
        for r in batch:
            by_idx[r.idx].adapter = r.adapter
        sent = now_s()
        for tracker in by_idx.values():
            tracker.mark_sent(sent)
        results = backend.generate(batch, _token_sink(by_idx))
        for result in results:
            by_idx[result.idx].finish(server_tokens=result.output_tokens)
        if batch_idx == 0 and workload.discard_first_batch:
            continue
        trackers.extend(by_idx.values())
    return Trackers(trackers)


def _batches(requests: Sequence[GenRequest], size: int) -> Iterator[list[GenRequest]]:
    """`requests` in batches of `size`, in order."""
    for start in range(0, len(requests), size):
        yield list(requests[start : start + size])


def _passes(
    requests: Sequence[GenRequest], workload: WorkloadConfig, measured: list[RequestTracker]
) -> Iterator[Sequence[GenRequest]]:
    """The requests once; with `repeat_to_minimum`, again while `measured` is too short.

    Asked for its next pass only once the last one has ended, so it judges what was measured.
    A pass that completes nothing new ends the repeats: no number of them would be enough.
    """
    yield requests
    passes, done = 1, 0
    while workload.repeat_to_minimum and requests:
        before, done = done, _completed(measured)
        if done == before or not _too_short(measured, workload):
            return
        yield [dataclasses.replace(r, idx=r.idx + passes * len(requests)) for r in requests]
        passes += 1


def _completed(trackers: list[RequestTracker]) -> int:
    """Requests that ended without an error."""
    return sum(t.error is None and t.end is not None for t in trackers)


def _too_short(trackers: list[RequestTracker], workload: WorkloadConfig) -> bool:
    """Whether the measured requests so far are below the workload's minimum size."""
    rows = [t.record("", 0.0) for t in trackers]
    return below_minimum(pa.Table.from_pylist(rows, schema=R.REQUESTS_SCHEMA), workload)


def _token_sink(trackers: dict[int, RequestTracker]) -> Callable[[int, int], None]:
    """The engine's token callback for one batch: timestamps `n` new tokens of request `idx`."""

    def on_token(idx: int, n: int) -> None:
        trackers[idx].add_tokens(n)

    return on_token
