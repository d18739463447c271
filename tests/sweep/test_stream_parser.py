"""The load generator and the semantic-cache proxy read the same recorded streams alike.

The streams are vLLM 0.32.0's, recorded by `tests/fixtures/vllm-0.32.0-streams/record.py`: one
token a chunk, three a chunk, chunks of 1-3-2-5 tokens (with running counts, with token ids),
a usage-only final chunk, and a reasoning model's thinking then answer under either delta field
name. Both sides must find the same token-bearing chunks, the same tokens in each where the
server said, the same totals; and the proxy's replay of what it recorded must read, to the load
generator, as the server's own stream did.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from backends.proxy.stream import AnswerRecorder, replay
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.sse import StreamState

STREAMS = Path(__file__).parents[1] / "fixtures" / "vllm-0.32.0-streams"
# Each stream's tokens per chunk as the load generator counts them: the server's running
# counts (or token ids) where it sent them, else its final count spread over the chunks.
EXPECTED = {
    "completions-1-a-chunk.sse": [1] * 6,
    "completions-3-a-chunk.sse": [3] * 4,
    "chat-1-3-2-5.sse": [1, 3, 2, 5],
    "completions-1-3-2-5-token-ids.sse": [1, 3, 2, 5],
    "chat-1-a-chunk-final-usage.sse": [1] * 5,
    "chat-3-a-chunk-final-usage.sse": [3] * 4,
    # 8 tokens in 6 chunks: <think> and </think> sent no chunk of their own
    "chat-reasoning.sse": [1, 2, 1, 1, 2, 1],
    "chat-reasoning-content.sse": [1, 2, 1, 1, 2, 1],
    "chat-reasoning-continuous.sse": [4, 2, 1, 1],
    "chat-reasoning-content-3-a-chunk.sse": [3, 2, 3],
}
REASONING = {
    "chat-reasoning.sse": "reasoning",
    "chat-reasoning-content.sse": "reasoning_content",
    "chat-reasoning-continuous.sse": "reasoning",
    "chat-reasoning-content-3-a-chunk.sse": "reasoning_content",
}


class Counts(NamedTuple):
    chunks: int
    tokens: list[int]
    total: int | None
    prompt: int | None


def api_of(name: str) -> str:
    return "chat" if name.startswith("chat") else "completions"


def through_loadgen(data: bytes, api: str) -> Counts:
    tracker = RequestTracker(0, None, 0, 64)
    state = StreamState(api, tracker)
    for i in range(0, len(data), 7):  # network reads cut lines anywhere
        state.feed(data[i : i + 7], at=i / 1e3)
    assert state.done
    state.end()
    tracker.finish(server_tokens=state.server_tokens)
    return Counts(
        len(tracker.chunk_times), tracker.chunk_tokens, state.server_tokens,
        tracker.server_input_tokens,
    )  # fmt: skip


def through_proxy(data: bytes, api: str):
    recorder = AnswerRecorder(api)
    for i in range(0, len(data), 5):
        recorder.feed(data[i : i + 5])
    answer = recorder.answer()
    assert answer is not None
    return answer


def test_every_recorded_stream_is_checked():
    assert sorted(p.name for p in STREAMS.glob("*.sse")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_proxy_counts_a_stream_as_the_load_generator_does(name):
    data, api = (STREAMS / name).read_bytes(), api_of(name)
    counts = through_loadgen(data, api)
    answer = through_proxy(data, api)
    assert counts.tokens == EXPECTED[name] and counts.total == sum(EXPECTED[name])
    assert len(answer.tokens) == counts.chunks  # the same token-bearing chunks
    assert answer.completion_tokens == counts.total and answer.prompt_tokens == counts.prompt == 11
    if answer.exact:  # the server said each chunk's tokens: the same on both sides
        assert list(answer.tokens) == counts.tokens
    else:  # one a chunk at least, until the final count settles them
        assert answer.tokens == (1,) * counts.chunks


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_replay_of_the_recorded_answer_reads_as_the_server_stream(name):
    data, api = (STREAMS / name).read_bytes(), api_of(name)
    # running counts asked for: the replay gives them where the server's own were recorded
    options = {"include_usage": True, "continuous_usage_stats": True}
    events = replay(through_proxy(data, api), {"model": "tiny", "stream_options": options}, api,
                    "rid", None)  # fmt: skip
    replayed = b"".join(chunk for _, chunk in events)
    assert through_loadgen(replayed, api) == through_loadgen(data, api)


@pytest.mark.parametrize("name", sorted(REASONING))
def test_the_proxy_keeps_a_reasoning_models_thinking_apart_from_its_answer(name):
    data = (STREAMS / name).read_bytes()
    answer = through_proxy(data, "chat")
    assert "".join(answer.reasoning) == " Two plus two" and "".join(answer.texts) == " Four. Done"
    assert answer.reasoning_field == REASONING[name]
    replayed = b"".join(chunk for _, chunk in replay(answer, {}, "chat", "rid", None))
    assert f'"{REASONING[name]}":" Two'.encode() in replayed  # the server's own field name
    assert through_proxy(replayed, "chat").reasoning == answer.reasoning
