"""The sim server's running set to the millisecond: two of six run, the rest wait, and the first
tokens step up a service time a pair (the helpers and schedule: `test_sim_capacity.py`).

In a file of its own: it runs `alone`, and a unit of work with an `alone` test is handed out last.
"""

import statistics

import pytest

from sweep.core import records as R
from tests.backends.test_sim_capacity import (
    SCHEDULE,
    SERVICE_MS,
    TOKENS,
    peak_overlap,
    run_polling_gauges,
    stamps_of,
)
from tests.helpers import make_requests, workload

pytestmark = pytest.mark.timeout(60)


# Times the server's clock to a few milliseconds: beside another test on two busy cores its
# prefill took 51-53 ms against the 47.5 bound (`.ci/run`, 2026-11-25 20:46 UTC, and 70.9 ms with
# three xdist workers), so nothing runs beside it.
@pytest.mark.alone
def test_two_run_at_once_the_rest_wait_and_ttft_steps_up_per_pair(sim):
    backend = sim(**SCHEDULE, max_num_seqs=2)
    rows, scrapes = run_polling_gauges(
        backend, make_requests(6, TOKENS), workload(concurrency=6, num_requests=6)
    )
    assert all(r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == TOKENS for r in rows)
    stamps = stamps_of(backend)
    assert len(stamps) == 6
    assert peak_overlap(stamps, "arrival_ns") == 6  # all six inside the server at once
    assert peak_overlap(stamps, "admitted_ns") == 2  # but exactly two running
    waits_ms = sorted((s["admitted_ns"] - s["arrival_ns"]) / 1e6 for s in stamps)
    assert waits_ms[:2] == [0.0, 0.0] and min(waits_ms[2:]) > SERVICE_MS / 2
    ends = {s["end_ns"] for s in stamps}
    assert all(s["admitted_ns"] in ends for s in stamps if s["admitted_ns"] > s["arrival_ns"])
    prefill_ms = [(s["first_token_ns"] - s["admitted_ns"]) / 1e6 for s in stamps]
    # the TTFT clock starts at admission, not arrival (a timer never fires over 0.5 ms early)
    assert min(prefill_ms) > 19 and statistics.median(prefill_ms) < 30
    assert max(prefill_ms) < SERVICE_MS / 2
    # first tokens come in pairs, one service time apart (give or take a late timer)
    firsts_ms = sorted(s["first_token_ns"] / 1e6 for s in stamps)
    pairs = [statistics.mean(firsts_ms[i : i + 2]) for i in (0, 2, 4)]
    assert pairs[1] - pairs[0] == pytest.approx(SERVICE_MS, abs=30)
    assert pairs[2] - pairs[1] == pytest.approx(SERVICE_MS, abs=30)
    # so the client's TTFTs step up by a service time a pair (at least: a busy client adds more)
    ttft_ms = sorted(r[R.TTFT_S] * 1e3 for r in rows)
    assert min(ttft_ms[2:]) > SERVICE_MS and min(ttft_ms[4:]) > 2 * SERVICE_MS
    # the gauges: never more than two running; four waiting while saturated
    assert max(s[R.RUNNING_REQUESTS] for s in scrapes if s) == 2
    assert max(s[R.WAITING_REQUESTS] for s in scrapes if s) == 4
