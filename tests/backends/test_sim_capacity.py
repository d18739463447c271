"""The sim server's capacity (`max_num_seqs`): a bounded running set, a FIFO queue, and a knee.

Real sim servers on 127.0.0.1 (the `sim` fixture), driven by the HTTP load generator; the
server's own stamps (`/sim/requests`: arrival, admission, first token, end) are the truth the
running set, the queue and the /metrics histograms are checked against. Tolerances allow for a
busy two-core machine: the sim keeps its schedule to a millisecond or two, the client less well.
The one test that times the server's clock to a few milliseconds, and so runs `alone`, is in
`test_sim_capacity_timing.py` (a file is one unit of work under pytest-xdist, and a unit with an
`alone` test is handed out last).
"""

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.sim import SimBackendConfig
from backends.sim_server.admission import Admission
from backends.sim_server.command import parse_args
from sweep.core import records as R
from sweep.core.errors import ConfigError
from sweep.loadgen.http import run_http_workload
from tests.helpers import make_requests, workload

pytestmark = pytest.mark.timeout(60)

# ttft 20 ms, then 15 gaps of 5 ms: a request holds its slot for about 95 ms.
SCHEDULE = {"ttft_ms": 20, "itl_ms": 5}
TOKENS = 16
SERVICE_MS = 20 + (TOKENS - 1) * 5


def stamps_of(backend):
    """The server's per-request stamps, in order of arrival."""
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    return sorted(stamps.values(), key=lambda s: s["arrival_ns"])


def peak_overlap(stamps, start):
    """Most requests at once between their `start` stamp and their end."""
    events = sorted([(s[start], 1) for s in stamps] + [(s["end_ns"], -1) for s in stamps])
    held = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant: the slot passes
        held += step
        peak = max(peak, held)
    return peak


def histogram(backend, name):
    """(sum, count) of one of the server's histograms."""
    text = httpx.get(f"{backend.base_url}/metrics", timeout=5).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == name)
    values = {s.name: s.value for s in family.samples}
    return values[f"{name}_sum"], values[f"{name}_count"]


def measure(backend, requests, load):
    """The load generator's records of `requests` offered as `load` (no warm-up)."""
    return [t.record("trial", 0.0) for t in run_http_workload(backend, requests, [], load)]


def run_polling_gauges(backend, requests, load):
    """Run `load` over `requests` while scraping the running / waiting gauges every 10 ms."""
    source = backend.telemetry_sources()[0]
    scrapes = []
    with ThreadPoolExecutor(1) as pool:
        rows = pool.submit(measure, backend, requests, load)
        while not rows.done():
            scrapes.append({m: v for _, m, v in source()})
            time.sleep(0.01)
    source.close()
    return rows.result(), scrapes


def test_config_and_server_reject_a_negative_max_num_seqs():
    assert SimBackendConfig().max_num_seqs == 0  # unlimited by default
    with pytest.raises(ConfigError, match=r"backend.max_num_seqs must be >= 0.*got -1"):
        SimBackendConfig(max_num_seqs=-1)
    with pytest.raises(SystemExit):
        parse_args(["--port", "1", "--schedule", '{"max_num_seqs": -1}'])


def test_admission_is_first_in_first_out_and_unlimited_at_zero():
    unlimited = Admission(0)
    assert all(unlimited.arrive(i) for i in range(100)) and not unlimited.waiting
    two = Admission(2)
    assert [two.arrive(x) for x in "abcde"] == [True, True, False, False, False]
    assert two.leave("d") == [] and list(two.waiting) == ["c", "e"]  # left while waiting
    assert two.leave("a") == ["c"] and two.running == {"b", "c"}
    assert two.leave("a") == []  # twice is harmless
    assert two.leave("b") == ["e"] and two.leave("c") == [] and two.running == {"e"}
    assert two.arrive("f") and two.running == {"e", "f"}


def test_histograms_observe_the_stamped_queue_prefill_and_ttft(sim):
    backend = sim(**SCHEDULE, max_num_seqs=2)
    measure(backend, make_requests(6, TOKENS), workload(concurrency=6, num_requests=6))
    stamps = stamps_of(backend)
    for name, start, end in (
        ("sim:request_queue_time_seconds", "arrival_ns", "admitted_ns"),
        ("sim:request_prefill_time_seconds", "admitted_ns", "first_token_ns"),
        ("sim:time_to_first_token_seconds", "arrival_ns", "first_token_ns"),
    ):
        total_s, count = histogram(backend, name)
        assert count == 6
        assert total_s == pytest.approx(sum(s[end] - s[start] for s in stamps) / 1e9, rel=1e-9)
    assert histogram(backend, "sim:request_queue_time_seconds")[0] > 4 * SERVICE_MS / 2 / 1e3


def test_load_slows_decode_by_the_running_requests_only(sim):
    # 5 ms + 10 ms per running request: 25 ms with two running, not 65 ms for all six inside
    backend = sim(**SCHEDULE, max_num_seqs=2, load_ms_per_running=10)
    measure(backend, make_requests(6, 8), workload(concurrency=6, num_requests=6))
    total_s, count = histogram(backend, "sim:inter_token_latency_seconds")  # the server's gaps
    assert count == 6 * 7 and total_s / count * 1e3 == pytest.approx(25, abs=2)


def test_a_client_hanging_up_frees_its_place_in_line_or_its_slot(sim):
    backend = sim(ttft_ms=5, itl_ms=1000, max_num_seqs=1)  # one slot, a token a second
    source = backend.telemetry_sources()[0]
    body = {"model": "m", "prompt": "x", "max_tokens": 4, "stream": True}

    def gauges(within_s=3.0, **want):
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            now = {m: v for _, m, v in source()}
            if all(now.get(m) == v for m, v in want.items()):
                return True
            time.sleep(0.02)
        return False

    with httpx.Client(timeout=10) as client, ExitStack() as streams:

        def open_stream(rid):
            return streams.enter_context(
                client.stream(
                    "POST", f"{backend.base_url}/v1/completions", json=body,
                    headers={"X-Request-Id": rid},
                )
            )  # fmt: skip

        a = open_stream("a")
        a_lines = a.iter_lines()  # kept: dropping a half-read iterator closes the response
        assert next(a_lines).startswith("data: ")  # its first token: "a" holds the slot
        b, _ = open_stream("b"), open_stream("c")
        assert gauges(**{R.RUNNING_REQUESTS: 1, R.WAITING_REQUESTS: 2})
        b.close()  # hangs up while queued
        assert gauges(**{R.RUNNING_REQUESTS: 1, R.WAITING_REQUESTS: 1})
        a.close()  # hangs up mid-stream: "c" runs at once, not at a's next token
        assert gauges(**{R.RUNNING_REQUESTS: 1, R.WAITING_REQUESTS: 0})
        stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    source.close()
    assert stamps["a"]["outcome"] == stamps["b"]["outcome"] == "closed"
    assert "admitted_ns" not in stamps["b"]
    assert stamps["c"]["admitted_ns"] == stamps["a"]["end_ns"]
    assert stamps["a"]["end_ns"] - stamps["a"]["first_token_ns"] < 0.9e9  # before its next token


def output_rate(stamps):
    """Tokens per second the server streamed, from the first admission to the last end."""
    span_s = (max(s["end_ns"] for s in stamps) - min(s["admitted_ns"] for s in stamps)) / 1e9
    return sum(s["output_tokens"] for s in stamps) / span_s


def test_a_flood_runs_at_the_capacity_and_not_beyond(sim):
    flood = workload(concurrency=32, num_requests=48)
    capacity = 4 / (5 / 1e3)  # four running, one token each per 5 ms: 800 tok/s
    bounded = sim(**SCHEDULE, max_num_seqs=4)
    measure(bounded, make_requests(48, 32), flood)
    rate = output_rate(stamps_of(bounded))
    # each slot also spends 20 ms of its 175 ms before its first token: 731 tok/s at best
    assert 0.5 * capacity < rate < capacity  # a late timer only slows it
    unbounded = sim(**SCHEDULE)  # the same flood with no limit: the knee was the server's
    measure(unbounded, make_requests(48, 32), flood)
    assert output_rate(stamps_of(unbounded)) > 1.25 * capacity  # about 5 x on a quiet machine


def test_a_light_open_loop_load_does_not_queue(sim):
    backend = sim(**SCHEDULE, max_num_seqs=4)
    # 10 requests/s of 95 ms each: about one running on average, four slots
    light = workload("open_loop", request_rate=10.0, num_requests=30, burstiness=10.0)
    rows = measure(backend, make_requests(30, TOKENS), light)
    assert all(r[R.STATUS] == R.STATUS_OK for r in rows)
    stamps = stamps_of(backend)
    waits = [s["admitted_ns"] - s["arrival_ns"] for s in stamps]
    assert sum(w == 0 for w in waits) >= 0.9 * len(waits)
    ttft_ms = [(s["first_token_ns"] - s["arrival_ns"]) / 1e6 for s in stamps]  # the server's
    assert min(ttft_ms) > 19 and statistics.median(ttft_ms) < 30
