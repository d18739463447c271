"""A streamed OpenAI answer: recorded as it passes through the proxy, replayed from the cache.

`AnswerRecorder` reads the server's server-sent events alongside the client (the bytes go through
unchanged) and keeps each token-bearing chunk's text and tokens: the growth of the server's
running count where it sends one (vLLM's continuous usage stats), else one per chunk with text,
and the final usage. Only a stream that finished (`[DONE]` or a finish reason) with some text
becomes an `Answer`. `replay` renders an answer as OpenAI chunks (`completions` or `chat`) for
another request: the first chunk at once, then each chunk when the answer's tokens so far are
due at `tokens_per_s`, the running count in each chunk where the request asked for it and the
answer has the server's own, a final usage chunk where it asked for usage, then `[DONE]`. A
request asking for fewer tokens than the answer holds gets the chunks up to its limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from backends.proxy.cache import Answer


class AnswerRecorder:
    """Collects what one streamed response says, fed the bytes of each network read."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.texts: list[str] = []
        self.tokens: list[int] = []
        self.exact = True
        self.seen = 0  # the server's running count so far
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.done = False
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        """Parse the complete `data:` lines of `data`; a line that is not JSON is skipped."""
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        usage = event.get("usage")
        total = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
        choices = event.get("choices")
        if not choices:
            if total is not None:
                self.completion_tokens = total  # the final usage-only chunk
            return
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        text = _text(choice, self.api)
        if total is not None:
            grown, self.seen = total - self.seen, max(total, self.seen)
            self.completion_tokens = self.seen
            if grown <= 0 and not text:
                return
            tokens = max(grown, 0)
        else:
            if not text:
                return
            self.exact = False
            tokens = 1
        self.texts.append(text)
        self.tokens.append(tokens)

    def answer(self) -> Answer | None:
        """The answer, when the stream finished with some text; else None (not cached)."""
        if not (self.done or self.finish_reason) or not "".join(self.texts):
            return None
        return Answer(
            texts=tuple(self.texts),
            tokens=tuple(self.tokens),
            exact=self.exact and sum(self.tokens) == self.completion_tokens,
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )


def _text(choice: dict[str, Any], api: str) -> str:
    if api != "chat":
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    return delta.get("content") or ""


def replay(
    answer: Answer, body: dict[str, Any], api: str, rid: str, tokens_per_s: float | None
) -> Iterator[tuple[float, bytes]]:
    """(seconds after the first chunk it is due, SSE bytes) for each event of the replay."""
    options = body.get("stream_options") or {}
    continuous = bool(options.get("continuous_usage_stats")) and answer.exact
    cap = _output_cap(body)
    head = {
        "id": rid,
        "object": "chat.completion.chunk" if api == "chat" else "text_completion",
        "created": int(time.time()),
        "model": str(body.get("model", "")),
    }
    sent, due = 0, 0.0
    chunks = list(zip(answer.texts, answer.tokens, strict=True))
    for index, (text, tokens) in enumerate(chunks):
        if index and tokens_per_s:
            due += tokens / tokens_per_s
        sent += tokens
        last = index == len(chunks) - 1 or (cap is not None and sent >= cap)
        reason = (answer.finish_reason or "length") if last else None
        choice = (
            {"index": 0, "delta": {"content": text}, "finish_reason": reason}
            if api == "chat"
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        )
        event = {**head, "choices": [choice]}
        if continuous:
            event["usage"] = _usage(answer.prompt_tokens, sent)
        yield due, _sse(event)
        if last:
            break
    if options.get("include_usage"):
        completion = sent if answer.exact or answer.completion_tokens is None else None
        if completion is None:  # counts of the whole answer: scaled to the chunks replayed
            completion = round(answer.completion_tokens * sent / max(sum(answer.tokens), 1))
        yield due, _sse({**head, "choices": [], "usage": _usage(answer.prompt_tokens, completion)})
    yield due, b"data: [DONE]\n\n"


def _output_cap(body: dict[str, Any]) -> int | None:
    caps = [body.get(f) for f in ("max_tokens", "max_completion_tokens")]
    caps = [c for c in caps if isinstance(c, int) and c > 0]
    return min(caps) if caps else None


def _usage(prompt_tokens: int | None, completion_tokens: int) -> dict[str, int]:
    prompt = prompt_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
