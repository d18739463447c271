"""One streamed response's server-sent events, handed to the request's tracker as they come.

`StreamState.feed` takes the bytes of each network read and hands every token-bearing event to
the request's tracker with the read's time. OpenAI events (completions and chat) are read by
`sweep.core.chunk_decoder` and counted by `sweep.core.stream_chunks`, the rule the
semantic-cache proxy shares; TGI's native events by `sweep.loadgen.tgi_stream`. A malformed or
error event raises `EventError`, which fails that request only. How many tokens an OpenAI chunk
carried is settled after the request (`sweep.loadgen.attribution`): here a chunk's text, the
server's running count when it sends one, and the share of its tokens that were a reasoning
model's thinking are only kept.
"""

from __future__ import annotations

from sweep.core.chunk_decoder import read_event
from sweep.core.stream_chunks import DONE, EventError, EventLines, TokenCount
from sweep.loadgen import tgi_stream
from sweep.loadgen.cancel import Cancelled
from sweep.loadgen.clock import now_s
from sweep.loadgen.recorder import RequestTracker

__all__ = ["DRAIN_S", "EventError", "StreamState"]

DRAIN_S = 1.0  # how long the end of a body after `[DONE]` is read for, to keep its connection


class StreamState:
    """Parses one SSE stream and collects what it says about tokens.

    Which OpenAI chunks carried tokens is `stream_chunks.TokenCount`'s rule; each goes to the
    tracker with the server's running count where known. The last usage seen (the final
    usage-only chunk, when the server sends one) is the server's own count of the request's
    output, and its `prompt_tokens` of the input.
    """

    __slots__ = ("api", "tracker", "lines", "count", "cut")

    def __init__(
        self,
        api: str,
        tracker: RequestTracker,
        one_per_chunk: bool = False,
        cut: int | None = None,
    ) -> None:
        """`cut`: raise `Cancelled` once this many output tokens came (`sweep.loadgen.cancel`)."""
        self.api = api
        self.tracker = tracker
        self.lines = EventLines()
        self.count = TokenCount(one_per_chunk)  # one_per_chunk: the server streams one a chunk
        self.cut = cut

    @property
    def seen(self) -> int:
        """Token-bearing chunks so far, or the server's running count where it is larger."""
        return self.count.seen

    @property
    def server_tokens(self) -> int | None:
        """The server's own count of the output, where it sent one."""
        return self.count.server_tokens

    @property
    def finished(self) -> bool:
        """Whether a chunk carried a finish reason."""
        return self.count.finished

    @property
    def done(self) -> bool:
        """Whether `[DONE]` arrived."""
        return self.count.done

    def feed(self, chunk: bytes, at: float | None = None) -> bool:
        """Handle the complete lines in `chunk`, read at `at`; True once `[DONE]` arrived.

        Raises:
            Cancelled: the request's `cut` was reached before its last token; the events after
                it, in this read or later ones, are not handled.
        """
        for payload in self.lines.feed(chunk):
            if payload == DONE:
                self.count.done = True
                return True
            if self.api == "tgi":
                self._tgi_event(payload, at)
            else:
                self._openai_event(payload, at)
            if self.cut is not None and self.count.seen >= self.cut and not self.count.finished:
                raise Cancelled(now_s(), f"after {self.count.seen} output tokens")
        return False

    def _tgi_event(self, payload: bytes, at: float | None) -> None:
        event = tgi_stream.parse_event(payload)
        if event.error is not None:
            raise EventError(event.error)
        if event.server_tokens is not None:
            self.count.server_tokens = event.server_tokens
        self.count.finished = self.count.finished or event.finished
        self.count.seen += event.tokens
        self.tracker.add_tokens(event.tokens, at)

    def _openai_event(self, payload: bytes, at: float | None) -> None:
        """Hand a token-bearing chunk's text and running count to the tracker."""
        chunk = read_event(payload, self.api)
        counted = self.count.add(chunk, at)
        if chunk.completion_tokens is not None:
            self.tracker.server_input_tokens = chunk.prompt_tokens
            self.tracker.server_reasoning_tokens = chunk.reasoning_tokens
        if chunk.cached_tokens is not None:
            self.tracker.server_cached_tokens = chunk.cached_tokens
        if chunk.tool_calls:
            if self.tracker.tool_pieces is None:
                self.tracker.tool_pieces = []
            self.tracker.tool_pieces.extend(chunk.tool_calls)
        if counted is not None:
            self.tracker.add_chunk(
                chunk.text, counted.running, at, counted.reasoning, answer=chunk.answer
            )
            self.tracker.guessed = self.count.guessed

    def end(self) -> None:
        """Give a reply whose only chunk was its closing one that chunk, if the server counted.

        A reply of one token that decodes to no text (EOS at once) arrives as one closing chunk
        with an empty text; servers that close with a chunk of their own (OpenAI's) send tokens
        before it, so the chunk is a token's only when nothing else was and the usage says one.
        """
        lone = self.count.lone_closing()
        if lone is not None:
            self.tracker.add_chunk("", None, lone.at, lone.reasoning)
