"""Per-request trackers that turn token events, stamped by `sweep.loadgen.clock`, into records.

Records store seconds relative to the trial's start. `Trackers` hands a run's trackers on together
with the client's own CPU use (`sweep.loadgen.saturation`).
"""

from __future__ import annotations

from sweep.core import records as R
from sweep.loadgen.clock import now_s
from sweep.loadgen.saturation import ClientUsage


class RequestTracker:
    """Collects one request's send time, token-bearing chunks, end and outcome."""

    __slots__ = (
        "idx",
        "batch_idx",
        "input_tokens",
        "requested_tokens",
        "scheduled",
        "sent",
        "chunk_times",
        "chunk_tokens",
        "end",
        "server_tokens",
        "error",
    )

    def __init__(self, idx: int, batch_idx: int, input_tokens: int, requested_tokens: int):
        self.idx = idx
        self.batch_idx = batch_idx
        self.input_tokens = input_tokens
        self.requested_tokens = requested_tokens
        self.scheduled: float | None = None
        self.sent: float | None = None
        self.chunk_times: list[float] = []
        self.chunk_tokens: list[int] = []
        self.end: float | None = None
        self.server_tokens: int | None = None
        self.error: str | None = None

    def mark_sent(self, scheduled: float, sent: float | None = None) -> None:
        """Record when the request was due and when it actually went out."""
        self.scheduled = scheduled
        self.sent = scheduled if sent is None else sent

    def add_tokens(self, count: int, at: float | None = None) -> None:
        """Record a chunk carrying `count` tokens (chunks with no tokens are ignored)."""
        if count <= 0:
            return
        t = now_s() if at is None else at
        self.chunk_times.append(t)
        self.chunk_tokens.append(count)
        self.end = t

    def finish(self, server_tokens: int | None = None, at: float | None = None) -> None:
        """Mark the request complete; `server_tokens` is the engine's own count."""
        self.server_tokens = server_tokens
        if at is not None:
            self.end = at
        elif self.end is None:
            self.end = now_s()

    def fail(self, error: str, at: float | None = None) -> None:
        """Mark the request failed with a one-line reason."""
        self.error = error.splitlines()[0] if error else "unknown error"
        self.end = now_s() if at is None else at

    def record(self, trial_id: str, t0: float) -> dict[str, object]:
        """The request's row of requests.parquet, times relative to `t0`."""
        output_tokens = sum(self.chunk_tokens)
        ok = self.error is None and self.sent is not None and output_tokens > 0
        first = self.chunk_times[0] if self.chunk_times else None
        itl = _inter_token_latencies(self.chunk_times, self.chunk_tokens)
        ttft = first - self.sent if ok else None
        e2e = self.end - self.sent if ok else None
        tpot = (e2e - ttft) / (output_tokens - 1) if ok and output_tokens > 1 else None
        return {
            R.TRIAL_ID: trial_id,
            R.REQUEST_IDX: self.idx,
            R.BATCH_IDX: self.batch_idx,
            R.SCHEDULED_S: _rel(self.scheduled, t0),
            R.SENT_S: _rel(self.sent, t0),
            R.FIRST_TOKEN_S: _rel(first, t0),
            R.END_S: _rel(self.end, t0),
            R.TTFT_S: ttft,
            R.E2E_S: e2e,
            R.TPOT_S: tpot,
            R.ITL_S: itl,
            R.INPUT_TOKENS: self.input_tokens,
            R.OUTPUT_TOKENS: output_tokens,
            R.REQUESTED_OUTPUT_TOKENS: self.requested_tokens,
            R.SERVER_OUTPUT_TOKENS: self.server_tokens,
            R.STATUS: R.STATUS_OK if ok else R.STATUS_FAILED,
            R.ERROR: None if ok else (self.error or "no tokens received"),
            R.IN_WINDOW: True,  # the steady-state filter (sweep.core.trust) may clear it
        }


class Trackers(list):
    """A run's measured trackers, with what the load generator measured about itself.

    A list, so runners that do not measure their client hand back plain lists just as well.
    """

    def __init__(self, trackers=(), client: ClientUsage | None = None) -> None:
        super().__init__(trackers)
        self.client = client


def _rel(t: float | None, t0: float) -> float | None:
    return None if t is None else t - t0


def _inter_token_latencies(times: list[float], tokens: list[int]) -> list[float]:
    """Gaps between token-bearing chunks; a chunk of k tokens yields k gaps of gap / k.

    Tools that assume one token per chunk under-count ITL samples and over-state each one when
    servers batch tokens into chunks (speculative decoding, stream intervals).
    """
    gaps: list[float] = []
    for i in range(1, len(times)):
        k = tokens[i]
        gaps.extend([(times[i] - times[i - 1]) / k] * k)
    return gaps
