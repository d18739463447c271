"""Metrics per time slice (`sweep.core.timeslices`): windows add up to the trial, values exact.

Records are built by the real tracker (`RequestTracker.record`) from hand-placed chunk times,
so every window's expected value is known; the real load generator's records are checked
against the sim server in tests/sweep/test_stages.py and end to end in tests/e2e.
"""

import numpy as np
import pandas as pd
import pytest

from sweep.core import records as R
from sweep.core.summary import summarize
from sweep.core.timeslices import slice_length, time_slices
from sweep.loadgen.recorder import RequestTracker


def request(idx, sent, chunks, fail=None):
    """A request sent at `sent` whose token-bearing chunks arrive at (time, running count)."""
    tracker = RequestTracker(idx, None, 16, chunks[-1][1] if chunks else 4)
    tracker.mark_sent(sent)
    for at, count in chunks:
        tracker.add_chunk("", count, at)
    if fail:
        tracker.fail(fail, at=sent + 0.35)
    else:
        tracker.finish(server_tokens=chunks[-1][1])
    return tracker.record("t", 0.0)


@pytest.fixture
def records():
    rows = [
        request(0, 1.0, [(1.05, 1), (1.15, 2), (1.25, 3), (1.35, 4)]),  # all in [1.0, 1.5)
        request(1, 1.2, [(1.6, 2), (1.8, 3), (2.6, 4)]),  # first chunk of 2, ends at 2.6
        request(2, 2.1, [(2.2, 1)], fail="disconnect: gone"),  # failed at 2.45
        request(3, 2.3, [(2.4, 1), (2.45, 5), (3.2, 6)]),  # a chunk of 4 tokens
    ]
    return pd.DataFrame(rows)


def test_windows_add_up_to_the_trial(records):
    slices = time_slices(records, slice_s=0.5, trial_id="t").to_pandas()
    assert list(slices.columns) == R.TIMESLICES_SCHEMA.names
    summary = summarize(records, num_gpus=0, price_per_hour=1.0)
    assert slices[R.REQUESTS_STARTED].sum() == 4
    assert slices[R.REQUESTS_FINISHED].sum() == summary[R.COMPLETED_REQUESTS] == 3
    assert slices[R.REQUESTS_FAILED].sum() == summary[R.FAILED_REQUESTS] == 1
    assert slices[R.SLICE_OUTPUT_TOKENS].sum() == summary[R.OUTPUT_TOKENS_TOTAL] == 14
    assert (slices[R.TRIAL_ID] == "t").all()


def test_each_window_counts_what_happened_in_it(records):
    slices = time_slices(records, slice_s=0.5).to_pandas()
    # From the first send (1.0) to the last end (3.2): windows [1.0, 1.5), ..., [3.0, 3.5).
    assert slices[R.SLICE_START_S].tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert slices[R.SLICE_END_S].iloc[-1] == pytest.approx(3.5)
    assert slices[R.REQUESTS_STARTED].tolist() == [2, 0, 2, 0, 0]
    assert slices[R.REQUESTS_FINISHED].tolist() == [1, 0, 0, 1, 1]
    assert slices[R.REQUESTS_FAILED].tolist() == [0, 0, 1, 0, 0]
    assert slices[R.REQUESTS_IN_FLIGHT].tolist() == [1, 1, 2, 1, 0]
    # Tokens where they arrived; the failed request's are not the trial's output.
    assert slices[R.SLICE_OUTPUT_TOKENS].tolist() == [4, 3, 5, 1, 1]
    assert slices[R.SLICE_OUTPUT_THROUGHPUT].tolist() == pytest.approx([8, 6, 10, 2, 2])


def test_latency_percentiles_of_each_window(records):
    slices = time_slices(records, slice_s=0.5).to_pandas()
    ttft = slices[R.latency_column("ttft", "median")]
    # TTFT by send: 50 and 400 ms in the first window, 100 ms in the third (2 failed).
    assert ttft[0] == pytest.approx(225.0)
    assert slices[R.latency_column("ttft", "p99")][0] == pytest.approx(50 + 0.99 * 350)
    assert np.isnan(ttft[1]) and ttft[2] == pytest.approx(100.0)
    itl = slices[R.latency_column("itl", "median")]
    # Gaps ending in [1.0, 1.5): request 0's three of 100 ms; in [2.0, 2.5): request 3's four
    # of 12.5 ms (one chunk of 4 tokens after 50 ms); 800 ms and 750 ms later on.
    assert itl[0] == pytest.approx(100.0)
    assert itl[2] == pytest.approx(12.5)
    assert slices[R.latency_column("itl", "p99")][1] == pytest.approx(200.0)
    assert itl[3] == pytest.approx(800.0) and itl[4] == pytest.approx(750.0)


def test_server_telemetry_is_averaged_per_window(records):
    samples = pd.DataFrame(
        {
            R.TRIAL_ID: "t",
            R.T_S: [0.5, 1.1, 1.3, 2.2, 3.4],  # the first is before the load began
            R.SOURCE: "server",
            R.METRIC: [R.KV_CACHE_USAGE_PERCENT] * 4 + [R.WAITING_REQUESTS],
            R.VALUE: [99.0, 10.0, 30.0, 50.0, 3.0],
        }
    )
    slices = time_slices(records, samples, slice_s=0.5).to_pandas()
    kv = slices[R.SLICE_KV_CACHE_USAGE].tolist()
    assert kv[0] == 20.0 and kv[2] == 50.0 and np.isnan(kv[1])
    assert slices[R.SLICE_WAITING_REQUESTS].tolist()[-1] == 3.0
    assert slices[R.SLICE_WAITING_REQUESTS].isna().sum() == 4


def test_default_window_is_a_round_twentieth_of_the_trial():
    assert slice_length(3.0) == pytest.approx(0.1)
    assert slice_length(600.0) == 20.0
    assert slice_length(45.0) == 2.0
    assert slice_length(100.0) == 5.0
    assert slice_length(0.0) == 1.0
    assert slice_length(600.0, slice_s=7.5) == 7.5


def test_a_trial_without_sends_has_no_windows():
    empty = pd.DataFrame(columns=R.REQUESTS_SCHEMA.names)
    table = time_slices(empty, slice_s=1.0)
    assert table.num_rows == 0 and table.schema == R.TIMESLICES_SCHEMA
