"""The trial's telemetry sampler: each source at its own interval, a last poll, closing."""

import time

from sweep.core import records as R
from sweep.loadgen.clock import now_s
from sweep.telemetry import Sampler, process_source


class Counting:
    """A source that counts its polls and whether it was closed."""

    def __init__(self, name):
        self.name = name
        self.polls = 0
        self.closed = False

    def __call__(self):
        self.polls += 1
        return [(self.name, "polls", float(self.polls))]

    def close(self):
        self.closed = True


def test_each_source_is_polled_at_its_own_interval_then_closed():
    fast, slow = Counting("fast"), Counting("slow")
    t0 = now_s()
    with Sampler([(fast, 0.05), (slow, 0.5)], t0) as sampler:
        time.sleep(1.2)
    assert 2 <= slow.polls <= 4  # 2 on schedule (0.5 s, 1.0 s) + the last poll at exit
    assert fast.polls >= 3 * slow.polls
    assert fast.closed and slow.closed
    times = [t for t, source, _, _ in sampler.rows if source == "slow"]
    assert times == sorted(times) and 0.45 <= times[0] <= 1.0  # not polled at once at start
    assert max(t for t, *_ in sampler.rows) >= 1.2  # the last poll, when the block ends


def test_a_failing_source_does_not_stop_the_others():
    def broken():
        raise RuntimeError("scrape failed")

    good = Counting("good")
    with Sampler([(broken, 0.05), (good, 0.05)], now_s()) as sampler:
        time.sleep(0.3)
    assert good.polls >= 2
    assert {source for _, source, _, _ in sampler.rows} == {"good"}


def test_process_source_reports_this_process():
    rows = {metric: value for _, metric, value in process_source()()}
    assert rows[R.PROCESS_RSS_MB] > 10  # a Python interpreter with pytest loaded
    assert rows[R.PROCESS_CPU_PERCENT] >= 0
