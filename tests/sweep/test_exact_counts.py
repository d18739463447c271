"""Exact output counts from a server that streams no usage, and where a count is an estimate.

The streams are llama-cpp-python 0.3.36's own bytes (`tests/fixtures/llama-cpp-python-0.3.36-
streams`), from its server on the tiny model's GGUF, one prompt at temperature 0 and
`max_tokens` 8: the server made 9 tokens (its unstreamed `usage` says so; the last ones ended
inside a UTF-8 character, and it ran past `max_tokens` to finish it), and without logprobs sent
the first two in one chunk, `Ӥ`. With `logprobs: 0` it sends one chunk per token, each with its
entry; its chat reply to the same prompt is 8 tokens (`usage` again). The load generator's
parsing and records run on these bytes as on a live stream (`tests/backends/test_llamacpp_server`
runs the server itself).
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from backends.base import COUNT_CHUNKS, COUNT_LOGPROBS, COUNT_USAGE, GenRequest
from sweep.core import records as R
from sweep.core.stream_chunks import EventLines, decode_event, may_carry_several, parse_event
from sweep.core.summary import summarize
from sweep.loadgen.attribution import estimated
from sweep.loadgen.http import Endpoint, _body
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.sse import StreamState

STREAMS = Path(__file__).parents[1] / "fixtures" / "llama-cpp-python-0.3.36-streams"
SPLIT = "completions-8-asked-9-sent.sse"  # its first chunk carries two tokens


def record(name, api="completions", one_per_chunk=False):
    """The request row the load generator writes for a recorded stream, fed in 64-byte reads."""
    tracker = RequestTracker(0, None, 24, 8)
    tracker.mark_sent(0.0)
    stream = StreamState(api, tracker, one_per_chunk)
    data = (STREAMS / name).read_bytes()
    for i in range(0, len(data), 64):
        stream.feed(data[i : i + 64], at=(i + 1) / 1e4)
    assert stream.done
    stream.end()
    tracker.finish(server_tokens=stream.server_tokens)
    return tracker.record("t", 0.0)


@pytest.mark.parametrize(
    ("name", "api", "tokens"),
    [
        ("completions-8-asked-9-sent-logprobs.sse", "completions", 9),
        ("chat-logprobs.sse", "chat", 8),
    ],
)
def test_logprobs_entries_count_every_token_of_a_stream_without_usage(name, api, tokens):
    for one_per_chunk in (False, True):  # entries settle it, however the stream would be read
        row = record(name, api, one_per_chunk)
        assert row[R.STATUS] == R.STATUS_OK, row[R.ERROR]
        assert row[R.OUTPUT_TOKENS] == tokens and row[R.SERVER_OUTPUT_TOKENS] is None
        assert row[R.OUTPUT_TOKENS_ESTIMATED] is False
        assert len(row[R.ITL_S]) == tokens - 1  # a chunk a token: the timing is per token too


def test_by_chunk_a_character_split_between_tokens_marks_the_count_estimated():
    row = record(SPLIT, one_per_chunk=True)
    assert row[R.OUTPUT_TOKENS] == 8 and row[R.OUTPUT_TOKENS_ESTIMATED] is True  # 9 were sent
    payloads = EventLines().feed((STREAMS / SPLIT).read_bytes())
    texts = [parse_event(decode_event(p), "completions").text for p in payloads[:-1]]
    assert texts[0] == "Ӥ" and [may_carry_several(t) for t in texts] == [True] + [False] * 8
    # the same stream without that chunk: ASCII and empty texts, one token each, exact
    exact = RequestTracker(1, None, 24, 8)
    stream = StreamState("completions", exact, one_per_chunk=True)
    for payload in payloads[1:]:
        stream.feed(b"data: " + payload + b"\n")
    exact.mark_sent(0.0)
    exact.finish()
    row = exact.record("t", 0.0)
    assert row[R.OUTPUT_TOKENS] == 7 and row[R.OUTPUT_TOKENS_ESTIMATED] is False


def test_by_chunk_a_chat_reply_counts_neither_its_role_chunk_nor_its_closing_one():
    chat = RequestTracker(0, None, 24, 8)
    stream = StreamState("chat", chat, one_per_chunk=True)
    for payload in EventLines().feed((STREAMS / "chat-logprobs.sse").read_bytes())[:-1]:
        event = decode_event(payload)
        event["choices"][0]["logprobs"] = None  # as streamed when none were asked for
        stream.feed(b"data: " + json.dumps(event).encode() + b"\n")
    chat.mark_sent(0.0)
    chat.finish()
    row = chat.record("t", 0.0)
    assert row[R.OUTPUT_TOKENS] == 8 and row[R.OUTPUT_TOKENS_ESTIMATED] is False


def test_a_stream_counted_by_its_text_is_an_estimate_and_the_summary_counts_them():
    by_text = record(SPLIT)  # no usage, no entries, not one token a chunk: the text's tokens
    assert by_text[R.OUTPUT_TOKENS_ESTIMATED] is True
    exact = record("chat-logprobs.sse", "chat")
    by_chunk = record(SPLIT, one_per_chunk=True)  # 8 of the 9 sent, and 8 asked for
    by_chunk[R.REQUESTED_OUTPUT_TOKENS] = 9  # as if 9 were: short by an estimate only
    rows = [by_text, exact, by_chunk]
    summary = summarize(pd.DataFrame(rows), num_gpus=0, price_per_hour=1.0)
    assert summary[R.ESTIMATED_OUTPUT_REQUESTS] == 2 and summary[R.SHORT_OUTPUT_REQUESTS] == 0
    old = pd.DataFrame([exact]).drop(columns=[R.OUTPUT_TOKENS_ESTIMATED])  # before the column
    assert summarize(old, num_gpus=0, price_per_hour=1.0)[R.ESTIMATED_OUTPUT_REQUESTS] is None


def test_a_count_is_an_estimate_only_where_no_server_count_covers_the_last_chunk():
    assert not estimated([None, None], 7, guessed=True)  # the final usage settles it
    assert not estimated([1, 2, 3], None, guessed=False)  # running counts to the end
    assert estimated([1, 2, None], None, guessed=False)  # the last chunk: its text
    assert estimated([1, 2, 3], None, guessed=True)  # one token a chunk, maybe more
    assert not estimated([], None, guessed=False)  # nothing came


@pytest.mark.parametrize(
    ("api", "fields"),
    [("completions", {"logprobs": 0}), ("chat", {"logprobs": True, "top_logprobs": 0})],
)
def test_requests_ask_for_logprobs_only_where_the_backend_counts_by_them(api, fields):
    request = GenRequest(0, "hello", (1, 2), 16)
    asked = _body(Endpoint("http://127.0.0.1:9", "m", api, token_counts=COUNT_LOGPROBS), request)
    assert {k: asked[k] for k in fields} == fields
    for counts in (COUNT_USAGE, COUNT_CHUNKS):
        body = _body(Endpoint("http://127.0.0.1:9", "m", api, token_counts=counts), request)
        assert "logprobs" not in body and "top_logprobs" not in body
