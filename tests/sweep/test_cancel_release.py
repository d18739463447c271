"""How soon the server let go of cancelled requests (`sweep.core.cancel_release`).

The sim lets go of a request whose client hung up at once (`--on-hang-up abort`, as vLLM
aborts it), at its next chunk (`next_write`) or only after its last token (`finish`); its stamps
say when each ended, the truth the estimate from its sampled running count is held to.
"""

import json
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from backends.process.launcher import ServerLauncher
from backends.process.prometheus import PrometheusSource
from backends.sim import SIM_METRICS
from sweep.core import records as R
from sweep.core.cancel_release import release_columns
from sweep.loadgen.http import Endpoint, run_endpoint_workload
from sweep.loadgen.request_ids import parse as parse_id
from sweep.measure.telemetry import Sampler
from tests.helpers import make_requests, workload

pytestmark = pytest.mark.timeout(90)

SAMPLE_S = 0.02


def requests_frame(rows):
    return pd.DataFrame(rows, columns=[R.SENT_S, R.END_S, R.CANCELLED, R.TIMED_OUT])


def samples_frame(rows):
    return pd.DataFrame(rows, columns=[R.T_S, R.SOURCE, R.METRIC, R.VALUE])


def test_held_requests_are_the_servers_count_beyond_the_clients():
    # Two requests from 0 to 1 s; one more cancelled at 0.1 s, which the server holds until
    # 0.4 s. Samples every 0.1 s see it held at 0.1, 0.2 and 0.3: 3 of 11 samples, one hang-up
    # in a 1 s span, so a mean of 3/11 s held (the true 0.3 s, to the samples' grain).
    requests = requests_frame([(0.0, 1.0, False, False), (0.0, 1.0, False, False),
                               (0.0, 0.1, True, False)])  # fmt: skip
    counts = [3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 0]
    samples = samples_frame(
        [(i / 10, "server", R.RUNNING_REQUESTS, n - (n == 3)) for i, n in enumerate(counts)]
        + [(i / 10, "server", R.WAITING_REQUESTS, float(n == 3)) for i, n in enumerate(counts)]
    )  # one of the three waits: running and waiting add up
    columns = release_columns(requests, samples)
    assert columns[R.CANCEL_RELEASE_MS_MEAN] == pytest.approx(3 / 11 * 1e3)
    assert columns[R.CANCEL_HELD_MAX] == 1 and columns[R.CANCEL_RELEASE_SAMPLES] == 11


def test_no_hang_up_no_columns_and_no_server_count_no_figure():
    plain = requests_frame([(0.0, 1.0, False, False)])
    assert release_columns(plain, None) == {}
    timed_out = requests_frame([(0.0, 1.0, False, False), (0.0, 0.5, False, True)])
    assert release_columns(timed_out, samples_frame([])) == {
        R.CANCEL_RELEASE_MS_MEAN: None, R.CANCEL_HELD_MAX: None, R.CANCEL_RELEASE_SAMPLES: 0,
    }  # fmt: skip


def launched_sim(on_hang_up, itl_ms, ttft_ms=5.0):
    launcher = ServerLauncher(f"sim-hang-up-{on_hang_up}")
    timing = json.dumps({"ttft_ms": ttft_ms, "itl_ms": itl_ms})

    def argv(port):
        return [
            sys.executable, "-m", "backends.sim_server", "--host", "127.0.0.1",
            "--port", str(port), "--schedule", timing, "--on-hang-up", on_hang_up,
        ]  # fmt: skip

    launcher.launch(argv, "127.0.0.1", 30.0)
    return launcher


@pytest.mark.parametrize(
    ("on_hang_up", "itl_ms", "tokens"),
    [("abort", 100, 8), ("next_write", 300, 4), ("finish", 100, 8)],
)
def test_the_release_estimate_follows_the_servers_own_stamps(on_hang_up, itl_ms, tokens):
    # Half the requests are cut at their first token; the sim ends them at once, at their next
    # chunk (itl_ms later) or with their last token ((tokens - 1) x itl_ms later).
    launcher = launched_sim(on_hang_up, itl_ms)
    try:
        endpoint = Endpoint(launcher.url, "sim", extensions=True)
        load = workload(
            concurrency=10, num_requests=10, cancel_rate=0.5, cancel_after="first_token"
        )
        source = PrometheusSource(f"{launcher.url}/metrics", SIM_METRICS)
        with Sampler([(source, SAMPLE_S)], 0.0) as sampler:  # the records' clock: t0 = 0
            trackers = run_endpoint_workload(endpoint, make_requests(10, tokens), [], load)
        stamps = httpx.get(f"{launcher.url}/sim/requests", timeout=5).json()
    finally:
        launcher.stop()
    rows = [t.record("trial", 0.0) for t in trackers]
    ended = {parse_id(rid).idx: s["end_ns"] / 1e9 for rid, s in stamps.items()}
    truth_ms = 1e3 * np.mean([ended[r[R.REQUEST_IDX]] - r[R.END_S] for r in rows if r[R.CANCELLED]])
    expected = {"abort": 0.0, "next_write": itl_ms, "finish": (tokens - 1) * itl_ms}[on_hang_up]
    assert truth_ms == pytest.approx(expected, abs=30)  # the sim did as told
    columns = release_columns(pd.DataFrame(rows), samples_frame(sampler.rows))
    assert columns[R.CANCEL_RELEASE_SAMPLES] >= 20
    assert columns[R.CANCEL_RELEASE_MS_MEAN] == pytest.approx(truth_ms, abs=60)
    if on_hang_up != "abort":
        # All five cut at once are held together for itl_ms (15 samples or more). A scrape may
        # also find a finished request still running: the sim ends it after its last chunk's
        # write, which can yield to the scrape's handler; never more than the ten sent.
        assert 5 <= columns[R.CANCEL_HELD_MAX] <= 10


def test_a_zero_delay_leaves_before_the_first_token_and_the_server_answers_none():
    # The first token would come 0.3 s after arrival; the client closes each request as soon
    # as it is sent. The sim ends what it read of them `closed` (`next_write`: its handler runs
    # on after the hang-up; it finds its client gone as it begins the reply, or at its first
    # token); a request it had not read yet when it saw the hang-up leaves no stamp at all.
    launcher = launched_sim("next_write", itl_ms=5, ttft_ms=300)
    try:
        endpoint = Endpoint(launcher.url, "sim", extensions=True)
        load = workload(concurrency=4, num_requests=4, cancel_rate=1.0)  # delay, 0 s: at once
        rows = [t.record("trial", 0.0) for t in run_endpoint_workload(
            endpoint, make_requests(4, 8), [], load
        )]  # fmt: skip
        stamps = settled(launcher.url, after=time.monotonic() + 0.35)  # past its first token
    finally:
        launcher.stop()
    for r in rows:
        assert r[R.STATUS] == R.STATUS_CANCELLED and r[R.OUTPUT_TOKENS] == 0, r
        assert r[R.FIRST_TOKEN_S] is None and r[R.TTFT_S] is None and r[R.CANCEL_S] >= 0
    assert len(stamps) <= 4 and all(s.get("outcome") == "closed" for s in stamps.values())


def settled(url, after):
    """The sim's stamps once it is `after` and every request it stamped has ended."""
    deadline = after + 10
    while True:
        time.sleep(0.05)
        stamps = httpx.get(f"{url}/sim/requests", timeout=5).json()
        if time.monotonic() >= after and all("outcome" in s for s in stamps.values()):
            return stamps
        assert time.monotonic() < deadline, stamps
