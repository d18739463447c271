"""Waiting for a process that burns CPU and then sleeps to be done burning, as the kernel counts it.

The kernel reports a process's CPU in clock ticks, where the burner's own clock
(`time.process_time`) is exact: a burner that burned 0.8 s may read 0.79, and user plus system
time 0.3 + 0.1 reads 0.39999999999999997 in floating point. Waiting for the full figure waited out
a test's deadline (30.6 s for a test of 2 s; a tree's burner read 0.39999999999999997 of 0.4).
"""

from __future__ import annotations

import os
import time

import psutil

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used, as the kernel counts them."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def burned(pid: int, seconds: float, timeout_s: float = 30) -> None:
    """Wait until process `pid` has burned its `seconds` (less two ticks) and gone to sleep (its
    burn is over)."""
    deadline = time.monotonic() + timeout_s
    while cpu_of(pid) < seconds - 2 * TICK_S or psutil.Process(pid).status() != "sleeping":
        assert time.monotonic() < deadline, f"the burner used {cpu_of(pid):.2f} s of {seconds}"
        time.sleep(0.05)
