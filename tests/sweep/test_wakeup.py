"""`sleep_until`: every wait ends at its time or after, never before, in time order.

Real timers of this machine, no mock: on Linux they are one timerfd per event loop; the fallback
(`asyncio.sleep`) is checked by making timerfd unavailable. How late a wake-up is, is measured
by `python -m scripts.bench.wakeups`, not asserted here.
"""

from __future__ import annotations

import asyncio
import random
import sys

import pytest

from sweep.loadgen import wakeup
from sweep.loadgen.clock import now_s
from sweep.loadgen.wakeup import sleep_until


async def _wake_times(offsets_s: list[float]) -> list[tuple[float, float]]:
    """(due, woken) of one task per offset, all waiting at once on the running loop."""
    start = now_s() + 0.01
    woken: list[tuple[float, float]] = []

    async def wait(at: float) -> None:
        await sleep_until(at)
        woken.append((at, now_s()))

    await asyncio.gather(*(wait(start + o) for o in offsets_s))
    return woken


def test_waits_end_at_their_times_never_before_and_in_order():
    offsets = [k * 0.003 for k in range(40)] + [0.05, 0.05, 0.0]  # ties and a wait of nothing
    random.Random(1).shuffle(offsets)

    async def main():
        woken = await _wake_times(offsets)
        return woken, wakeup._for_loop(asyncio.get_running_loop())

    woken, wakeups = asyncio.run(main())
    assert len(woken) == len(offsets)
    assert all(at <= t for at, t in woken), "a wait ended before its time"
    assert [at for at, _ in woken] == sorted(at for at, _ in woken), "woken out of time order"
    if sys.platform == "linux":
        assert isinstance(wakeups, wakeup.Wakeups)  # the timerfd, not asyncio's ms timeout


def test_a_time_already_past_returns_at_once():
    async def main():
        before = now_s()
        await sleep_until(before - 1.0)
        return now_s() - before

    assert asyncio.run(main()) < 0.05


def test_a_cancelled_wait_leaves_the_others_on_time():
    async def main():
        start = now_s()
        early = asyncio.create_task(sleep_until(start + 0.01))
        later = asyncio.create_task(sleep_until(start + 0.03))
        await asyncio.sleep(0)
        early.cancel()
        await later
        with pytest.raises(asyncio.CancelledError):
            await early
        return now_s() - start

    assert asyncio.run(main()) >= 0.03


def test_without_timerfd_waits_are_asyncio_sleeps(monkeypatch):
    monkeypatch.setattr(wakeup, "_timerfd", lambda: None)

    async def main():
        woken = await _wake_times([0.002, 0.01, 0.0])
        return woken, wakeup._for_loop(asyncio.get_running_loop())

    woken, wakeups = asyncio.run(main())
    assert wakeups is None
    assert all(at <= t for at, t in woken)


@pytest.mark.skipif(sys.platform != "linux", reason="counts this process's fds in /proc")
def test_each_event_loop_gives_its_timer_back_when_it_is_gone():
    """A worker runs one event loop per trial: a timerfd kept per loop would leak one a trial."""
    import gc
    import os

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    asyncio.run(sleep_until(now_s() + 0.001))  # anything made once per process, made now
    gc.collect()
    before = open_fds()
    for _ in range(20):
        asyncio.run(sleep_until(now_s() + 0.001))
    gc.collect()
    assert open_fds() <= before + 1
