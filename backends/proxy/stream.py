"""A streamed OpenAI answer: recorded as it passes through the proxy, replayed from the cache.

`AnswerRecorder` reads the server's server-sent events alongside the client (the bytes go through
unchanged) and keeps each token-bearing chunk's answer and reasoning text and its tokens, by the
rule the load generator counts with (`sweep.core.stream_chunks`): the growth of the server's
running count where it sends one (vLLM's continuous usage stats), else one per chunk, and the
final usage. Only a stream that finished (`[DONE]` or a finish reason) with some text and no
error event becomes an `Answer`, with which share of each chunk's tokens was a reasoning model's
thinking and the server's count of those. `replay` renders an answer as OpenAI chunks
(`completions` or `chat`, the thinking under the delta field its server used, its count in the
usage's `completion_tokens_details` where the server gave one) for another request:
the first chunk at once, then each chunk when the answer's tokens so far are due at
`tokens_per_s`, the running count in each chunk where the request asked for it and the answer has
the server's own, a final usage chunk where it asked for usage, then `[DONE]`. A request asking
for fewer tokens than the answer holds gets the chunks up to its limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from backends.proxy.cache import Answer
from sweep.core.stream_chunks import (
    ANSWER,
    DONE,
    REASONING_FIELDS,
    EventError,
    EventLines,
    TokenCount,
    decode_event,
    parse_event,
)


class AnswerRecorder:
    """Collects what one streamed response says, fed the bytes of each network read."""

    def __init__(self, api: str, one_per_chunk: bool = False) -> None:
        self.api = api
        self.texts: list[str] = []
        self.reasoning: list[str] = []
        self.tokens: list[int] = []
        self.shares: list[float] = []  # the share of each chunk's tokens that were reasoning
        self.exact = True  # every recorded chunk's tokens are the server's own count
        self.failed = False  # an error event came: not an answer
        self.reasoning_field: str | None = None
        self.count = TokenCount(one_per_chunk)
        self._lines = EventLines()
        self._recorded = 0  # tokens in the recorded chunks

    @property
    def done(self) -> bool:
        """Whether `[DONE]` arrived."""
        return self.count.done

    def feed(self, data: bytes) -> None:
        """Parse the complete `data:` lines of `data`; an error event spoils the recording."""
        for payload in self._lines.feed(data):
            if payload == DONE:
                self.count.done = True
                continue
            try:
                chunk = parse_event(decode_event(payload), self.api)
            except EventError:
                self.failed = True
                continue
            self.reasoning_field = chunk.reasoning_field or self.reasoning_field
            counted = self.count.add(chunk)
            if counted is None and not chunk.text:
                continue
            if counted is None and self.texts:  # text whose tokens an earlier count included
                self.texts[-1] += chunk.answer
                self.reasoning[-1] += chunk.reasoning
                continue
            if counted is not None and counted.running is None:
                self.exact = False
            self.texts.append(chunk.answer)
            self.reasoning.append(chunk.reasoning)
            self.shares.append(counted.reasoning if counted else float(chunk.kind != ANSWER))
            self.tokens.append(self.count.seen - self._recorded)
            self._recorded = self.count.seen

    def answer(self) -> Answer | None:
        """The answer, when the stream finished with some text; else None (not cached)."""
        count = self.count
        text = "".join(self.texts) + "".join(self.reasoning)
        if self.failed or not (count.done or count.finish_reason) or not text:
            return None
        return Answer(
            texts=tuple(self.texts),
            tokens=tuple(self.tokens),
            exact=self.exact and sum(self.tokens) == count.server_tokens,
            finish_reason=count.finish_reason,
            prompt_tokens=count.prompt_tokens,
            completion_tokens=count.server_tokens,
            reasoning=tuple(self.reasoning) if any(self.reasoning) else (),
            reasoning_field=self.reasoning_field or REASONING_FIELDS[0],
            reasoning_shares=tuple(self.shares) if any(self.shares) else (),
            reasoning_tokens=count.reasoning_tokens,
        )


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
    sent, due, replayed = 0, 0.0, 0
    thoughts = answer.reasoning or ("",) * len(answer.texts)
    chunks = list(zip(answer.texts, thoughts, answer.tokens, strict=True))
    for index, (text, thought, tokens) in enumerate(chunks):
        if index and tokens_per_s:
            due += tokens / tokens_per_s
        sent += tokens
        replayed = index + 1
        last = index == len(chunks) - 1 or (cap is not None and sent >= cap)
        reason = (answer.finish_reason or "length") if last else None
        event = {**head, "choices": [_choice(text, thought, api, answer.reasoning_field, reason)]}
        if continuous:
            event["usage"] = _usage(answer.prompt_tokens, sent, _thought(answer, replayed, sent))
        yield due, _sse(event)
        if last:
            break
    if options.get("include_usage"):
        completion = sent if answer.exact or answer.completion_tokens is None else None
        if completion is None:  # counts of the whole answer: scaled to the chunks replayed
            completion = round(answer.completion_tokens * sent / max(sum(answer.tokens), 1))
        usage = _usage(answer.prompt_tokens, completion, _thought(answer, replayed, completion))
        yield due, _sse({**head, "choices": [], "usage": usage})
    yield due, b"data: [DONE]\n\n"


def _thought(answer: Answer, chunks: int, completion: int) -> int | None:
    """A replay's reasoning tokens: of the answer's first `chunks` chunks, `completion` in all.

    None where the server did not count them. The server's own count once the whole answer is
    replayed; before, the chunks' shares of their tokens, scaled as the replay's count of them is.
    """
    if answer.reasoning_tokens is None:
        return None
    if chunks >= len(answer.tokens):
        return answer.split()[0]
    thought, rest = answer.split(chunks)
    return min(round(thought * completion / max(thought + rest, 1)), completion)


def _choice(text: str, thought: str, api: str, field: str, reason: str | None) -> dict[str, Any]:
    """One chunk's choice; a chat delta holds the reasoning under `field`, as the server did."""
    if api != "chat":  # a completions stream has no reasoning field: the thinking is text
        return {"index": 0, "text": thought + text, "logprobs": None, "finish_reason": reason}
    delta = {field: thought} if thought else {}
    if text or not thought:
        delta["content"] = text
    return {"index": 0, "delta": delta, "finish_reason": reason}


def _output_cap(body: dict[str, Any]) -> int | None:
    caps = [body.get(f) for f in ("max_tokens", "max_completion_tokens")]
    caps = [c for c in caps if isinstance(c, int) and c > 0]
    return min(caps) if caps else None


def _usage(
    prompt_tokens: int | None, completion_tokens: int, reasoning_tokens: int | None = None
) -> dict[str, Any]:
    prompt = prompt_tokens or 0
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
