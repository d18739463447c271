"""The load's shape over time (`sweep.loadgen.stages`, `sweep.loadgen.ramp`): duration-bounded
trials, the ramp and stages, against a real sim server on 127.0.0.1 (its own stamps, on the same
monotonic clock, are the truth), and their bad settings as one line before any request.

Times are compared with others of the same run (the server's stamps, the requests' own span), never
with a fixed bound: the machine runs other tests at the same time.
"""

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from backends.sim import SimBackend, SimBackendConfig
from backends.sim_server.server import EARLY_NS
from sweep.core import records as R
from sweep.core.config import Config, SearchConfig, SLOConfig
from sweep.core.errors import ConfigError
from sweep.core.stage_summary import stage_summaries
from sweep.core.timeslices import time_slices
from sweep.core.trust import steady_state_window, too_short, with_window
from sweep.loadgen.arrivals import arrival_offsets
from sweep.loadgen.clock import now_s
from sweep.loadgen.http import run_http_workload
from sweep.loadgen.ramp import ramped, rate_at
from sweep.loadgen.request_ids import parse as parse_id
from sweep.loadgen.stages import open_loop_schedule
from sweep.plan.search_plan import check_search
from tests.helpers import make_requests, workload

pytestmark = pytest.mark.timeout(120)
TTFT_MS, ITL_MS = 20, 5


@pytest.fixture(scope="module")
def server():
    backend = SimBackend(SimBackendConfig(ttft_ms=TTFT_MS, itl_ms=ITL_MS), "sim-model")
    backend.start()
    yield backend
    backend.stop()


def arrivals_s(backend, before):
    """Server arrival times (s, monotonic) of the measured requests not in `before`."""
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    return sorted(
        s["arrival_ns"] / 1e9
        for rid, s in stamps.items()
        if rid not in before and not parse_id(rid).warmup
    )


def seen(backend):
    return set(httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json())


def table(trackers):
    return pa.Table.from_pylist(
        [t.record("trial", 0.0) for t in trackers], schema=R.REQUESTS_SCHEMA
    )


def frame(trackers):
    return table(trackers).to_pandas()


# --- the ramp's schedule (pure) ---


def test_linear_ramp_rises_to_the_target_then_holds_it():
    rate, ramp_s = 100.0, 10.0
    offsets = arrival_offsets(4000, rate, seed=1)
    times = np.asarray(ramped(offsets, rate, "linear", ramp_s))
    assert times[0] == 0.0 and np.all(np.diff(times) >= 0)
    counts = np.histogram(times, bins=[0, 5, 10, 15, 20])[0]
    # Offered: the integral of the rate, 100 t^2 / 20 over the ramp, then 100/s.
    assert counts[0] == pytest.approx(125, rel=0.2)
    assert counts[1] == pytest.approx(375, rel=0.12)
    assert counts[2] == pytest.approx(500, rel=0.1) and counts[3] == pytest.approx(500, rel=0.1)
    # After the ramp the schedule keeps its drawn gaps: exactly the target rate's.
    after = times >= ramp_s
    assert np.diff(times[after]) == pytest.approx(np.diff(np.asarray(offsets)[after]))
    assert (
        rate_at(5.0, "linear", rate, ramp_s) == 50.0 and rate_at(12, "linear", rate, ramp_s) == 100
    )


def test_exponential_ramp_starts_low_and_grows_by_a_constant_factor():
    rate, ramp_s, start = 100.0, 10.0, 1.0
    offsets = np.asarray(arrival_offsets(6000, rate, seed=2))
    times = np.asarray(ramped(offsets, rate, "exponential", ramp_s, start))
    counts = np.histogram(times, bins=[0, 5, 10])[0]
    # Integral of e^(kt), k = ln(100)/10: 19.7 requests in the first half, 195.4 in the second.
    assert counts[0] == pytest.approx(19.7, rel=0.4)
    assert counts[1] == pytest.approx(195.4, rel=0.15)
    # Then the target rate: the schedule 10 s - 99 / (100 k) = 7.85 s later than unramped.
    after = times >= ramp_s
    assert times[after] - offsets[after] == pytest.approx(10 - 0.99 / (np.log(100) / 10))
    assert rate_at(5.0, "exponential", rate, ramp_s, start) == pytest.approx(10.0)
    assert rate_at(0.0, "exponential", rate, ramp_s) == pytest.approx(1.0)  # a hundredth


def test_schedule_is_cut_at_the_duration_and_marks_the_ramp():
    wl = workload("open_loop", request_rate=20.0, num_requests=500, duration_s=3.0,
                  ramp="linear", ramp_s=1.0)  # fmt: skip
    offsets = open_loop_schedule(arrival_offsets(500, 20.0, seed=0), wl)
    assert max(offsets) < 3.0
    # 10 requests in the ramp (its mean rate, 10/s, for 1 s), then 20/s for 2 s.
    assert len(offsets) == pytest.approx(50, abs=8)
    assert sum(t < 1.0 for t in offsets) == pytest.approx(10, abs=4)


# --- the ramp's requests are outside the steady-state window ---


def test_ramp_requests_are_never_in_the_window():
    due = np.arange(20) * 0.1
    records = pd.DataFrame({
        R.SCHEDULED_S: due, R.SENT_S: due,
        R.PHASE: [R.PHASE_RAMP] * 5 + [R.PHASE_TARGET] * 15,
    })  # fmt: skip
    ramp = dict(ramp="linear", ramp_s=0.5, request_rate=10.0)
    off = steady_state_window(records, workload("open_loop", **ramp))
    assert off.tolist() == [False] * 5 + [True] * 15  # steady_state off: the ramp still goes
    on = steady_state_window(records, workload("open_loop", steady_state=True, **ramp))
    # The trim (10% at each end) is of the schedule after the ramp: 0.5 .. 1.9 s.
    assert on.tolist() == [False] * 7 + [True] * 11 + [False] * 2
    assert too_short({R.NUM_REQUESTS: 0}, workload("open_loop", **ramp))


def test_a_ramped_trial_measures_only_its_target_load(server):
    wl = workload("open_loop", request_rate=20.0, num_requests=60, ramp="linear", ramp_s=1.0)
    trackers = run_http_workload(server, make_requests(60, 8), [], wl)
    rows = with_window(table(trackers), wl).to_pandas()
    ramp = rows[R.PHASE] == R.PHASE_RAMP
    assert ramp.sum() == pytest.approx(10, abs=4) and not rows.loc[ramp, R.IN_WINDOW].any()
    assert rows.loc[~ramp, R.IN_WINDOW].all() and (rows[R.STATUS] == R.STATUS_OK).all()
    sent = rows[R.SENT_S] - rows[R.SENT_S].min()
    assert sent[ramp].max() < 1.1 and sent[~ramp].min() > 0.9


# --- duration-bounded trials ---


def test_open_loop_stops_sending_at_the_duration_and_lets_requests_finish(server):
    before = seen(server)
    wl = workload("open_loop", request_rate=25.0, num_requests=1000, duration_s=1.0)
    trackers = run_http_workload(server, make_requests(1000, 40), [], wl)  # ~220 ms each
    returned = now_s()
    rows = frame(trackers)
    assert len(rows) == pytest.approx(25, abs=6)  # 1000 was only the upper bound
    first = rows[R.SCHEDULED_S].min()
    assert (rows[R.SCHEDULED_S] - first).max() < 1.0
    # Requests in flight at the end finished and are recorded: none cut off.
    assert (rows[R.STATUS] == R.STATUS_OK).all() and (rows[R.OUTPUT_TOKENS] == 40).all()
    assert (rows[R.END_S] - first).max() > 1.0
    assert len(arrivals_s(server, before)) == len(rows)
    assert returned_with_the_last_request(rows, returned)


def test_closed_loop_stops_sending_at_the_duration(server):
    wl = workload("closed_loop", concurrency=4, num_requests=5000, duration_s=1.0)
    trackers = run_http_workload(server, make_requests(5000, 8), [], wl)  # ~55 ms each
    returned = now_s()
    rows = frame(trackers)
    assert 20 < len(rows) < 100
    assert (rows[R.SENT_S] - rows[R.SENT_S].min()).max() < 1.0 + 0.05
    assert (rows[R.STATUS] == R.STATUS_OK).all()
    assert rows[R.REQUEST_IDX].tolist() == list(range(len(rows)))  # none pulled and dropped
    assert returned_with_the_last_request(rows, returned)


def returned_with_the_last_request(rows: pd.DataFrame, returned: float) -> bool:
    """Whether the run ended with its last request (on the loadgen's clock), not waiting on:
    the time from the last request's end to the return is small next to the run's own span."""
    span = rows[R.END_S].max() - rows[R.SENT_S].min()
    return returned - rows[R.END_S].max() < 0.25 * span


# --- stages ---

STAGES = [
    {"request_rate": 10.0, "duration_s": 1.5},
    {"request_rate": 40.0, "duration_s": 1.5},
    {"concurrency": 3, "duration_s": 1.5},
]


@pytest.fixture(scope="module")
def staged(server):
    before = seen(server)
    wl = workload("open_loop", num_requests=400, stages=STAGES, steady_state=True)
    trackers = run_http_workload(server, make_requests(400, 8), [], wl)
    return wl, frame(trackers), arrivals_s(server, before)


def test_stages_run_in_order_at_their_own_load(staged):
    wl, rows, server_arrivals = staged
    assert rows[R.STAGE].tolist() == sorted(rows[R.STAGE])  # taken in order from one queue
    assert set(rows[R.STAGE]) == {0, 1, 2}
    start = rows[R.SENT_S].min()
    sent = rows[R.SENT_S] - start
    for index, (low, high) in enumerate([(0, 1.5), (1.5, 3.0), (3.0, 4.5)]):
        mine = sent[rows[R.STAGE] == index]
        assert mine.min() >= low - 0.05 and mine.max() < high + 0.05, (index, mine.describe())
    # The server's view: arrivals per stage window at the asked rate (loose: a busy machine).
    at = np.asarray(server_arrivals) - server_arrivals[0]
    counts = np.histogram(at, bins=[0, 1.5, 3.0, 4.5])[0]
    assert counts[0] == pytest.approx(15, abs=3) and counts[1] == pytest.approx(60, abs=6)
    # Closed loop of 3: about 3 / (20 + 7 x 5 ms) = 55 req/s, less the client's turnaround.
    assert 30 / 1.5 < counts[2] < 3 / 0.050 * 1.5
    assert (rows[R.STATUS] == R.STATUS_OK).all()


def test_each_stage_is_summarised_on_its_own(staged):
    wl, rows, _ = staged
    windowed = with_window(pa.Table.from_pandas(rows, R.REQUESTS_SCHEMA), wl).to_pandas()
    stages = stage_summaries(windowed, wl, "trial", num_gpus=0, price_per_hour=1.0)
    per = stages.to_pandas().set_index(R.STAGE)
    assert per.index.tolist() == [0, 1, 2]
    assert per[R.SEND_RATE].tolist()[:2] == pytest.approx([10.0, 40.0], rel=0.1)
    assert per[R.STAGE_CONCURRENCY].tolist()[2] == 3
    # Each stage's own steady-state window: its requests less the trimmed ends.
    inside = windowed.groupby(R.STAGE)[R.IN_WINDOW].sum()
    assert per[R.NUM_REQUESTS].tolist() == inside.tolist()
    assert (per[R.OUT_OF_WINDOW_REQUESTS] > 0).all()
    # Each stage's median TTFT is that of its own windowed requests, and no lower than the sim
    # server's schedule allows: it emits what is due within EARLY_NS (its timing error centred on
    # zero), and the client's clock starts before the server's (at the write, not the first read).
    mine = windowed[windowed[R.IN_WINDOW]].groupby(R.STAGE)[R.TTFT_S].median() * 1e3
    median = per[R.latency_column("ttft", "median")]
    assert median.tolist() == pytest.approx(mine.tolist())
    assert (median >= TTFT_MS - EARLY_NS / 1e6).all(), median
    # Time slices over the whole staged trial add up to it.
    slices = time_slices(rows).to_pandas()
    assert slices[R.REQUESTS_FINISHED].sum() == len(rows)
    assert slices[R.SLICE_OUTPUT_TOKENS].sum() == rows[R.OUTPUT_TOKENS].sum()


# --- bad settings: one line before any request ---


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stages": [{"request_rate": 2.0}]}, "workload.stages[0] has no duration_s"),
        (
            {
                "stages": [
                    {"concurrency": 2, "duration_s": 1},
                    {"request_rate": 2, "concurrency": 2, "duration_s": 1},
                ]
            },
            "workload.stages[1] must set exactly one of request_rate",
        ),  # fmt: skip
        ({"stages": [{"duration_s": 1}]}, "must set exactly one of request_rate"),
        ({"stages": [{"rate": 2, "duration_s": 1}]}, "unknown keys ['rate']"),
        ({"stages": [{"request_rate": -1, "duration_s": 1}]}, "request_rate must be > 0"),
        (
            {"stages": [{"request_rate": 2, "duration_s": 1}], "duration_s": 5},
            "unset workload.duration_s",
        ),
        ({"ramp": "linear", "request_rate": 5.0}, "needs workload.ramp_s > 0"),
        ({"ramp": "linear", "ramp_s": 2.0}, "needs workload=open_loop with a finite"),
        ({"ramp": "step", "ramp_s": 2.0, "request_rate": 5.0}, "workload.ramp='step'"),
        (
            {"ramp": "exponential", "ramp_s": 2, "request_rate": 5.0, "ramp_start_rate": 0},
            "> 0 for an exponential ramp",
        ),
        ({"duration_s": 0}, "workload.duration_s must be > 0"),
        ({"slice_s": -1}, "workload.slice_s must be > 0"),
    ],
)
def test_bad_shapes_are_one_line(values, message):
    name = "closed_loop" if "ramp" in values and "request_rate" not in values else "open_loop"
    with pytest.raises(ConfigError) as info:
        workload(name, **values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_stages_in_a_closed_loop_workload_or_a_search_are_refused():
    with pytest.raises(ConfigError, match="need workload=open_loop or closed_loop"):
        workload("throughput_bound", stages=[{"concurrency": 2, "duration_s": 1}])
    base = Config(
        workload=workload("open_loop", stages=[{"request_rate": 2, "duration_s": 1}]),
        search=SearchConfig(mode="capacity"),
        slo=SLOConfig(ttft_ms_p99=100),
    )
    with pytest.raises(ConfigError, match="workload.stages set their own"):
        check_search(base, [])
