"""When a request counts as sent: before its bytes are written, so that time the client loses
after the write (the kernel waking the server on this core, a busy engine's threads holding both
cores) is inside its TTFT and E2E, never taken out of them.

A loopback server answers at once; the client's write is followed by a pause, as when the
writing thread is descheduled right after the system call. Stamped after the write, the request
would seem answered in a fraction of a millisecond (seen in CI: vLLM's cache misses at a median
TTFT of 0.1 ms, a replay at 1,000 tok/s faster than its pacing); stamped before, the pause counts.
"""

from __future__ import annotations

import time

from sweep.loadgen import connection
from tests.sweep.test_http_clients import Scripted, run, well_formed

PAUSE_S = 0.05


def test_a_pause_after_the_write_counts_in_the_requests_times(monkeypatch):
    write = connection.Connection.send

    def write_then_pause(self, data, reply):
        write(self, data, reply)
        time.sleep(PAUSE_S)  # the server answers meanwhile

    monkeypatch.setattr(connection.Connection, "send", write_then_pause)
    server = Scripted(well_formed)
    try:
        (tracker,) = run(server, "asyncio")
    finally:
        server.stop()
    assert tracker.error is None and len(tracker.chunk_times) == 5
    assert tracker.chunk_times[0] - tracker.sent >= PAUSE_S  # TTFT holds the pause
    (first_answer_at, _), *_ = server.writes
    assert tracker.sent <= first_answer_at  # stamped before the server could answer
    assert tracker.chunk_times[0] - tracker.sent < PAUSE_S + 5.0  # and not by some other clock
