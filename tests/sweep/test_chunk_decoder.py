"""`read_event` (msgspec Structs) gives exactly what `parse_event(decode_event(...))` gives.

Every event of the recorded vLLM and llama-cpp-python streams in tests/fixtures, and events of
shapes the Structs do not take (which go the dict way), are read both ways and compared: the
same `Chunk`, or the same `EventError` message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.core.chunk_decoder import read_event
from sweep.core.stream_chunks import DONE, EventError, EventLines, decode_event, parse_event

FIXTURES = Path(__file__).parents[1] / "fixtures"
RECORDED = sorted(FIXTURES.glob("*-streams/*.sse"))

ODD = [
    b'{"choices": [{"index": 0, "text": " a", "finish_reason": ""}]}',
    b'{"choices": [{"index": 0, "text": null}], "usage": null}',
    b'{"choices": [{"index": 0, "text": 7}]}',
    b'{"choices": [], "usage": {"completion_tokens": 5, "prompt_tokens": 3}}',
    b'{"choices": null, "usage": 5}',
    b'{"choices": [{"delta": {"role": "assistant", "content": ""}}]}',
    b'{"choices": [{"delta": {"role": null}}]}',
    b'{"choices": [{"delta": {"reasoning": 3, "reasoning_content": "x"}}]}',
    b'{"choices": [{"delta": null, "token_ids": [1, 2]}]}',
    b'{"choices": [{"delta": {}, "logprobs": {"content": [{}, {}]}}]}',
    b'{"choices": [{"text": "x", "logprobs": {"tokens": "not a list"}}]}',
    b'{"choices": [{"text": "x"}, 5]}',
    b'{"usage": {"completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 1}}}',
    b'{"error": {"message": "engine died"}}',
    b'{"error": "plain"}',
    b"[1, 2]",
    b'{"choices": [',
    b"not json",
]


def both_ways(payload: bytes, api: str):
    results = []
    for read in (read_event, lambda p, a: parse_event(decode_event(p), a)):
        try:
            results.append(read(payload, api))
        except EventError as exc:
            results.append(("EventError", str(exc)))
    return results


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_events_read_the_same_both_ways(path):
    api = "chat" if path.name.startswith("chat") else "completions"
    payloads = [p for p in EventLines().feed(path.read_bytes()) if p != DONE]
    assert payloads
    for payload in payloads:
        fast, slow = both_ways(payload, api)
        assert fast == slow, payload


@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize("payload", ODD)
def test_odd_events_read_the_same_both_ways(payload, api):
    fast, slow = both_ways(payload, api)
    assert fast == slow
