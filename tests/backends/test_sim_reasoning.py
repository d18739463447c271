"""The sim server's reasoning phase, read by the load generator as a reasoning model's stream.

With `backend.api=chat` and `backend.reasoning_tokens=N` the sim streams N tokens of thinking
under either delta field name before the answer. The records must split every reply exactly
(N reasoning tokens, the rest answer) and time its answer as the server's own stamps
(`first_answer_ns`) do, compared as ratios, whatever the machine's speed.
"""

import json
import statistics

import httpx
import pytest

from backends.sim import SimBackendConfig
from sweep.core import records as R
from sweep.core.errors import ConfigError
from sweep.loadgen.http import run_http_workload
from sweep.loadgen.request_ids import parse as parse_id
from tests.helpers import make_requests, workload

pytestmark = pytest.mark.timeout(90)


def stream(backend, api: str, max_tokens: int) -> list[dict]:
    body = {"model": "m", "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    if api == "chat":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    with httpx.stream("POST", backend.base_url + path, json=body, timeout=5) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_the_thinking_streams_first_under_the_configured_field(sim):
    backend = sim(ttft_ms=1, itl_ms=1, tokens_per_chunk=2, api="chat", reasoning_tokens=3,
                  reasoning_field="reasoning_content")  # fmt: skip
    events = stream(backend, "chat", 6)
    deltas = [e["choices"][0]["delta"] for e in events[1:-1]]  # after the role chunk
    assert deltas == [
        {"reasoning_content": " t0 t1"},
        {"reasoning_content": " t2", "content": " t3"},  # the chunk that ends the thinking
        {"content": " t4 t5"},
    ]
    usage = events[-1]["usage"]
    assert usage["completion_tokens"] == 6
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 3}
    full = httpx.post(
        f"{backend.base_url}/v1/chat/completions", timeout=5,
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    ).json()  # fmt: skip
    message = full["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (" t0 t1 t2", " t3")
    # completions have no reasoning field: the same server streams plain text there
    assert "completion_tokens_details" not in stream(backend, "completions", 4)[-1]["usage"]


def test_a_reasoning_phase_needs_the_chat_api_and_a_known_field():
    with pytest.raises(ConfigError, match="backend.api=chat"):
        SimBackendConfig(reasoning_tokens=4)
    with pytest.raises(ConfigError, match="reasoning_field"):
        SimBackendConfig(api="chat", reasoning_tokens=4, reasoning_field="thinking")
    with pytest.raises(ConfigError, match="reasoning_tokens must be >= 0"):
        SimBackendConfig(api="chat", reasoning_tokens=-1)


@pytest.mark.parametrize(
    ("field", "per_chunk"), [("reasoning", 1), ("reasoning_content", 1), ("reasoning", 3)]
)
def test_records_split_each_reply_and_time_its_answer_as_the_server_did(sim, field, per_chunk):
    thinking, output = 10, 16
    backend = sim(ttft_ms=10, itl_ms=4, tokens_per_chunk=per_chunk, api="chat",
                  reasoning_tokens=thinking, reasoning_field=field)  # fmt: skip
    trackers = run_http_workload(
        backend, make_requests(12, output), [], workload(concurrency=3, num_requests=12)
    )
    rows = [t.record("trial", 0.0) for t in trackers]
    assert all(r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == output for r in rows)
    assert [(r[R.REASONING_TOKENS], r[R.ANSWER_TOKENS]) for r in rows] == [
        (thinking, output - thinking)
    ] * 12
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=5).json()
    truth = {parse_id(rid).idx: s for rid, s in stamps.items()}
    # the thinking the server streamed before the answer, as the client saw it and as it was
    client = [r[R.ANSWER_S] - r[R.TTFT_S] for r in rows]
    server = [(truth[r[R.REQUEST_IDX]]["first_answer_ns"] - truth[r[R.REQUEST_IDX]]
               ["first_token_ns"]) / 1e9 for r in rows]  # fmt: skip
    assert statistics.median(server) > 0
    assert statistics.median(client) / statistics.median(server) == pytest.approx(1, abs=0.25)
    # the client reads the answer after the server sent it
    waits = [(s["first_answer_ns"] - s["arrival_ns"]) / 1e9 for s in truth.values()]
    assert statistics.median(r[R.ANSWER_S] for r in rows) >= statistics.median(waits)


def test_a_reply_that_only_thinks_has_no_answer_time(sim):
    backend = sim(ttft_ms=1, itl_ms=1, api="chat", reasoning_tokens=20)
    rows = [
        t.record("trial", 0.0)
        for t in run_http_workload(backend, make_requests(2, 8), [], workload(num_requests=2))
    ]
    assert all(r[R.STATUS] == R.STATUS_OK for r in rows)
    assert [(r[R.REASONING_TOKENS], r[R.ANSWER_TOKENS], r[R.ANSWER_S]) for r in rows] == [
        (8, 0, None)
    ] * 2
