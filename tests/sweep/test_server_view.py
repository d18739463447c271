"""The server's own view end to end: sim trials run as a Ray task runs them, against its truth.

The sim schedules every request on arrival and sends its first token `ttft_ms` later, then a
token every `itl_ms`; the shared trial here is stalled now and then (`stalled`), so its tokens go
out late, as on a loaded machine, but the same way on every machine. Its own histograms must say
what it did through the capture, the mapping and the summary, the files must hold the capture,
and the report must show where the time went. A /metrics that is not Prometheus text costs the
trial nothing but one warning.
"""

import contextlib
import logging
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest

import sweep.worker.trial as trial_module
from analysis.read.load import load_requests, load_server_metrics, load_summary
from analysis.report.report import write_report
from backends.process.prometheus import Scrape
from backends.sim import SimBackend
from sweep.core import records as R
from tests.helpers import own_processes, run_sweep_here

pytestmark = pytest.mark.timeout(180)

TTFT_MS, ITL_MS, OUTPUT_LEN, REQUESTS, WARMUP = 40.0, 5.0, 20, 40, 2


def run_sim(out, *overrides):
    files = []
    settings = [
        f"workload.num_requests={REQUESTS}", f"workload.warmup_requests={WARMUP}",
        "workload.concurrency=4", f"workload.output_len={OUTPUT_LEN}", "dataset.input_len=16",
        f"backend.ttft_ms={TTFT_MS}", f"backend.itl_ms={ITL_MS}",
    ]  # fmt: skip
    overrides = [
        "backend=sim",
        "workload=closed_loop",
        "sweep.name=server_view",
        *settings,
        *overrides,
    ]
    return run_sweep_here(out, overrides, files), files


@contextlib.contextmanager
def stalled(every_s: float = 0.05, for_s: float = 0.02):
    """This run's sim server stopped for `for_s` in every `every_s` (SIGSTOP, SIGCONT) while the
    block runs: a loaded machine's late timers, the same on every machine."""
    done = threading.Event()

    def stall():
        while not done.is_set() and not (servers := own_processes("backends.sim_server")):
            done.wait(0.02)
        while not done.wait(every_s - for_s):
            try:
                for server in servers:
                    server.suspend()
                time.sleep(for_s)
                for server in servers:
                    server.resume()
            except psutil.NoSuchProcess:  # the trial has ended: resume any left stopped
                for server in servers:
                    with contextlib.suppress(psutil.Error):
                        server.resume()
                return

    thread = threading.Thread(target=stall, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.fixture(scope="module")
def sim_sweep(tmp_path_factory):
    with stalled():
        root, files = run_sim(tmp_path_factory.mktemp("results"))
    write_report(root)
    return root, files


def test_the_capture_is_written_and_read_back(sim_sweep):
    root, (files,) = sim_sweep
    capture = load_server_metrics(root)
    assert len(capture) == files.server_metrics.num_rows > 100
    assert set(capture.columns) == set(R.SERVER_METRICS_SCHEMA.names)
    assert {"sim:time_to_first_token_seconds", "sim:num_requests_running"} <= set(capture[R.FAMILY])
    # Both scrapes lie outside the requests: they cost the measured load nothing.
    requests = load_requests(root)
    assert capture[R.START_T_S].max() <= requests[R.SENT_S].min()
    assert capture[R.END_T_S].min() >= requests[R.END_S].max()


def captured(root, family: str) -> tuple[float, float, pd.Series]:
    """A histogram's deltas over the trial, from its capture: the observations, their sum in ms,
    and the cumulative count at each bucket's upper bound (ms)."""
    capture = load_server_metrics(root)
    rows = capture[capture[R.FAMILY] == family].set_index(R.SAMPLE)
    buckets = rows.loc[f"{family}_bucket"].groupby(R.LE)[R.DELTA].sum().sort_index()
    buckets.index = buckets.index * 1e3
    return rows.loc[f"{family}_count", R.DELTA], rows.loc[f"{family}_sum", R.DELTA] * 1e3, buckets


def bucket_holding(buckets: pd.Series, q: float) -> tuple[float, float]:
    """The bounds (ms) of the bucket that holds the q-quantile of the observations."""
    i = int(np.searchsorted(buckets.to_numpy(), q * buckets.iloc[-1]))
    return (buckets.index[i - 1] if i else 0.0), buckets.index[i]


def test_the_sims_own_view_matches_its_schedule(sim_sweep):
    """The server's histograms through the capture and the summary: each statistic where the
    captured buckets put it, and the sim's view against two truths that hold however loaded the
    machine is. The server was stalled (`stalled`), so its tokens went out late, as on a loaded
    machine (45.1 ms for 40 beside the other pytest worker), and its histograms must say so."""
    root, _ = sim_sweep
    row = load_summary(root).iloc[0]
    col = R.latency_column
    assert row[R.TRIAL_STATUS] == R.STATUS_OK
    assert row[R.SERVER_REQUESTS] == REQUESTS + WARMUP  # the server sees the warm-up too
    views = {}  # role -> its captured count, sum (ms) and buckets
    for role, family, observations in (
        (R.SERVER_TTFT, "sim:time_to_first_token_seconds", REQUESTS + WARMUP),
        (R.SERVER_ITL, "sim:inter_token_latency_seconds", (REQUESTS + WARMUP) * (OUTPUT_LEN - 1)),
    ):
        count, total_ms, buckets = views[role] = captured(root, family)
        assert count == observations == buckets.iloc[-1]
        assert row[col(role, "mean")] == pytest.approx(total_ms / count)
        for stat, q in (("median", 0.5), ("p99", 0.99)):
            lower, upper = bucket_holding(buckets, q)
            assert lower <= row[col(role, stat)] <= upper, (role, stat, buckets[buckets.diff() > 0])
    ttft, client_ttft = row[col(R.SERVER_TTFT, "mean")], row[col("ttft", "mean")]
    # The schedule: the sim never sends a token sooner than it says (later where it was stalled:
    # 47.9-49.6 ms in four runs here).
    assert ttft >= TTFT_MS - 1
    assert row[col(R.SERVER_ITL, "mean")] >= ITL_MS - 0.5
    # The client: each first token reaches it after the server sent it. The client does not
    # record the warm-up requests, which took at most the upper bound of the highest bucket
    # that holds an observation.
    _, ttft_total_ms, buckets = views[R.SERVER_TTFT]
    _, slowest = bucket_holding(buckets, 1.0)
    assert ttft_total_ms <= client_ttft * REQUESTS + WARMUP * slowest
    assert client_ttft - ttft <= 25.0  # the network and the client
    assert row[col(R.SERVER_QUEUE, "mean")] == 0 and row[col(R.SERVER_QUEUE, "p99")] == 0
    assert row[col(R.SERVER_PREFILL, "mean")] == pytest.approx(ttft)
    # A token a chunk: a request's TPOT is the mean of its gaps, which the client saw too.
    itl = row[col(R.SERVER_ITL, "mean")]
    assert row[col(R.SERVER_TPOT, "mean")] == pytest.approx(itl, abs=0.01)
    assert itl == pytest.approx(row[col("itl", "mean")], abs=1)
    absent = (R.SERVER_PREFIX_CACHE_HIT_PERCENT, R.SERVER_PREEMPTIONS, R.SPEC_ACCEPTANCE_PERCENT)
    assert row[list(absent)].isna().all()  # the sim has none of these: not invented


def test_the_capture_costs_two_scrapes_beside_the_1_hz_sampling(sim_sweep):
    """The sim counts every GET /metrics it serves; the capture's delta covers the trial."""
    root, _ = sim_sweep
    capture = load_server_metrics(root)
    scrapes = capture[capture[R.FAMILY] == "sim:metrics_scrapes"].iloc[0]
    served = scrapes[R.DELTA] + 1  # the start scrape, counted in its own reading
    wall_s = load_summary(root).iloc[0][R.WALL_S]
    one_hz = wall_s // 1.0 + 1  # the sampler's polls, its last one at the end included
    assert 3 <= served <= 2 + one_hz + 1, (served, wall_s)


def test_the_report_shows_where_the_time_went(sim_sweep):
    root, _ = sim_sweep
    report = (root / "report.md").read_text()
    section = report.split("## Where the time went", 1)[1].split("\n## ", 1)[0]
    table = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ")]
    header, (row,) = [c.strip() for c in table[0]], table[2:]
    cell = dict(zip(header, (c.strip() for c in row), strict=True))
    assert cell["Requests (client / server)"] == f"{REQUESTS} / {REQUESTS + WARMUP}"
    server_ttft = load_summary(root).iloc[0][R.latency_column(R.SERVER_TTFT, "mean")]
    assert float(cell["Server TTFT (ms)"]) == pytest.approx(server_ttft, abs=0.051)
    assert float(cell["Server queue (ms)"]) == 0
    assert "Server counters" not in report  # the sim counts no cache, preemption or draft


class NotPrometheus(SimBackend):
    """The real sim, its /metrics looked for where the server answers something else."""

    def metrics_scrape(self):
        return Scrape(f"{self.base_url}/health")  # answers "ok"


def test_a_metrics_page_that_is_not_prometheus_costs_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(trial_module, "backend_class", lambda name: NotPrometheus)
    with caplog.at_level(logging.WARNING):
        _, (files,) = run_sim(tmp_path)
    summary = files.summary.to_pandas().iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK
    assert summary[R.COMPLETED_REQUESTS] == REQUESTS
    assert files.server_metrics.num_rows == 0
    assert pd.isna(summary[R.latency_column(R.SERVER_TTFT, "mean")])
    series = files.timeseries.to_pandas()
    assert (series[R.SOURCE] == "server").any()  # the mapped 1 Hz samples go on as before
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "not Prometheus text" in warnings[0].getMessage() and warnings[0].exc_info is None
    assert (tmp_path / "server_view" / files.deployment_id / files.trial_id
            / R.SERVER_METRICS_FILE).is_file()  # fmt: skip
