"""One streamed OpenAI event's bytes straight to a `stream_chunks.Chunk`, through msgspec Structs.

`read_event` is `parse_event(decode_event(payload), api)` at about half the cost: msgspec decodes
the few fields a chunk is read for into typed Structs (their leaves untyped, so any value passes
as the dict reading would take it) and skips the rest without building dicts. Whatever does not
fit the Structs (an `error` event, a non-object, a `usage` that is not an object, malformed JSON)
goes the dict way, which gives the same `Chunk` or the same `EventError`: the Structs are a
shortcut, never a second reading.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from sweep.core.stream_chunks import (
    REASONING_FIELDS,
    Chunk,
    cached_in,
    decode_event,
    entries_in,
    parse_event,
    tool_pieces,
)


class _Usage(msgspec.Struct):
    completion_tokens: Any = None
    prompt_tokens: Any = None
    completion_tokens_details: Any = None
    prompt_tokens_details: Any = None


class _Delta(msgspec.Struct):
    content: Any = None
    reasoning: Any = None
    reasoning_content: Any = None
    role: Any | UnsetType = UNSET  # only whether it is there counts
    tool_calls: Any = None


class _Choice(msgspec.Struct):
    text: Any = None
    delta: _Delta | None = None
    token_ids: Any = None
    finish_reason: Any = None
    logprobs: Any = None


class _Event(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any | UnsetType = UNSET


_DECODE = msgspec.json.Decoder(_Event).decode


def read_event(payload: bytes, api: str) -> Chunk:
    """The `Chunk` of one `data:` payload; a malformed or error event raises `EventError`."""
    try:
        event = _DECODE(payload)
    except msgspec.DecodeError:  # malformed, or a shape the Structs do not take
        return parse_event(decode_event(payload), api)
    if event.error is not UNSET:
        return parse_event(decode_event(payload), api)  # raises the server's error
    usage = event.usage
    completion = prompt = thought = cached = None
    if usage is not None:
        completion, prompt = usage.completion_tokens, usage.prompt_tokens
        details = usage.completion_tokens_details
        thought = details.get("reasoning_tokens") if isinstance(details, dict) else None
        cached = cached_in(usage.prompt_tokens_details)
    choices = event.choices
    if not choices:
        return Chunk(
            False, "", "", None, False, None, None, completion, prompt, thought,
            cached_tokens=cached,
        )  # fmt: skip
    choice = choices[0]
    ids = choice.token_ids
    ids = tuple(ids) if isinstance(ids, list) else None
    finish = choice.finish_reason or None
    logprobs = entries_in(choice.logprobs, api)
    if api != "chat":
        text = choice.text
        return Chunk(
            True, text or "", "", None, isinstance(text, str), ids, finish, completion, prompt,
            thought, logprob_tokens=logprobs,
        )  # fmt: skip
    delta = choice.delta
    field = reasoning = content = calls = None
    has_role = False
    if delta is not None:
        for name in REASONING_FIELDS:
            reasoning = getattr(delta, name)
            if isinstance(reasoning, str):
                field = name
                break
        content = delta.content
        has_role = delta.role is not UNSET
        calls = tool_pieces(delta.tool_calls) if delta.tool_calls is not None else None
    has_text = calls is not None or (
        not has_role and (isinstance(content, str) or field is not None)
    )
    return Chunk(
        True, content or "", reasoning if field else "", field, has_text, ids, finish, completion,
        prompt, thought, logprob_tokens=logprobs, tool_calls=calls, cached_tokens=cached,
    )  # fmt: skip
