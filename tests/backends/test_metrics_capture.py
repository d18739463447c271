"""The whole-/metrics capture: parsing, deltas and the mapped server view, on vLLM 0.32.0's text.

The recorded mid-load exposition (tests/fixtures) is the end of a trial; its start is derived
from it: every sample at a quarter of its value, so every counter and histogram grew by three
quarters of its recorded value, and one series missing (born during the trial). Both are served
by a real HTTP server on 127.0.0.1 and read by `ServerCapture` as a trial reads them.
"""

import http.server
import json
import logging
import math
import threading

import numpy as np
import pandas as pd
import pytest

from backends.process.launcher import free_port
from backends.process.prometheus import Scrape, ScrapeError, snapshot
from backends.vllm_server import VLLM_SERVER_SERIES
from sweep.core import records as R
from sweep.core.errors import BackendError
from sweep.core.server_view import histogram_quantile, server_columns
from sweep.loadgen.clock import now_s
from sweep.measure.telemetry import ServerCapture
from tests.helpers import FIXTURES

END_TEXT = (FIXTURES / "vllm-0.32.0-metrics-midload.txt").read_text()
BORN = 'vllm:request_success_total{engine="0",finished_reason="length"'
GROWN = 0.75  # each sample's start is a quarter of its end


def derived_start(text: str) -> str:
    """The exposition at a quarter of every value, without the series BORN."""
    lines = []
    for line in text.splitlines():
        if line.startswith(BORN):
            continue
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            line = f"{series} {float(value) / 4!r}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class Serving:
    """A real HTTP server answering GET with each of `bodies` in turn (the last one repeats)."""

    def __init__(self, *bodies: tuple[int, str]):
        self.bodies = list(bodies)
        self.gets = 0
        self.headers = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                status, body = outer.bodies[min(outer.gets, len(outer.bodies) - 1)]
                outer.gets += 1
                outer.headers.append(dict(self.headers))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def capture_of(*bodies):
    serving = Serving(*bodies)
    try:
        with ServerCapture(Scrape(serving.url), now_s()) as capture:
            pass
        return capture.table("t1").to_pandas(), serving.gets
    finally:
        serving.close()


@pytest.fixture(scope="module")
def vllm_capture():
    table, gets = capture_of((200, derived_start(END_TEXT)), (200, END_TEXT))
    assert gets == 2
    return table


def test_every_numeric_series_is_captured_with_its_delta(vllm_capture):
    end = snapshot(END_TEXT)
    assert len(end) == 430 and len(vllm_capture) == len(end)  # every sample, every label set
    assert (vllm_capture[R.TRIAL_ID] == "t1").all() and (vllm_capture[R.SOURCE] == "server").all()
    by_key = {
        (r[R.SAMPLE], r[R.LABELS], None if pd.isna(r[R.LE]) else r[R.LE]): r
        for r in vllm_capture.to_dict("records")
    }
    kinds = {}
    for (sample, labels, le), (family, kind, value) in end.items():
        row = by_key[(sample, labels, le)]
        assert (row[R.FAMILY], row[R.KIND], row[R.END]) == (family, kind, value)
        kinds[kind] = kinds.get(kind, 0) + 1
        if sample.startswith(BORN.split("{")[0]) and '"length"' in labels:
            assert pd.isna(row[R.START]) and row[R.DELTA] == value  # born: counts from 0
            continue
        assert row[R.START] == pytest.approx(value / 4, rel=1e-12)
        grows = kind in ("counter", "histogram") or (
            kind == "summary" and not labels.count("quantile")
        )
        if grows and not sample.endswith("_created"):
            assert row[R.DELTA] == pytest.approx(GROWN * value, rel=1e-12, abs=1e-12), sample
        else:  # gauges (and creation times) keep their start and end only
            assert pd.isna(row[R.DELTA]), sample
    assert kinds == {"counter": 39, "gauge": 64, "histogram": 323, "summary": 4}  # as awk says
    buckets = vllm_capture[vllm_capture[R.SAMPLE].str.endswith("_bucket")]
    assert buckets[R.LE].notna().all() and np.isinf(buckets[R.LE]).sum() == 18  # one +Inf each
    assert not buckets[R.LABELS].str.contains('"le"').any()  # `le` is its own column
    ttft = buckets[buckets[R.FAMILY] == "vllm:time_to_first_token_seconds"]
    assert len(ttft) == 23 and ttft[R.LE].is_monotonic_increasing
    model = "/root/.cache/llm-sweep/models/tiny-llama-v1"
    assert json.loads(ttft[R.LABELS].iloc[0]) == {"engine": "0", "model_name": model}
    assert (vllm_capture[R.END_T_S] >= vllm_capture[R.START_T_S]).all()


def test_vllm_map_names_series_that_vllm_exports():
    families = {family: kind for family, kind, _ in snapshot(END_TEXT).values()}
    for role, family in VLLM_SERVER_SERIES.items():
        if role in (R.SPEC_DRAFT_TOKENS, R.SPEC_ACCEPTED_TOKENS):
            continue  # exported only with a drafter (speculative decoding)
        expected = "histogram" if role in R.SERVER_LATENCIES else "counter"
        assert families.get(family) == expected, (role, family)


def test_server_columns_from_the_vllm_deltas(vllm_capture):
    """Expected values by hand from the fixture's buckets (deltas are 3/4 of them: same shape)."""
    row = server_columns(vllm_capture, VLLM_SERVER_SERIES)
    col = R.latency_column
    # TTFT: 48 observations, buckets 0.06: 1, 0.08: 29, 0.1: 48 (x 3/4).
    assert row[col(R.SERVER_TTFT, "mean")] == pytest.approx(3683.513641357422 / 48)
    assert row[col(R.SERVER_TTFT, "median")] == pytest.approx(60 + 20 * (24 - 1) / 28)
    assert row[col(R.SERVER_TTFT, "p99")] == pytest.approx(80 + 20 * (47.52 - 29) / 19)
    # ITL: 19133 gaps, 18863 under 10 ms, 19132 under 25 ms.
    assert row[col(R.SERVER_ITL, "mean")] == pytest.approx(87088.2259120317 / 19133)
    assert row[col(R.SERVER_ITL, "median")] == pytest.approx(10 * 9566.5 / 18863)
    assert row[col(R.SERVER_ITL, "p99")] == pytest.approx(10 + 15 * (0.99 * 19133 - 18863) / 269)
    # TPOT: 29 requests, all under 10 ms.
    assert row[col(R.SERVER_TPOT, "mean")] == pytest.approx(132.1991019749772 / 29)
    assert row[col(R.SERVER_TPOT, "median")] == pytest.approx(5.0)
    assert row[col(R.SERVER_TPOT, "p99")] == pytest.approx(9.9)
    # Queue and prefill: vLLM's lowest bucket is 0.3 s, so interpolation alone would say a
    # median of 150 ms; Markov's bound (a latency is >= 0) caps it at mean / (1 - q).
    queue_mean = 5.86937002481136 / 29
    assert row[col(R.SERVER_QUEUE, "mean")] == pytest.approx(queue_mean)
    assert row[col(R.SERVER_QUEUE, "median")] == pytest.approx(2 * queue_mean)
    assert row[col(R.SERVER_QUEUE, "p99")] == pytest.approx(100 * queue_mean)
    prefill_mean = 913.4939969826519 / 29
    assert row[col(R.SERVER_PREFILL, "mean")] == pytest.approx(prefill_mean)
    assert row[col(R.SERVER_PREFILL, "median")] == pytest.approx(2 * prefill_mean)
    assert row[col(R.SERVER_PREFILL, "p99")] == pytest.approx(297.0)  # the bucket's 99%
    assert row[R.SERVER_REQUESTS] == 36  # first tokens in the trial: 3/4 of 48
    assert row[R.SERVER_PREFIX_CACHE_HIT_PERCENT] == 0.0  # 2592 tokens looked up, none hit
    assert row[R.SERVER_PREEMPTIONS] == 0
    assert row[R.SPEC_ACCEPTANCE_PERCENT] is None  # no drafter: no spec-decode series


SPEC_TEXT = """\
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{{engine="0"}} {queries0}
vllm:prefix_cache_queries_total{{engine="1"}} {queries1}
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{{engine="0"}} {hits0}
vllm:prefix_cache_hits_total{{engine="1"}} {hits1}
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0"}} {preempted}
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{{engine="0"}} {drafted}
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{{engine="0"}} {accepted}
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0"}} {running}
"""


def test_counters_are_summed_over_engines_and_taken_as_deltas():
    start = SPEC_TEXT.format(queries0=1000, queries1=500, hits0=100, hits1=0, preempted=7,
                             drafted=4000, accepted=1000, running=3)  # fmt: skip
    # Engine 1 restarted during the trial: its counters reset, and count from 0 again.
    end = SPEC_TEXT.format(queries0=1600, queries1=200, hits0=400, hits1=50, preempted=9,
                           drafted=4800, accepted=1600, running=0)  # fmt: skip
    table, _ = capture_of((200, start), (200, end))
    row = server_columns(table, VLLM_SERVER_SERIES)
    assert row[R.SERVER_PREFIX_CACHE_HIT_PERCENT] == pytest.approx(100 * (300 + 50) / (600 + 200))
    assert row[R.SERVER_PREEMPTIONS] == 2
    assert (row[R.SERVER_SPEC_DRAFT_TOKENS], row[R.SERVER_SPEC_ACCEPTED_TOKENS]) == (800, 600)
    assert row[R.SPEC_ACCEPTANCE_PERCENT] == pytest.approx(75.0)
    assert row[R.latency_column(R.SERVER_TTFT, "mean")] is None  # not exported: not invented
    running = table[table[R.FAMILY] == "vllm:num_requests_running"].iloc[0]
    assert (running[R.START], running[R.END]) == (3.0, 0.0) and pd.isna(running[R.DELTA])


def test_histogram_quantile_follows_prometheus():
    bounds = np.array([0.1, 0.2, 0.4, math.inf])
    assert histogram_quantile(0.5, bounds, np.array([10.0, 30.0, 40.0, 40.0])) == pytest.approx(
        0.1 + 0.1 * (20 - 10) / 20
    )
    assert histogram_quantile(0.1, bounds, np.array([10.0, 30.0, 40.0, 40.0])) == pytest.approx(
        0.1 * 4 / 10  # the lowest bucket starts at 0
    )
    # The rank in the +Inf bucket: the highest finite bound.
    assert histogram_quantile(0.99, bounds, np.array([0.0, 0.0, 1.0, 10.0])) == 0.4
    # Counts torn by a concurrent observation are made monotonic.
    assert histogram_quantile(0.5, bounds, np.array([10.0, 9.0, 10.0, 10.0])) == pytest.approx(0.05)
    assert histogram_quantile(0.5, bounds, np.zeros(4)) is None
    assert histogram_quantile(0.5, bounds[:3], np.array([1.0, 2.0, 3.0])) is None  # no +Inf


@pytest.mark.parametrize(
    ("bodies", "reason"),
    [
        ([(200, "<html><body>Welcome</body></html>")], "not Prometheus text"),
        ([(200, '{"error": "no metrics here"}')], "not Prometheus text"),
        ([(200, "")], "no Prometheus sample"),
        ([(404, "Not Found")], "answered HTTP 404"),
        ([(200, END_TEXT), (500, "boom")], "answered HTTP 500"),  # the end scrape fails
    ],
)
def test_bad_metrics_leave_the_capture_empty_with_one_warning(bodies, reason, caplog):
    with caplog.at_level(logging.WARNING):
        table, gets = capture_of(*bodies)
    assert table.empty and list(table.columns) == R.SERVER_METRICS_SCHEMA.names
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # one line, no traceback
    assert gets == len(bodies)  # a failed start scrape is not followed by an end scrape
    assert server_columns(table, VLLM_SERVER_SERIES)[R.SERVER_REQUESTS] is None


def test_unreachable_metrics_are_one_warning(caplog):
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with caplog.at_level(logging.WARNING), ServerCapture(Scrape(url), now_s()) as capture:
        pass
    assert capture.table("t").num_rows == 0
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"GET {url} failed" in warning.getMessage() and warning.exc_info is None
    with pytest.raises(ScrapeError, match="failed"):
        Scrape(url)()


def test_headers_are_read_at_each_scrape_and_a_failure_is_one_warning(caplog):
    serving = Serving((200, END_TEXT))
    keys = iter(["Bearer one", "Bearer two"])
    try:
        with ServerCapture(Scrape(serving.url, lambda: {"Authorization": next(keys)}), 0.0) as c:
            pass
        assert c.table("t").num_rows == 430
        assert [h["Authorization"] for h in serving.headers] == ["Bearer one", "Bearer two"]

        def unset():
            raise BackendError("backend.headers.X names MY_TOKEN_VAR, which is not set")

        with caplog.at_level(logging.WARNING), ServerCapture(Scrape(serving.url, unset), 0.0) as c:
            pass
    finally:
        serving.close()
    assert c.table("t").num_rows == 0 and serving.gets == 2  # no GET without its headers
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "MY_TOKEN_VAR, which is not set" in warning.getMessage()


def test_without_a_server_nothing_is_scraped(caplog):
    with caplog.at_level(logging.WARNING), ServerCapture(None, now_s()) as capture:
        pass
    assert capture.table("t").num_rows == 0 and not caplog.records
    assert server_columns(None, VLLM_SERVER_SERIES)[R.SPEC_ACCEPTANCE_PERCENT] is None
