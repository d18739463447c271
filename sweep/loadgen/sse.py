"""One streamed response's server-sent events: parsing, and what each event says about tokens.

`StreamState.feed` takes the bytes of each network read, splits them into `data:` lines and
hands every token-bearing event to the request's tracker with the read's time. OpenAI events
(completions and chat) are parsed here; TGI's native events by `sweep.loadgen.tgi_stream`. A
malformed or error event raises `EventError`, which fails that request only. How many tokens an
OpenAI chunk carried is settled after the request (`sweep.loadgen.attribution`): here a chunk's
text and the server's running count, when it sends one, are only kept.
"""

from __future__ import annotations

import json

from sweep.loadgen import tgi_stream
from sweep.loadgen.recorder import RequestTracker


class EventError(Exception):
    """A malformed or error event: the request fails with this message."""


class StreamState:
    """Parses one SSE stream and collects what it says about tokens.

    The usage of a chunk with choices is the server's running count (vLLM's continuous usage
    stats): such a chunk is token-bearing when the count grew; a chunk without one, when it has a
    text field, even an empty one (`carries_text`), unless it is the closing chunk with no text,
    or always (the closing one aside) from a server that streams one token per chunk. The
    last usage seen (the final usage-only chunk, when the server sends one) is the server's own
    count of the request's output, and its `prompt_tokens` of the input.
    """

    __slots__ = (
        "api", "tracker", "one_per_chunk", "buffer", "seen", "server_tokens", "finished", "done",
        "closing",
    )  # fmt: skip

    def __init__(self, api: str, tracker: RequestTracker, one_per_chunk: bool = False) -> None:
        self.api = api
        self.tracker = tracker
        self.one_per_chunk = one_per_chunk  # the server streams one token per chunk
        self.buffer = b""
        self.seen = 0  # token-bearing chunks so far, or the running count where it is larger
        self.server_tokens: int | None = None
        self.finished = False
        self.done = False
        self.closing: float | None = None  # when a closing chunk with an empty text came

    def feed(self, chunk: bytes, at: float | None = None) -> bool:
        """Handle the complete lines in `chunk`, read at `at`; True once `[DONE]` arrived."""
        lines = (self.buffer + chunk).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, SSE comments and keep-alives
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return True
            if self.api == "tgi":
                self._tgi_event(payload, at)
                continue
            try:
                event = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise EventError(f"malformed_event: {exc.msg} in {payload[:80]!r}") from None
            if not isinstance(event, dict):
                raise EventError(f"malformed_event: not an object: {payload[:80]!r}")
            if "error" in event:
                raise EventError(f"server_error: {error_text(event['error'])}")
            self._openai_event(event, at)
        return False

    def _tgi_event(self, payload: bytes, at: float | None) -> None:
        event = tgi_stream.parse_event(payload)
        if event.error is not None:
            raise EventError(event.error)
        if event.server_tokens is not None:
            self.server_tokens = event.server_tokens
        self.finished = self.finished or event.finished
        self.seen += event.tokens
        self.tracker.add_tokens(event.tokens, at)

    def _openai_event(self, event: dict, at: float | None) -> None:
        """Hand a token-bearing chunk's text and running count to the tracker."""
        usage = event.get("usage")
        total = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if total is not None:
            self.server_tokens = total
            self.tracker.server_input_tokens = usage.get("prompt_tokens")
        choices = event.get("choices")
        if not choices:
            return  # the final usage-only chunk, or a keep-alive
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finished = True
        text = chunk_text(choice, self.api)
        if total is None and self.one_per_chunk:
            if not text and self.finished:
                return  # the closing chunk: a finish reason, no token
            self.seen += 1
            self.tracker.add_chunk(text, self.seen, at)  # our running count: exact
            return
        if total is not None:
            if total <= self.seen:
                return  # the running count did not grow: no token here, whatever the text
            self.seen = total
            usage_so_far = self.tracker.chunk_usage
            if not text and usage_so_far and usage_so_far[-1] is None:
                return  # a count after text without counts is a final count (llama.cpp's)
        elif text or (not self.finished and carries_text(choice, self.api)):
            self.seen += 1  # an empty text is a token that decodes to none (vLLM: a step)
        else:
            if self.finished and carries_text(choice, self.api):
                self.closing = at  # its token, if the reply had no other (see `end`)
            return  # role-only, or a closing chunk with no text
        self.tracker.add_chunk(text, total, at)

    def end(self) -> None:
        """Give a reply whose only chunk was its closing one that chunk, if the server counted.

        A reply of one token that decodes to no text (EOS at once) arrives as one closing chunk
        with an empty text; servers that close with a chunk of their own (OpenAI's) send tokens
        before it, so the chunk is a token's only when nothing else was and the usage says one.
        """
        if not self.tracker.chunk_times and self.closing is not None and self.server_tokens:
            self.tracker.add_chunk("", None, self.closing)


def chunk_text(choice: dict, api: str) -> str:
    """The text a choice of a streamed chunk carries (a reasoning model's reasoning included)."""
    if api != "chat":
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    # vLLM streams a reasoning model's thinking apart from its answer; both are output tokens.
    return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning") or ""


def carries_text(choice: dict, api: str) -> bool:
    """Whether a chunk has a text field at all, even an empty one (not a role-only chunk).

    vLLM streams a chunk for every engine step, its text empty when the step's tokens decode to
    none yet (a special token, part of a UTF-8 character): such a chunk still carried a token.
    A chat chunk that announces the role (OpenAI's first) carries none.
    """
    if api != "chat":
        return isinstance(choice.get("text"), str)
    delta = choice.get("delta") or {}
    return "role" not in delta and isinstance(delta.get("content"), str)


def error_text(error: object) -> str:
    """The message of an OpenAI-style `error` field (an object or a string)."""
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
