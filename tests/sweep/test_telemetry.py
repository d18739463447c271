"""The trial's telemetry sampler: each source at its own interval, a last poll, closing."""

import subprocess
import sys
import time

import psutil

from sweep.core import records as R
from sweep.loadgen.clock import now_s
from sweep.measure.telemetry import Sampler, process_source


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


def test_process_cpu_counts_the_children_busy_between_polls():
    """A child spinning on a core shows in the tree's CPU: each process keeps its own counter.

    Before, the children were found anew at every poll, and a new `psutil.Process` reads 0% on
    its first `cpu_percent`: a launched server's CPU was never counted.
    """
    source = process_source()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        spinner = psutil.Process(child.pid)
        source()  # the walk that finds it, and the start of every counter
        before, started = sum(spinner.cpu_times()[:2]), time.monotonic()
        time.sleep(1.0)
        rows = {metric: value for _, metric, value in source()}
        used = sum(spinner.cpu_times()[:2]) - before
        share = 100 * used / (time.monotonic() - started)
    finally:
        child.kill()
        child.wait()
    # what the child really had of a core in the window (all of one on a quiet machine, less
    # beside busy neighbours), not a fixed figure: the tree's CPU holds at least most of it
    assert share > 10
    assert rows[R.PROCESS_CPU_PERCENT] >= 0.8 * share


def test_process_tree_is_walked_again_only_after_the_refresh():
    source = process_source(refresh_s=0.5)
    before = {metric: value for _, metric, value in source()}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        soon = {metric: value for _, metric, value in source()}  # the tree as first walked
        time.sleep(0.5)
        later = {metric: value for _, metric, value in source()}  # walked again: the child too
    finally:
        child.kill()
        child.wait()
    rss = R.PROCESS_RSS_MB
    assert abs(soon[rss] - before[rss]) < 5
    assert later[rss] > soon[rss] + 3  # a Python interpreter's RSS
