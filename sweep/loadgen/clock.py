"""The one clock of the project.

Every timestamp of a trial is read here with `time.perf_counter_ns()` (CLOCK_MONOTONIC, shared by
all processes of one machine), whatever the backend, so engines are measured the same way.
"""

from __future__ import annotations

import time


def now_s() -> float:
    """Monotonic time in seconds; the only clock used for metrics."""
    return time.perf_counter_ns() / 1e9
