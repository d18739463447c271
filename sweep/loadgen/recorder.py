"""Per-request trackers that turn streamed chunks, stamped by `sweep.loadgen.clock`, into records.

A tracker keeps each token-bearing chunk's arrival time, text and the server's running count when
it sent one; how many tokens each chunk carried is worked out from these at the end
(`sweep.loadgen.attribution`), so streaming only appends. Records store seconds relative to the
trial's start. `Trackers` hands a run's trackers on together with the client's own CPU use
(`sweep.loadgen.saturation`).
"""

from __future__ import annotations

from sweep.core import records as R
from sweep.core.stream_chunks import first_answer, reasoning_split
from sweep.loadgen.attribution import chunk_counts, estimated
from sweep.loadgen.clock import now_s
from sweep.loadgen.saturation import ClientUsage


class RequestTracker:
    """Collects one request's send time, token-bearing chunks, end and outcome.

    `chunk_usage` holds, per chunk, the output tokens the server had counted once it sent it
    (None where it did not say); `chunk_texts` the chunk's text where re-tokenizing it may be
    needed ("" elsewhere); `chunk_weights` its re-tokenized length once `attribution.attribute`
    has run. `input_tokens` is 0 where no local tokenizer counted the prompt: the server's
    `server_input_tokens` (its `usage.prompt_tokens`) is recorded instead. A reasoning model's
    chunks say which share of their tokens was its thinking: `chunk_reasoning` holds each chunk's
    share (`stream_chunks.Counted.reasoning`) once one chunk had some (None until then: most
    replies have none), `server_reasoning_tokens` the server's own count where its usage said.
    `guessed`: some chunk's running count may be short (a one-token-per-chunk stream's,
    `sweep.loadgen.sse`). A request that ended early keeps the chunks it had: `timed_out` when
    the client gave up after `workload.timeout_s` (a failure), `cancelled` the time the client
    closed it on purpose (`sweep.loadgen.cancel`; neither ok nor failed).
    """

    __slots__ = (
        "idx",
        "batch_idx",
        "input_tokens",
        "requested_tokens",
        "scheduled",
        "sent",
        "chunk_times",
        "chunk_texts",
        "chunk_usage",
        "chunk_weights",
        "chunk_reasoning",
        "server_reasoning_tokens",
        "end",
        "closed",
        "server_tokens",
        "server_input_tokens",
        "error",
        "phase",
        "stage",
        "cache_hit",
        "guessed",
        "adapter",
        "images",
        "timed_out",
        "cancelled",
        "reply_parts",
        "structured_valid",
        "structured_error",
        "server_cached_tokens",
        "tool_pieces",
    )

    def __init__(self, idx: int, batch_idx: int, input_tokens: int, requested_tokens: int):
        self.idx = idx
        self.batch_idx = batch_idx
        self.input_tokens = input_tokens
        self.requested_tokens = requested_tokens
        self.scheduled: float | None = None
        self.sent: float | None = None
        self.chunk_times: list[float] = []
        self.chunk_texts: list[str] = []
        self.chunk_usage: list[int | None] = []
        self.chunk_weights: list[int] | None = None
        self.chunk_reasoning: list[float] | None = None
        self.server_reasoning_tokens: int | None = None
        self.end: float | None = None  # the last token (or the failure)
        self.closed: float | None = None  # when the stream ended: `[DONE]`, or its body's end
        self.server_tokens: int | None = None
        self.server_input_tokens: int | None = None
        self.error: str | None = None
        self.phase = R.PHASE_TARGET  # which part of the load sent it (`sweep.loadgen.stages`)
        self.stage: int | None = None
        self.cache_hit: bool | None = None  # a semantic-cache proxy's answer (`records.CACHE_HIT`)
        self.guessed = False
        self.adapter: str | None = None  # the LoRA adapter it asked for (`records.ADAPTER`)
        self.images = 0  # images its message carried (`records.IMAGES`)
        self.timed_out = False  # the client gave up after `workload.timeout_s`
        self.cancelled: float | None = None  # when the client closed it on purpose
        # A structured-output trial's (`sweep.loadgen.structured`): the reply's text, kept to be
        # checked (None: not kept), whether it kept to its constraint and, if not, why.
        self.reply_parts: list[str] | None = None
        self.structured_valid: bool | None = None
        self.structured_error: str | None = None
        self.server_cached_tokens: int | None = None  # the prompt's tokens its prefix cache held
        # A reply's tool-call deltas as they came: (index, id, name, piece) each (`tool_calls`).
        self.tool_pieces: list[tuple[int, str | None, str | None, str]] | None = None

    def mark_sent(self, scheduled: float, sent: float | None = None) -> None:
        """Record when the request was due and when it actually went out."""
        self.scheduled = scheduled
        self.sent = scheduled if sent is None else sent

    def add_tokens(self, count: int, at: float | None = None) -> None:
        """Record a chunk known to carry `count` tokens (chunks with no tokens are ignored)."""
        if count > 0:
            before = self.chunk_usage[-1] if self.chunk_usage else 0
            self.add_chunk("", (before or 0) + count, at)

    def add_chunk(
        self,
        text: str,
        usage: int | None = None,
        at: float | None = None,
        reasoning: float = 0.0,
        answer: str | None = None,
    ) -> None:
        """Record a token-bearing chunk: its text, the server's count, its share of reasoning.

        `usage` is the server's running count where it sent one; `reasoning` the share of the
        chunk's tokens that were a reasoning model's thinking (`stream_chunks.Counted`);
        `answer` the part of `text` that is the reply's answer, where the stream says (a
        multi-turn session keeps it for the next turn's history; None: all of `text`).
        """
        t = now_s() if at is None else at
        if self.reply_parts is not None:  # the answer, not a reasoning model's thinking
            self.reply_parts.append(text if answer is None else answer)
        if usage is not None and (not self.chunk_usage or self.chunk_usage[-1] is not None):
            text = ""  # counted exactly on its own: its text is never re-tokenized, so not kept
        if reasoning or self.chunk_reasoning is not None:
            if self.chunk_reasoning is None:
                self.chunk_reasoning = [0.0] * len(self.chunk_times)
            self.chunk_reasoning.append(reasoning)
        self.chunk_times.append(t)
        self.chunk_texts.append(text)
        self.chunk_usage.append(usage)
        self.end = t

    @property
    def freed(self) -> float | None:
        """When the request let its stream go: the stream's end, never before the last token.

        A server may end the stream well after the last token (vLLM on a busy CPU, without
        per-chunk usage: tens of ms before its usage chunk and `[DONE]`). A closed loop's next
        request cannot go before then, so that wait is the server's, not the client's lag.
        """
        if self.closed is None:
            return self.end
        return self.closed if self.end is None else max(self.end, self.closed)

    def set_weights(self, weights: list[int]) -> None:
        """Each chunk's re-tokenized length: its share where only a total count is known."""
        self.chunk_weights = weights

    @property
    def chunk_tokens(self) -> list[int]:
        """Tokens carried by each chunk, as `sweep.loadgen.attribution.chunk_counts` has it."""
        weights = self.chunk_weights
        if weights is None or len(weights) != len(self.chunk_times):
            weights = [1] * len(self.chunk_times)  # no tokenizer: spread evenly
        return chunk_counts(self.chunk_usage, self.server_tokens, weights)

    def finish(self, server_tokens: int | None = None, at: float | None = None) -> None:
        """Mark the request complete; `server_tokens` is the server's own count of its output."""
        self.server_tokens = server_tokens
        if at is not None:
            self.end = at
        elif self.end is None:
            self.end = now_s()

    def fail(self, error: str, at: float | None = None, timed_out: bool = False) -> None:
        """Mark the request failed with a one-line reason; `timed_out`: after `timeout_s`."""
        self.error = error.splitlines()[0] if error else "unknown error"
        self.end = now_s() if at is None else at
        self.timed_out = timed_out

    def cancel(self, at: float) -> None:
        """Mark the request cancelled: the client closed it at `at` (`sweep.loadgen.cancel`)."""
        self.cancelled = self.end = at

    def record(self, trial_id: str, t0: float) -> dict[str, object]:
        """The request's row of requests.parquet, times relative to `t0`."""
        # A chunk the server's count left no token for is not token-bearing after all.
        tokens, times = [], []
        counts = self.chunk_tokens
        for t, k in zip(self.chunk_times, counts, strict=True):
            if k > 0:
                times.append(t)
                tokens.append(k)
        output_tokens = sum(tokens)
        cancelled = self.cancelled is not None
        ok = not cancelled and self.error is None and self.sent is not None and output_tokens > 0
        first = times[0] if times else None
        itl = _inter_token_latencies(times, tokens)
        # A cancelled request keeps its TTFT where its first token came (the summary's is over
        # completed requests only); a failed one has no latencies.
        ttft = first - self.sent if (ok or cancelled) and first is not None else None
        e2e = self.end - self.sent if ok else None
        shares = self.chunk_reasoning
        thought, answer = reasoning_split(counts, shares, self.server_reasoning_tokens)
        answer_at = first_answer(counts, shares)
        answer_s = self.chunk_times[answer_at] - self.sent if ok and answer_at is not None else None
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
            R.INPUT_TOKENS: self.input_tokens or self.server_input_tokens,
            R.OUTPUT_TOKENS: output_tokens,
            R.REQUESTED_OUTPUT_TOKENS: self.requested_tokens,
            R.SERVER_OUTPUT_TOKENS: self.server_tokens,
            R.STATUS: _status(ok, cancelled),
            R.ERROR: None if ok or cancelled else (self.error or "no tokens received"),
            R.IN_WINDOW: True,  # the steady-state filter (sweep.core.trust) may clear it
            R.PHASE: self.phase,
            R.STAGE: self.stage,
            R.CACHE_HIT: self.cache_hit,
            R.REASONING_TOKENS: thought,
            R.ANSWER_TOKENS: answer,
            R.ANSWER_S: answer_s,
            R.OUTPUT_TOKENS_ESTIMATED: estimated(
                self.chunk_usage, self.server_tokens, self.guessed
            ),
            R.ADAPTER: self.adapter,
            R.IMAGES: self.images,
            R.SERVER_INPUT_TOKENS: self.server_input_tokens,
            R.TIMED_OUT: self.timed_out,
            R.CANCELLED: cancelled,
            R.CANCEL_S: self.cancelled - self.sent if cancelled and self.sent is not None else None,
            R.STRUCTURED_VALID: self.structured_valid if ok else None,
            R.STRUCTURED_ERROR: self.structured_error if ok else None,
            R.CACHED_INPUT_TOKENS: self.server_cached_tokens,
        }


class Trackers(list):
    """A run's measured trackers, with what the load generator measured about itself.

    A list, so runners that do not measure their client hand back plain lists just as well.
    """

    def __init__(self, trackers=(), client: ClientUsage | None = None) -> None:
        super().__init__(trackers)
        self.client = client


def _status(ok: bool, cancelled: bool) -> str:
    """A request's `records.STATUS`: cancelled by the client, else ok or failed."""
    if cancelled:
        return R.STATUS_CANCELLED
    return R.STATUS_OK if ok else R.STATUS_FAILED


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
