"""TGI's native stream: the event parser and the load generator's `tgi` api, on recorded bytes.

No TGI runs here (it needs docker and a GPU). The fixture below is written from TGI's documented
`/generate_stream` format (router `StreamResponse` / `StreamDetails`, axum server-sent events:
`data:` with no space, a blank line between events, `:` keep-alive comments, no `[DONE]`):
five tokens, the last one carrying `generated_text` and `details.generated_tokens`. A small
local HTTP server replays it, so the real aiohttp client parses it across network reads.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backends.base import GenRequest
from sweep.core import records as R
from sweep.core.config import WorkloadConfig
from sweep.loadgen.http import Endpoint, run_endpoint_workload
from sweep.loadgen.tgi_stream import parse_event, request_body

pytestmark = pytest.mark.timeout(60)


def _event(index, token_id, text, special=False, final=None):
    event = {
        "index": index,
        "token": {"id": token_id, "text": text, "logprob": -0.25 * index, "special": special},
        "generated_text": final,
        "details": None,
    }
    if final is not None:
        event["details"] = {"finish_reason": "length", "generated_tokens": index, "seed": None}
    return b"data:" + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


RECORDED = (
    _event(1, 578, " The")
    + _event(2, 2107, " old")
    + b":\n\n"  # axum keep-alive comment
    + _event(3, 29888, " farmer")
    + _event(4, 8988, " carried")
    + _event(5, 263, " a", final=" The old farmer carried a")
)
EOS_END = _event(1, 450, " Yes") + (
    b'data:{"index":2,"token":{"id":2,"text":"","logprob":-0.01,"special":true},'
    b'"generated_text":" Yes","details":{"finish_reason":"eos_token","generated_tokens":2,'
    b'"seed":null}}\n\n'
)
ERROR = (
    _event(1, 450, " Yes")
    + b'data:{"error":"Request failed during generation: Server error: CUDA out of memory",'
    b'"error_type":"generation"}\n\n'
)


def test_parse_event_token_final_and_error():
    first = parse_event(RECORDED.split(b"\n\n")[0][5:])
    assert first == (1, False, None, None)
    last = parse_event(RECORDED.split(b"\n\n")[-2][5:])
    assert last.tokens == 1 and last.finished and last.server_tokens == 5
    eos = parse_event(EOS_END.split(b"\n\n")[1][5:])
    assert eos == (1, True, 2, None)  # the special EOS token counts, as TGI counts it
    error = parse_event(ERROR.split(b"\n\n")[1][5:])
    assert error.tokens == 0 and "generation: Request failed" in error.error
    assert parse_event(b"{not json").error.startswith("malformed_event")
    assert parse_event(b"[1, 2]").error.startswith("malformed_event")


def test_request_body_is_tgi_native_and_greedy():
    body = request_body(GenRequest(0, "hi", (1, 2), 7))
    assert body == {
        "inputs": "hi",
        "parameters": {"max_new_tokens": 7, "details": True, "do_sample": False},
    }
    sampled = request_body(GenRequest(0, "hi", (1, 2), 7, temperature=0.7))["parameters"]
    assert sampled["do_sample"] and sampled["temperature"] == 0.7


class _Replay(BaseHTTPRequestHandler):
    """Answers POST /generate_stream with a recorded stream, in odd-sized, spaced writes."""

    def do_POST(self):  # noqa: N802 - the http.server hook's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/generate_stream" and body["parameters"]["details"]
        stream = {"eos": EOS_END, "fail": ERROR}.get(body["inputs"], RECORDED)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for start in range(0, len(stream), 37):
            self.wfile.write(stream[start : start + 37])
            self.wfile.flush()
            time.sleep(0.002)

    def log_message(self, *args):
        pass


@pytest.fixture
def replay():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_load_generator_streams_tgi_events(replay):
    requests = [
        GenRequest(0, "The old", (1, 2), 5),
        GenRequest(1, "eos", (1, 2), 5),
        GenRequest(2, "fail", (1, 2), 5),
    ]
    workload = WorkloadConfig(name="closed_loop", concurrency=3, num_requests=3, warmup_requests=0)
    trackers = run_endpoint_workload(Endpoint(replay, "unused", "tgi"), requests, [], workload)
    ok, eos, failed = (t.record("t", 0.0) for t in trackers)
    assert ok[R.STATUS] == R.STATUS_OK and ok[R.OUTPUT_TOKENS] == 5
    assert ok[R.SERVER_OUTPUT_TOKENS] == 5 and len(ok[R.ITL_S]) == 4
    # the gaps after the first token add up to the rest of the reply, however the reads fell
    assert ok[R.E2E_S] >= ok[R.TTFT_S] > 0
    assert sum(ok[R.ITL_S]) == pytest.approx(ok[R.E2E_S] - ok[R.TTFT_S], abs=1e-6)
    assert eos[R.STATUS] == R.STATUS_OK and eos[R.OUTPUT_TOKENS] == eos[R.SERVER_OUTPUT_TOKENS] == 2
    assert failed[R.STATUS] == R.STATUS_FAILED
    assert failed[R.ERROR].startswith("server_error: generation: Request failed")
