"""The load generator and the semantic-cache proxy read the same recorded streams alike.

The streams are vLLM 0.32.0's, recorded by `tests/fixtures/vllm-0.32.0-streams/record.py`: one
token a chunk, three a chunk, chunks of 1-3-2-5 tokens (with running counts, with token ids),
a usage-only final chunk, and a reasoning model's thinking then answer under either delta field
name. Both sides must find the same token-bearing chunks, the same tokens in each where the
server said, the same totals; and the proxy's replay of what it recorded must read, to the load
generator, as the server's own stream did.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from backends.proxy.stream import AnswerRecorder, replay
from sweep.core import records as R
from sweep.core.stream_chunks import first_answer
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


# The reasoning streams' split: the server's count of reasoning tokens (3: `<think>` and
# `</think>` are not among them) and the rest of the 8 output tokens; the chunk the answer began in.
SPLIT = {
    "chat-reasoning.sse": ((3, 5), 3),
    "chat-reasoning-content.sse": ((3, 5), 3),
    "chat-reasoning-continuous.sse": ((3, 5), 1),
    "chat-reasoning-content-3-a-chunk.sse": ((3, 5), 1),
}


class Counts(NamedTuple):
    chunks: int
    tokens: list[int]
    total: int | None
    prompt: int | None
    split: tuple[int, int]  # (reasoning, answer) tokens, as the request's record has them
    answer_chunk: int | None  # the chunk the answer began in


def api_of(name: str) -> str:
    return "chat" if name.startswith("chat") else "completions"


def loadgen_tracker(data: bytes, api: str) -> RequestTracker:
    tracker = RequestTracker(0, None, 0, 64)
    tracker.mark_sent(0.0)
    state = StreamState(api, tracker)
    for i in range(0, len(data), 7):  # network reads cut lines anywhere
        state.feed(data[i : i + 7], at=i / 1e3)
    assert state.done
    state.end()
    tracker.finish(server_tokens=state.server_tokens)
    return tracker


def through_loadgen(data: bytes, api: str) -> Counts:
    tracker = loadgen_tracker(data, api)
    record = tracker.record("trial", 0.0)
    assert record[R.REASONING_TOKENS] + record[R.ANSWER_TOKENS] == record[R.OUTPUT_TOKENS]
    return Counts(
        len(tracker.chunk_times), tracker.chunk_tokens, tracker.server_tokens,
        tracker.server_input_tokens, (record[R.REASONING_TOKENS], record[R.ANSWER_TOKENS]),
        first_answer(tracker.chunk_tokens, tracker.chunk_reasoning),
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
    assert counts.split == SPLIT.get(name, ((0, counts.total), 0))[0]
    assert counts.answer_chunk == SPLIT.get(name, (None, 0))[1]
    if answer.exact or answer.reasoning_tokens is not None:  # the server's counts: the same
        assert answer.split() == counts.split
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


@pytest.mark.parametrize("name", sorted(REASONING))
def test_time_to_the_answer_is_when_the_first_answer_chunk_was_read(name):
    data = (STREAMS / name).read_bytes()
    events = data.split(b"\n\n")
    # the event of the answer's first chunk, and the read (7 bytes each, at i ms) that ends it
    first = next(i for i, e in enumerate(events) if re.search(rb'"content":"[^"]', e))
    end = len(b"\n\n".join(events[: first + 1]))
    record = loadgen_tracker(data, "chat").record("trial", 0.0)
    assert record[R.ANSWER_S] == pytest.approx(end // 7 * 7 / 1e3)
    assert record[R.TTFT_S] < record[R.ANSWER_S] <= record[R.E2E_S]


@pytest.mark.parametrize(
    ("name", "split"),
    [
        # the running counts say each chunk's tokens: `<think>` came with the reasoning
        ("chat-reasoning-continuous.sse", (4, 4)),
        # the final count spread over 6 chunks of one word each, 3 of them reasoning
        ("chat-reasoning.sse", (4, 4)),
        # the chunk that ends the reasoning: 2 tokens, one to each part
        ("chat-reasoning-content-3-a-chunk.sse", (4, 4)),
    ],
)
def test_without_the_servers_reasoning_count_the_chunks_split_the_tokens(name, split):
    data = re.sub(rb',"completion_tokens_details":\{[^}]*\}', b"", (STREAMS / name).read_bytes())
    assert b"reasoning_tokens" not in data
    assert through_loadgen(data, "chat").split == split
    body = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    events = replay(through_proxy(data, "chat"), body, "chat", "rid", None)
    assert through_loadgen(b"".join(chunk for _, chunk in events), "chat").split == split


@pytest.mark.parametrize(
    ("name", "cap", "split"),
    [
        # running counts: the first chunk's 4 tokens are all thinking
        ("chat-reasoning-continuous.sse", 2, (4, 0)),
        ("chat-reasoning-continuous.sse", 6, (4, 2)),
        # one token a chunk recorded, 8 in all: the final count is scaled to the chunks replayed
        ("chat-reasoning-content.sse", 2, (3, 0)),  # 2 chunks: round(8 * 2 / 6) = 3 tokens
        ("chat-reasoning-content.sse", 5, (4, 3)),  # 3 of 5 chunks thinking, of 7 tokens
    ],
)
def test_a_replay_cut_short_counts_the_reasoning_it_replayed(name, cap, split):
    answer = through_proxy((STREAMS / name).read_bytes(), "chat")
    body = {"max_tokens": cap, "stream_options": {"include_usage": True}}
    replayed = b"".join(chunk for _, chunk in replay(answer, body, "chat", "rid", None))
    assert through_loadgen(replayed, "chat").split == split
