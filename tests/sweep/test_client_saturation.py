"""Trustworthy numbers: the client's self-measurement, the saturation rule, sharding, the
steady-state window, the minimum-size rules, token-count checks and repeats with intervals.

Real sim servers on 127.0.0.1; the sweep-level tests run a small sweep's trials in this process
(`run_deployment`, as a Ray task would) and write its report.
"""

import math
import re

import httpx
import numpy as np
import pandas as pd
import pytest

from analysis.read.load import load_requests, load_summary
from analysis.report.flags import trial_checks
from analysis.report.report import write_report
from sweep.core import records as R
from sweep.core.errors import ConfigError
from sweep.core.summary import summarize
from sweep.core.trust import steady_state_window, too_short
from sweep.display import print_trust_warnings
from sweep.loadgen.arrivals import arrival_offsets
from sweep.loadgen.http import run_http_workload
from sweep.loadgen.request_ids import parse as parse_id
from sweep.loadgen.saturation import ClientUsage, client_columns, is_saturated, lag_limit_ms
from tests.helpers import SMALL_CLOSED_LOOP, make_requests, run_sweep_here, workload

pytestmark = pytest.mark.timeout(180)


def trial_summary(trackers, wl):
    """What `run_trial` computes from a run: the summary with the client columns."""
    frame = pd.DataFrame([t.record("t", 0.0) for t in trackers])
    frame[R.IN_WINDOW] = steady_state_window(frame, wl)
    summary = summarize(frame, num_gpus=0, price_per_hour=1.0)
    return summary | client_columns(summary, wl, getattr(trackers, "client", None))


# --- the saturation rule ---


def test_lag_limit_per_mode():
    assert lag_limit_ms(workload(concurrency=4)) == 10.0
    assert lag_limit_ms(workload("open_loop", request_rate=10.0)) == 10.0  # gap 100 ms, capped
    assert lag_limit_ms(workload("open_loop", request_rate=200.0)) == 5.0  # the mean gap
    assert lag_limit_ms(workload("open_loop", request_rate=5000.0)) == 2.0  # timer resolution
    assert lag_limit_ms(workload("open_loop", request_rate=100.0, concurrency=4)) is None
    assert lag_limit_ms(workload("open_loop")) is None  # everything due at once
    assert lag_limit_ms(workload("offline_batch", batch_size=64)) is None


def test_saturated_by_lag_or_by_the_busiest_loop():
    idle, busy = ClientUsage((0.2,), 1.0), ClientUsage((0.5, 0.95), 1.0)
    assert not is_saturated(3.0, 10.0, idle)
    assert is_saturated(11.0, 10.0, idle)
    assert is_saturated(3.0, 10.0, busy)  # one shard's loop at 95% of a core
    assert busy.percent == pytest.approx(145.0)  # the column sums the shards
    assert not is_saturated(50.0, None, None)  # no limit (capped open loop), no CPU figure


def test_light_load_is_measured_and_not_flagged(sim):
    backend = sim(ttft_ms=5, itl_ms=5)
    wl = workload("open_loop", request_rate=20.0, num_requests=30, output_len=8)
    # A machine shared with other busy processes can deschedule any client for longer than the
    # limit, and then the flag is right to fire; one clean run of three shows the client keeps up.
    for _ in range(3):
        summary = trial_summary(run_http_workload(backend, make_requests(30, 8), [], wl), wl)
        assert summary[R.FAILED_REQUESTS] == 0
        assert 0 < summary[R.CLIENT_CPU_PERCENT] < 50
        assert 0 <= summary[R.SEND_LAG_MS_P50] <= summary[R.SEND_LAG_MS_P99]
        if summary[R.CLIENT_SATURATED] is False:
            break
    assert summary[R.CLIENT_SATURATED] is False, summary[R.SEND_LAG_MS_P99]


def test_oversized_load_saturates_the_client_and_is_flagged(sim):
    # 2000 streams due within half a second, a token every millisecond: no single loop keeps up.
    backend = sim(ttft_ms=1, itl_ms=1)
    wl = workload("open_loop", request_rate=4000.0, num_requests=2000, output_len=16)
    summary = trial_summary(run_http_workload(backend, make_requests(2000, 16), [], wl), wl)
    assert summary[R.CLIENT_SATURATED] is True
    assert summary[R.SEND_LAG_MS_P99] > lag_limit_ms(wl) or summary[R.CLIENT_CPU_PERCENT] > 90


def test_closed_loop_lag_is_the_turnaround_after_the_previous_end(sim):
    backend = sim(ttft_ms=2, itl_ms=1)
    trackers = run_http_workload(backend, make_requests(12, 4), [], workload(concurrency=3))
    ends = {t.end for t in trackers}
    # every request after the first wave of 3 was due exactly when an earlier request ended
    due_at_an_end = [t for t in trackers if t.scheduled in ends]
    assert len(due_at_an_end) == 9 and all(t.sent >= t.scheduled for t in due_at_an_end)


# --- the generator sharded into processes ---


def test_sharded_generator_merges_records_and_keeps_the_schedule(sim):
    backend = sim(ttft_ms=5, itl_ms=2)
    closed = workload(concurrency=4, num_requests=24, output_len=6, client_processes=2)
    trackers = run_http_workload(backend, make_requests(24, 6), make_requests(1, 2), closed)
    assert [t.idx for t in trackers] == list(range(24))
    assert all(t.error is None and sum(t.chunk_tokens) == 6 for t in trackers)
    assert len(trackers.client.cpu_s) == 2
    truth = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    measured = [s for rid, s in truth.items() if not parse_id(rid).warmup]
    assert len(measured) == 24 and _max_overlap(measured) <= 4
    opened = workload("open_loop", request_rate=200.0, num_requests=30, seed=3, client_processes=3)
    trackers = run_http_workload(backend, make_requests(30, 4), [], opened)
    scheduled = np.array([t.scheduled for t in trackers])
    np.testing.assert_allclose(
        scheduled - scheduled[0], arrival_offsets(30, 200.0, 1.0, 3), atol=1e-9
    )


def test_sharding_is_validated():
    with pytest.raises(ConfigError, match="client_processes"):
        workload(concurrency=2, client_processes=3)
    with pytest.raises(ConfigError, match="cannot shard"):
        workload("latency_bound", client_processes=2)


# --- steady-state window and minimum size ---


def test_steady_state_window_excludes_ramp_up_and_drain_of_a_closed_loop_run(sim):
    backend = sim(ttft_ms=100, itl_ms=20)  # long requests: a stalled client barely shows
    wl = workload(concurrency=4, num_requests=20, output_len=5, steady_state=True)
    trackers = run_http_workload(backend, make_requests(20, 5), [], wl)
    frame = pd.DataFrame([t.record("t", 0.0) for t in trackers])
    inside = steady_state_window(frame, wl)
    order = np.argsort(frame[R.SENT_S].to_numpy())
    assert inside.sum() == 12
    assert not inside[order[:4]].any() and not inside[order[-4:]].any()
    # The server's truth: the first request arrived at an idle server, the last one ended with
    # nothing else running, and halfway through each request inside, all four were running.
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    truth = {parse_id(rid).idx: s for rid, s in stamps.items()}

    def running_at(t_ns):
        return sum(s["arrival_ns"] <= t_ns < s["end_ns"] for s in truth.values())

    first, last = (truth[frame[R.REQUEST_IDX][i]] for i in (order[0], order[-1]))
    assert running_at(first["arrival_ns"] - 1) == 0 and running_at(last["end_ns"]) == 0
    for idx in frame.loc[inside, R.REQUEST_IDX]:
        assert running_at((truth[idx]["arrival_ns"] + truth[idx]["end_ns"]) // 2) == 4
    frame[R.IN_WINDOW] = inside
    summary = summarize(frame, num_gpus=0, price_per_hour=1.0)
    assert summary[R.NUM_REQUESTS] == 12 and summary[R.OUT_OF_WINDOW_REQUESTS] == 8


def test_open_loop_window_trims_each_end_of_the_schedule():
    frame = pd.DataFrame({R.SCHEDULED_S: np.arange(11.0), R.SENT_S: np.arange(11.0)})
    wl = workload("open_loop", request_rate=1.0, steady_state=True, steady_state_trim=0.2)
    assert steady_state_window(frame, wl).tolist() == [False] * 2 + [True] * 7 + [False] * 2
    assert steady_state_window(frame, workload("open_loop", request_rate=1.0)).all()  # off


def test_too_short_rules():
    summary = {R.DURATION_S: 4.0, R.COMPLETED_REQUESTS: 50, R.NUM_REQUESTS: 50}
    assert not too_short(summary, workload())
    assert too_short(summary, workload(min_duration_s=5.0))
    assert too_short(summary, workload(min_requests=51))
    assert not too_short(summary, workload(min_duration_s=4.0, min_requests=50))
    assert too_short({R.NUM_REQUESTS: 0}, workload(steady_state=True))  # an empty window


# --- token counts ---


def test_token_count_mismatches_are_counted_and_reported(sim):
    backend = sim(ttft_ms=2, itl_ms=1, usage_skew=2)
    wl = workload(concurrency=2, num_requests=6, output_len=5)
    summary = trial_summary(run_http_workload(backend, make_requests(6, 5), [], wl), wl)
    assert summary[R.COMPLETED_REQUESTS] == 6 and summary[R.OUTPUT_TOKENS_TOTAL] == 30
    assert summary[R.TOKEN_MISMATCH_REQUESTS] == 6 and summary[R.SHORT_OUTPUT_REQUESTS] == 0
    row = {R.TRIAL_ID: "t1", R.LABEL: "skewed", R.TRIAL_STATUS: R.STATUS_OK, **summary}
    (line,) = trial_checks(pd.DataFrame([row]))
    assert line.startswith("skewed (`t1`)") and "token counts differ on 6 request(s)" in line


# --- a small sweep, run in this process: summary columns, report, end-of-sweep warning ---


def run_small_sweep(out, *overrides):
    settings = ["workload.num_requests=12", "workload.output_len=4", "backend.itl_ms=1"]
    return run_sweep_here(
        out, ["backend=sim", "sweep.name=trust", *SMALL_CLOSED_LOOP, *settings, *overrides]
    )


@pytest.fixture(scope="module")
def repeated_sweep(tmp_path_factory):
    root = run_small_sweep(
        tmp_path_factory.mktemp("results"), "sweep.repeats=3", "workload.min_requests=100",
        "+sweep.grid.backend.ttft_ms=[5,200]",
    )  # fmt: skip
    write_report(root)
    return root


def test_summary_holds_the_client_and_trust_columns(repeated_sweep):
    summary = load_summary(repeated_sweep)
    assert len(summary) == 6 and (summary[R.TRIAL_STATUS] == R.STATUS_OK).all()
    assert (summary[R.CLIENT_CPU_PERCENT] > 0).all()
    assert summary[R.SEND_LAG_MS_P99].notna().all()
    assert summary[R.CLIENT_SATURATED].map(type).eq(bool).all()
    assert summary[R.TOO_SHORT].all()  # 12 completed requests, 100 required
    assert load_requests(repeated_sweep)[R.IN_WINDOW].all()


def test_repeats_table_gives_intervals_and_noise_verdicts(repeated_sweep):
    report = (repeated_sweep / "report.md").read_text()
    repeats = report.split("## Repeats", 1)[1].split("\n## ", 1)[0]
    table = [line.split("|")[1:-1] for line in repeats.splitlines() if line.startswith("| ")]
    header, rows = [c.strip() for c in table[0]], table[2:]
    assert len(rows) == 2  # two configurations at one load, three repeats each
    column = {name: [row[header.index(name)].strip() for row in rows] for name in header}
    assert column["Repeats"] == ["3", "3"]
    assert all(re.fullmatch(r"[\d.,]+ \[-?[\d.,]+, [\d.,]+\]", cell)
               for cell in column["Output tok/s, mean [95% CI]"])  # fmt: skip
    # TTFT 5 ms against 200 ms: far outside each other's intervals, even on a loaded machine
    # (against 25 ms, one repeat slowed by a busy core once widened the interval over both)
    assert sorted(column["TTFT p50 (ms) vs best at its load"]) == ["best", "higher"]
    assert "too short to trust" in report


def test_sweep_end_warning_names_the_flagged_trials(repeated_sweep, capsys):
    summary = load_summary(repeated_sweep)
    print_trust_warnings(summary)
    out = capsys.readouterr().out
    assert "warning: 6 trial(s) need a second look" in out
    assert all(label in out for label in summary[R.LABEL])
    # Lines wrap at the console's width, wherever their checks make them long.
    assert " ".join(out.split()).count("too short to trust") == 6


def test_faults_fail_requests_but_never_the_trial(tmp_path):
    root = run_small_sweep(
        tmp_path, "backend.fault_rate=1.0", "workload.timeout_s=1.0", "workload.concurrency=6",
        "backend.ttft_ms=2", "backend.seed=4",
    )  # fmt: skip
    (summary,) = load_summary(root).to_dict("records")
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK and summary[R.FAILED_REQUESTS] == 12
    errors = load_requests(root)[R.ERROR]
    kinds = {re.match(r"[a-z_]+", e).group() for e in errors}
    assert kinds >= {"http_error", "disconnect"} and math.isfinite(summary[R.WALL_S])
    assert summary[R.WALL_S] < 30  # stalls cost one timeout per wave


def _max_overlap(stamps):
    events = sorted([(s["arrival_ns"], 1) for s in stamps] + [(s["end_ns"], -1) for s in stamps])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
