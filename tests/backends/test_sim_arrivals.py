"""The sim server stamps a request's arrival when its first bytes come, not when its handler starts.

Its arrival stamps are the truth a trace replay and the load generator's accuracy are judged by
(`python -m scripts.bench.trace_replay`, `scripts/bench_loadgen.py`): a stamp taken at the handler's
start adds the server's own queue in a burst to the client's error.
"""

import asyncio
import socket
import time

import httpx
import pytest

from backends.sim_server.arrivals import ArrivalStamps

pytestmark = pytest.mark.timeout(60)


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.calls: list = []

    def connection_made(self, transport):
        self.calls.append(("made", transport))

    def data_received(self, data):
        self.calls.append(("data", data))

    def eof_received(self):
        self.calls.append(("eof",))
        return False

    def connection_lost(self, exc):
        self.calls.append(("lost", exc))


def test_each_request_is_stamped_at_its_first_read_and_every_call_is_passed_on():
    stamps, inner = ArrivalStamps(), _Recorder()
    protocol = stamps.factory(lambda: inner)()
    transport = object()
    protocol.connection_made(transport)
    before = time.perf_counter_ns()
    protocol.data_received(b"POST / HTTP/1.1\r\n")
    time.sleep(0.05)
    protocol.data_received(b"Host: x\r\n\r\n")  # the same request: its stamp stays
    first = stamps.take(transport)
    assert before <= first < before + 40_000_000  # the first read's time, not the second's
    assert len(stamps) == 0
    later = time.perf_counter_ns()
    protocol.data_received(b"GET /health HTTP/1.1\r\n\r\n")  # the connection's next request
    assert stamps.take(transport) >= later
    assert stamps.take(transport) >= later  # none noted: now
    protocol.data_received(b"x")
    protocol.eof_received()
    protocol.connection_lost(None)
    assert len(stamps) == 0  # a closed connection leaves nothing behind
    assert [c[0] for c in inner.calls] == ["made", "data", "data", "data", "data", "eof", "lost"]


def test_a_request_whose_headers_come_in_two_parts_arrived_with_the_first(sim):
    """Half the headers, 300 ms, the rest: the handler can start only after the rest, the stamp is
    the first half's (before, it was the handler's start, 300 ms later)."""
    backend = sim(ttft_ms=1, itl_ms=1)
    host, port = backend.base_url.removeprefix("http://").split(":")
    body = b'{"model": "m", "prompt": "a", "max_tokens": 2}'
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: split-1\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        sent = time.perf_counter_ns()  # the server's clock: CLOCK_MONOTONIC, as ours
        conn.sendall(head[:20])
        time.sleep(0.3)
        rest_sent = time.perf_counter_ns()
        conn.sendall(head[20:] + body)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    arrival = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()["split-1"]
    assert sent <= arrival["arrival_ns"] < rest_sent
