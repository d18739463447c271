"""The shared reading of one streamed chunk (`sweep.core.stream_chunks`), on vLLM 0.32.0's bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.core.stream_chunks import (
    ANSWER,
    BOTH,
    DONE,
    REASONING,
    EventError,
    EventLines,
    TokenCount,
    decode_event,
    first_answer,
    parse_event,
    reasoning_part,
    reasoning_split,
)

STREAMS = Path(__file__).parents[1] / "fixtures" / "vllm-0.32.0-streams"


def chunks(name: str, api: str = "chat"):
    payloads = EventLines().feed((STREAMS / name).read_bytes())
    assert payloads[-1] == DONE
    return [parse_event(decode_event(p), api) for p in payloads[:-1]]


@pytest.mark.parametrize(
    ("name", "field"),
    [("chat-reasoning.sse", "reasoning"), ("chat-reasoning-content.sse", "reasoning_content")],
)
def test_reasoning_deltas_under_either_name_are_output_kept_apart_from_the_answer(name, field):
    parsed = chunks(name)
    assert [c.kind for c in parsed[1:-1]] == [REASONING] * 3 + [ANSWER] * 3
    assert [c.reasoning_field for c in parsed[1:4]] == [field] * 3
    assert "".join(c.reasoning for c in parsed) == " Two plus two"
    assert "".join(c.answer for c in parsed) == " Four. Done"
    assert not parsed[0].has_text  # the role chunk carries no token
    usage = parsed[-1]
    assert not usage.has_choices and usage.completion_tokens == 8 and usage.reasoning_tokens == 3
    count = TokenCount()
    assert sum(count.add(c) is not None for c in parsed) == 6
    assert (count.server_tokens, count.reasoning_tokens, count.finish_reason) == (8, 3, "stop")


def test_the_chunk_that_ends_the_reasoning_carries_both_texts():
    parsed = chunks("chat-reasoning-content-3-a-chunk.sse")
    assert [c.kind for c in parsed[1:-1]] == [REASONING, BOTH, ANSWER]
    assert (parsed[2].reasoning, parsed[2].answer, parsed[2].text) == (
        " plus two", " Four", " plus two Four"
    )  # fmt: skip
    # vLLM 0.32 sends `"reasoning": ""` beside the first answer text: still an answer chunk
    assert chunks("chat-reasoning-continuous.sse")[2].kind == ANSWER


def test_token_ids_are_the_chunks_own_count():
    parsed = chunks("completions-1-3-2-5-token-ids.sse", "completions")
    assert [len(c.token_ids) for c in parsed[:-1]] == [1, 3, 2, 5]
    count = TokenCount()
    assert [count.add(c).running for c in parsed[:-1]] == [1, 4, 6, 11]
    assert parsed[0].answer == " the" and parsed[-1].completion_tokens == 11
    assert chunks("completions-3-a-chunk.sse", "completions")[0].token_ids is None  # null


def test_lines_split_across_reads_and_bad_events_fail_with_one_line():
    lines = EventLines()
    assert lines.feed(b'data: {"a"') == [] and lines.feed(b":1}\r\n: keep-alive\n\nda") == [
        b'{"a":1}'
    ]
    assert lines.feed(b"ta: [DONE]\n") == [DONE]
    with pytest.raises(EventError, match="^malformed_event: Expecting property name"):
        decode_event(b"{nope")
    with pytest.raises(EventError, match="^malformed_event: not an object"):
        decode_event(b"[1]")
    with pytest.raises(EventError, match="^server_error: engine died$"):
        decode_event(b'{"error": {"message": "engine died"}}')


def test_each_counted_chunk_says_its_share_of_reasoning():
    parsed = chunks("chat-reasoning-content-3-a-chunk.sse")
    count = TokenCount()
    shares = [c.reasoning for c in (count.add(p) for p in parsed) if c is not None]
    assert shares == [1.0, pytest.approx(9 / 14), 0.0]  # " plus two" beside " Four", by characters
    # a token that decodes to no text belongs to the part the reply is in
    count = TokenCount()
    thinking, empty, answer = (
        parse_event({"choices": [{"delta": d}]}, "chat")
        for d in ({"reasoning": " hm"}, {"reasoning": ""}, {"content": " yes"})
    )
    assert [count.add(c).reasoning for c in (thinking, empty, answer, empty)] == [1, 1, 0, 0]


def test_a_replys_split_and_where_its_answer_began():
    parts = ((3, 1.0), (3, 0.0), (2, 0.5), (1, 0.9), (5, 0.9))
    assert [reasoning_part(k, s) for k, s in parts] == [3, 0, 1, 0, 4]
    assert reasoning_split([3, 2, 3], [1.0, 0.5, 0.0], None) == (4, 4)
    assert reasoning_split([3, 2, 3], [1.0, 0.5, 0.0], 3) == (3, 5)  # the server's count first
    assert reasoning_split([3, 2, 3], None, None) == (0, 8)
    assert reasoning_split([4], [1.0], 9) == (4, 0)  # never more than the output
    assert first_answer([3, 2, 3], [1.0, 0.5, 0.0]) == 1
    assert first_answer([0, 2], None) == 1  # a chunk left no token is not where it began
    assert first_answer([3, 3], [1.0, 1.0]) is None  # the cap ended the thinking
