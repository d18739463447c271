"""The HTTP load generator against real sim servers on 127.0.0.1: timing, modes and faults.

The sim's own per-request stamps (`/sim/requests`, same monotonic clock) are the ground truth
the client's measurements are compared with.
"""

import statistics
import time

import httpx
import numpy as np
import pytest

from backends.process.launcher import free_port
from sweep.core import records as R
from sweep.loadgen.arrivals import arrival_offsets
from sweep.loadgen.http import Endpoint, run_endpoint_workload, run_http_workload
from sweep.loadgen.request_ids import parse as parse_id
from sweep.worker.trial import RUNNERS
from tests.helpers import make_requests, workload

pytestmark = pytest.mark.timeout(90)


def server_truth(backend):
    """Server stamps by request index (warm-up requests left out)."""
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    return {i.idx: s for rid, s in stamps.items() if not (i := parse_id(rid)).warmup}


def records(trackers):
    return [t.record("trial", 0.0) for t in trackers]


def test_openai_runner_is_registered():
    assert RUNNERS["openai"] is run_http_workload


def test_concurrency_of_each_mode():
    assert workload("latency_bound", batch_size=4).streams == 1
    assert workload("throughput_bound", batch_size=4).streams == 4
    assert workload("closed_loop", concurrency=8).streams == 8
    assert workload("open_loop", request_rate=5.0).streams is None
    assert workload("open_loop", request_rate=5.0, concurrency=3).streams == 3


def test_closed_loop_exact_tokens_and_ttft_itl_close_to_the_truth(sim):
    backend = sim(ttft_ms=20, itl_ms=5)
    warm = make_requests(2, 4)
    trackers = run_http_workload(
        backend, make_requests(40, 32), warm, workload(concurrency=8, num_requests=40)
    )
    rows = records(trackers)
    assert len(rows) == 40 and all(r[R.STATUS] == R.STATUS_OK for r in rows)
    assert all(r[R.OUTPUT_TOKENS] == 32 == r[R.SERVER_OUTPUT_TOKENS] for r in rows)
    itl = [g for r in rows for g in r[R.ITL_S]]
    assert len(itl) == 40 * 31
    # The truth is the server's own stamps of the same requests: the client's figures are
    # compared with them, as ratios, whatever the machine's speed. How close the client's TTFT
    # comes to the server's depends on the machine's load (1.1x to 1.6x on a 2-core machine at
    # load 29): the load generator's accuracy benchmark measures that, this test its direction.
    truth = server_truth(backend)
    server_ttft = [(truth[t.idx]["first_token_ns"] - truth[t.idx]["arrival_ns"]) / 1e9
                   for t in trackers]  # fmt: skip
    errors = [(t.chunk_times[0] - t.sent) - s for t, s in zip(trackers, server_ttft, strict=True)]
    assert statistics.median(errors) >= 0  # the client sends before and reads after the server
    assert statistics.median(r[R.TTFT_S] for r in rows) >= statistics.median(server_ttft)
    server_itl = statistics.mean(
        (s["end_ns"] - s["first_token_ns"]) / 1e9 / (s["output_tokens"] - 1) for s in truth.values()
    )
    assert statistics.mean(itl) / server_itl == pytest.approx(1, abs=0.25)
    # closed loop: never more than 8 requests inside the server at once
    assert _max_overlap(truth) <= 8


@pytest.mark.parametrize("client", ["asyncio", "aiohttp"])
@pytest.mark.parametrize("mode", ["closed_loop", "open_loop"])
def test_connections_are_open_before_the_measured_load_starts(sim, monkeypatch, mode, client):
    """No measured request waits for a connection to open, warm-up or not, with either client.

    Without it the 16 streams of a closed loop opened theirs as they started, and the first 16
    requests went out 14-17 ms late against vLLM's CPU server (read as a saturated client). The
    spy only counts: every connection is the real client's.
    """
    import aiohttp

    from sweep.loadgen.clock import now_s
    from sweep.loadgen.socket_client import SocketClient

    opened = []
    spied = {"asyncio": (SocketClient, "_connect"),
             "aiohttp": (aiohttp.TCPConnector, "_create_connection")}  # fmt: skip
    owner, name = spied[client]
    create = getattr(owner, name)

    async def counted(self, *args, **kwargs):
        opened.append(now_s())
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    backend = sim(ttft_ms=20, itl_ms=5)
    load = (
        workload(concurrency=16, num_requests=48, http_client=client)
        if mode == "closed_loop"
        else workload("open_loop", request_rate=200.0, num_requests=48, http_client=client)
    )
    trackers = run_http_workload(backend, make_requests(48, 8), [], load)
    assert all(t.error is None for t in trackers)
    first_send = min(t.sent for t in trackers)
    assert opened and max(opened) < first_send
    assert len(opened) == (16 if mode == "closed_loop" else 32)


def test_chunks_of_three_tokens_give_three_itl_samples_each(sim):
    backend = sim(ttft_ms=10, itl_ms=4, tokens_per_chunk=3)
    rows = records(
        run_http_workload(
            backend, make_requests(8, 31), [], workload(concurrency=4, num_requests=8)
        )
    )
    for r in rows:
        assert r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == 31
        itl = r[R.ITL_S]
        assert len(itl) == 31 - 3  # the first chunk's 3 tokens make no gap
        # chunks of 3, 3, ..., then a last chunk of 1: each gap of k tokens gives k equal samples
        for i in range(0, 27, 3):
            assert itl[i] == itl[i + 1] == itl[i + 2]
    # the samples average the server's own time per token after the first chunk (its stamps)
    server = statistics.mean(
        (s["end_ns"] - s["first_token_ns"]) / 1e9 / (s["output_tokens"] - 3)
        for s in server_truth(backend).values()
    )
    client = statistics.mean(g for r in rows for g in r[R.ITL_S])
    assert client / server == pytest.approx(1, abs=0.25)


def test_chat_endpoint_counts_tokens_not_the_role_chunk(sim):
    backend = sim(ttft_ms=5, itl_ms=1)
    rows = records(
        run_endpoint_workload(
            Endpoint(backend.base_url, backend.served_model, "chat"),
            make_requests(6, 12),
            [],
            workload(concurrency=3, num_requests=6),
        )
    )
    assert all(r[R.OUTPUT_TOKENS] == 12 == r[R.SERVER_OUTPUT_TOKENS] for r in rows)
    assert all(r[R.TTFT_S] >= 0.004 for r in rows)  # the role-only chunk is not a token


def test_latency_bound_sends_one_at_a_time(sim):
    backend = sim(ttft_ms=2, itl_ms=1)
    trackers = run_http_workload(
        backend, make_requests(5, 4), [], workload("latency_bound", num_requests=5)
    )
    assert all(t.error is None for t in trackers)
    assert _max_overlap(server_truth(backend)) == 1


def test_open_loop_follows_absolute_deadlines_at_the_configured_rate(sim):
    backend = sim(ttft_ms=5, itl_ms=2)
    wl = workload("open_loop", request_rate=40.0, num_requests=80, output_len=8, seed=7)
    trackers = run_http_workload(backend, make_requests(80, 8), make_requests(1, 2), wl)
    assert all(t.error is None for t in trackers)
    scheduled = np.array([t.scheduled for t in trackers])
    sent = np.array([t.sent for t in trackers])
    offsets = np.array(arrival_offsets(80, 40.0, 1.0, 7))
    # due times are the precomputed schedule exactly: lateness never shifts later requests
    np.testing.assert_allclose(scheduled - scheduled[0], offsets, atol=1e-9)
    lag_ms = (sent - scheduled) * 1e3
    assert lag_ms.min() >= 0 and np.median(lag_ms) < 5
    achieved = (len(sent) - 1) / (sent.max() - sent.min())
    assert achieved == pytest.approx((len(offsets) - 1) / offsets[-1], rel=0.1)


def test_open_loop_concurrency_cap_bounds_requests_in_flight(sim):
    backend = sim(ttft_ms=20, itl_ms=5)
    wl = workload("open_loop", request_rate=1000.0, concurrency=3, num_requests=12)
    trackers = run_http_workload(backend, make_requests(12, 6), [], wl)
    assert all(t.error is None for t in trackers)
    assert _max_overlap(server_truth(backend)) <= 3
    assert max(t.sent - t.scheduled for t in trackers) > 0.02  # waiting for the cap is lag


def test_arrival_schedule_rate_and_burstiness():
    rate = 20.0
    poisson = np.diff(arrival_offsets(20_000, rate, 1.0, seed=1))
    assert 1 / poisson.mean() == pytest.approx(rate, rel=0.03)
    assert poisson.std() / poisson.mean() == pytest.approx(1.0, rel=0.05)  # exponential
    regular = np.diff(arrival_offsets(20_000, rate, 4.0, seed=1))
    assert regular.std() / regular.mean() == pytest.approx(0.5, rel=0.05)  # gamma: 1/sqrt(k)
    assert arrival_offsets(5, rate, seed=3) == arrival_offsets(5, rate, seed=3)
    assert arrival_offsets(3, None) == [0.0, 0.0, 0.0]


def test_offline_batch_waits_for_each_batch_and_discards_the_first(sim):
    backend = sim(ttft_ms=2, itl_ms=1)
    wl = workload("offline_batch", batch_size=3, num_requests=9, discard_first_batch=True)
    trackers = run_http_workload(backend, make_requests(9, 4), [], wl)
    assert sorted(t.batch_idx for t in trackers) == [1, 1, 1, 2, 2, 2]
    first_of_2 = min(t.sent for t in trackers if t.batch_idx == 2)
    assert first_of_2 >= max(t.end for t in trackers if t.batch_idx == 1)


def test_load_model_slows_requests_down_with_more_running(sim):
    backend = sim(ttft_ms=5, itl_ms=1, load_ms_per_running=2.0)
    rows = records(
        run_http_workload(backend, make_requests(8, 8), [], workload(concurrency=8, num_requests=8))
    )
    # up to 8 running: every delay grows by up to 16 ms
    assert statistics.median(r[R.TTFT_S] for r in rows) > 0.010
    assert statistics.median(r[R.TPOT_S] for r in rows) > 0.005


EXPECTED_ERRORS = {
    "500": "http_error: HTTP 500",
    "429": "http_error: HTTP 429",
    "truncate": "disconnect: stream ended without [DONE]",
    "malformed": "malformed_event:",
    "stall": "timeout:",
    "reset": "disconnect:",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_ERRORS))
def test_each_fault_fails_its_requests_with_a_readable_error(sim, kind):
    backend = sim(ttft_ms=2, itl_ms=1, fault_rate=1.0, fault_kinds=[kind])
    t0 = time.monotonic()
    rows = records(
        run_http_workload(
            backend, make_requests(6, 8), [], workload(concurrency=3, num_requests=6, timeout_s=1.0)
        )
    )
    assert time.monotonic() - t0 < 10  # a stalled server costs one timeout per wave, no more
    assert len(rows) == 6
    for r in rows:
        assert r[R.STATUS] == R.STATUS_FAILED
        assert r[R.ERROR].startswith(EXPECTED_ERRORS[kind]), r[R.ERROR]
        assert "\n" not in r[R.ERROR]


def test_some_faults_leave_the_other_requests_intact(sim):
    backend = sim(ttft_ms=2, itl_ms=1, fault_rate=0.3, fault_kinds=["500", "reset"], seed=1)
    rows = records(
        run_http_workload(
            backend, make_requests(30, 8), [], workload(concurrency=4, num_requests=30)
        )
    )
    failed = [r for r in rows if r[R.STATUS] == R.STATUS_FAILED]
    assert 0 < len(failed) < 30
    assert all(r[R.OUTPUT_TOKENS] == 8 for r in rows if r[R.STATUS] == R.STATUS_OK)


def test_unreachable_endpoint_fails_every_request_quickly():
    endpoint = Endpoint(f"http://127.0.0.1:{free_port()}", "m")
    t0 = time.monotonic()
    rows = records(
        run_endpoint_workload(
            endpoint,
            make_requests(5, 8),
            make_requests(1, 2),
            workload(concurrency=2, num_requests=5),
        )
    )
    assert time.monotonic() - t0 < 5
    assert len(rows) == 5
    assert all(r[R.ERROR].startswith("connection_error:") for r in rows)


def test_stream_parsing_across_reads_with_and_without_usage():
    from sweep.loadgen.recorder import RequestTracker
    from sweep.loadgen.sse import EventError, StreamState

    tracker = RequestTracker(0, None, 2, 8)
    stream = StreamState("chat", tracker)
    role = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\r\n\r\n'
    two = b'data: {"choices":[{"delta":{"content":" a b"}}]}\n\n'
    last = b'data: {"choices":[{"delta":{"content":" c"},"finish_reason":"length"}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"completion_tokens":3}}\n\n'
    data = role + b": keep-alive\n\n" + two + last + usage + b"data: [DONE]\n\n"
    done = [stream.feed(data[i : i + 7]) for i in range(0, len(data), 7)]  # odd-sized reads
    assert done[-1] and not any(done[:-1])
    # without continuous usage every non-empty chunk counts as one token; usage is the truth
    assert tracker.chunk_tokens == [1, 1] and stream.server_tokens == 3 and stream.finished
    continuous = StreamState("completions", RequestTracker(1, None, 2, 8))
    continuous.feed(b'data: {"choices":[{"text":" a b c"}],"usage":{"completion_tokens":3}}\n')
    continuous.feed(b'data: {"choices":[{"text":""}],"usage":{"completion_tokens":5}}\n')
    assert continuous.tracker.chunk_tokens == [3, 2]  # usage deltas, even for empty text
    with pytest.raises(EventError, match="server_error: engine died"):
        StreamState("completions", tracker).feed(b'data: {"error":{"message":"engine died"}}\n')


def _max_overlap(truth):
    """Most requests the server held at once, from its arrival and end stamps."""
    events = sorted(
        [(s["arrival_ns"], 1) for s in truth.values()] + [(s["end_ns"], -1) for s in truth.values()]
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
