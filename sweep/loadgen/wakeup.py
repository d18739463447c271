"""Waking at an absolute time to a tenth of a millisecond, where asyncio wakes to the millisecond.

asyncio's loop waits in `epoll_wait`, whose timeout is whole milliseconds rounded up, so a send
due at t left between t and t + 1 ms: on the 2-core VM an `asyncio.sleep` woke 0.88-0.92 ms
late at the median and 1.7-1.8 ms at p90 (`scripts.bench.wakeups`), and that lateness is part
of every replayed arrival. On Linux, one timerfd per event loop, armed at the earliest time any
task waits for and watched by the same `epoll_wait`, wakes it with the kernel's high-resolution
timer instead: 0.2 ms late at the median, 0.25-0.5 ms at p90. The tail is the machine's (the
kernel's own sleep was 1.7-2.5 ms late at p99 there), not the event loop's. Where timerfd
cannot be had (another OS, a libc without it, a clock that is not CLOCK_MONOTONIC),
`sleep_until` is `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import logging
import os
import time
import weakref

from sweep.loadgen.clock import now_s

log = logging.getLogger(__name__)

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


async def sleep_until(at: float) -> None:
    """Return at `at` (the project's clock, `now_s`) or just after; at once if it has passed."""
    if at <= now_s():
        return
    wakeups = _for_loop(asyncio.get_running_loop())
    if wakeups is None:
        while (left := at - now_s()) > 0:  # asyncio may wake a hair early by its own clock
            await asyncio.sleep(left)
    else:
        await wakeups.until(at)


class Wakeups:
    """The waits of one event loop, kept in time order, woken by one timerfd.

    The timer is armed at the earliest waiting time; when it fires, every wait that is due is
    woken and the timer is armed at the next. A waiter that was cancelled is dropped when due.
    The timerfd is closed when its loop is gone (a worker runs one loop per trial).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, libc: ctypes.CDLL, fd: int) -> None:
        # No reference to the loop: kept per loop in a weak mapping, one would keep it alive.
        self._libc = libc
        self._fd = fd
        self._waits: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # equal times wake in the order they were asked for
        self._armed: float | None = None
        loop.add_reader(fd, self._fire)

    async def until(self, at: float) -> None:
        """Return when the timer has fired at or after `at`."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waits, (at, next(self._order), waiter))
        if self._armed is None or at < self._armed:
            self._arm(at)
        await waiter

    def _arm(self, at: float) -> None:
        ns = max(1, int(at * 1e9))  # 0 would disarm the timer
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(ns // 10**9, ns % 10**9))
        if self._libc.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._armed = at

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)  # the count of expirations, which says nothing we need
        except BlockingIOError:
            return
        self._armed = None
        now = now_s()
        while self._waits and self._waits[0][0] <= now:
            _, _, waiter = heapq.heappop(self._waits)
            if not waiter.done():
                waiter.set_result(None)
        if self._waits:
            self._arm(self._waits[0][0])


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Wakeups | None] = (
    weakref.WeakKeyDictionary()
)


def _for_loop(loop: asyncio.AbstractEventLoop) -> Wakeups | None:
    """The loop's `Wakeups`, made on first use; None where timerfd cannot serve."""
    if loop not in _by_loop:
        made = _timerfd()
        wakeups = None
        if made is not None:
            libc, fd = made
            try:
                wakeups = Wakeups(loop, libc, fd)
            except (NotImplementedError, OSError, ValueError):  # a loop that cannot watch fds
                os.close(fd)
            else:
                weakref.finalize(loop, os.close, fd)
        _by_loop[loop] = wakeups
    return _by_loop[loop]


def _timerfd() -> tuple[ctypes.CDLL, int] | None:
    """The C library and a new non-blocking timerfd on CLOCK_MONOTONIC; None where there is none."""
    if time.get_clock_info("perf_counter").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None  # `now_s` is another clock than the one the timer would be armed on
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create = libc.timerfd_create
    except (OSError, AttributeError):
        return None
    fd = create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
    if fd < 0:
        errno = ctypes.get_errno()
        log.debug("timerfd_create failed (errno %d): waits wake to the millisecond", errno)
        return None
    return libc, fd
