"""One streamed response's server-sent events: parsing and token accounting.

`StreamState.feed` takes the bytes of each network read, splits them into `data:` lines and
hands every token-bearing event to the request's tracker with the read's time. OpenAI events
(completions and chat) are parsed here; TGI's native events by `sweep.loadgen.tgi_stream`. A
malformed or error event raises `EventError`, which fails that request only.
"""

from __future__ import annotations

import json

from sweep.loadgen import tgi_stream
from sweep.loadgen.recorder import RequestTracker


class EventError(Exception):
    """A malformed or error event: the request fails with this message."""


class StreamState:
    """Parses one SSE stream and does its token accounting.

    With continuous usage stats (vLLM), a chunk's tokens are the growth of its cumulative
    `usage.completion_tokens`, exact even when one engine step streams several tokens; without
    them, every chunk with non-empty text counts as one token. The last usage seen is the
    server's own count. Each token-bearing event reaches the tracker as soon as it is parsed.
    """

    __slots__ = ("api", "tracker", "buffer", "seen", "server_tokens", "finished", "done")

    def __init__(self, api: str, tracker: RequestTracker) -> None:
        self.api = api
        self.tracker = tracker
        self.buffer = b""
        self.seen = 0
        self.server_tokens: int | None = None
        self.finished = False
        self.done = False

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
                self._tgi_event(payload)
                continue
            try:
                event = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise EventError(f"malformed_event: {exc.msg} in {payload[:80]!r}") from None
            if not isinstance(event, dict):
                raise EventError(f"malformed_event: not an object: {payload[:80]!r}")
            if "error" in event:
                raise EventError(f"server_error: {error_text(event['error'])}")
            self.tracker.add_tokens(self.tokens_in(event), at)
        return False

    def _tgi_event(self, payload: bytes) -> None:
        event = tgi_stream.parse_event(payload)
        if event.error is not None:
            raise EventError(event.error)
        if event.server_tokens is not None:
            self.server_tokens = event.server_tokens
        self.finished = self.finished or event.finished
        self.seen += event.tokens
        self.tracker.add_tokens(event.tokens)

    def tokens_in(self, event: dict) -> int:
        """Tokens carried by one event (0 for role-only, empty and usage-only chunks)."""
        usage = event.get("usage")
        total = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if total is not None:
            self.server_tokens = total
        choices = event.get("choices")
        if not choices:
            return 0
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finished = True
        if total is not None:
            new, self.seen = total - self.seen, max(self.seen, total)
            return max(new, 0)
        if self.api == "chat":
            text = (choice.get("delta") or {}).get("content")
        else:
            text = choice.get("text")
        count = 1 if text else 0
        self.seen += count
        return count


def error_text(error: object) -> str:
    """The message of an OpenAI-style `error` field (an object or a string)."""
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
