"""Any OpenAI-compatible endpoint: request bodies by capability, headers and body fields, errors.

Real HTTP on 127.0.0.1 against `tests.strict_server`, which answers 400 to any field it does not
know, as OpenAI's API does: the openai backend sends standard bodies unless told the endpoint
takes vLLM's extensions; launched vLLM and sim servers still get them. Header and body values
named `{env: NAME}` are read from the environment when the trial starts and never written.
"""

import time

import pandas as pd
import pytest

from analysis.report.report import write_report
from backends.openai import OpenAIBackend, OpenAIBackendConfig
from backends.sim import SimBackend
from backends.vllm_server import VLLMServerBackend
from sweep.core import records as R
from sweep.core.errors import BackendError, ConfigError
from sweep.core.summary import summarize
from sweep.loadgen.http import DRAIN_S, run_http_workload
from sweep.loadgen.http_error import error_line
from tests.helpers import SMALL_CLOSED_LOOP, make_requests, run_sweep_here, workload
from tests.strict_server import MODEL, Running, StrictServer

pytestmark = pytest.mark.timeout(60)

SECRET = "gw-secret-value-8f3a"


@pytest.fixture
def strict():
    """Start strict servers with options; all stopped afterwards."""
    running = []

    def start(**options):
        server = StrictServer(**options)
        running.append(Running(server))
        return server

    yield start
    for r in running:
        r.stop()


def attach(server, **config):
    backend = OpenAIBackend(OpenAIBackendConfig(url=server.url + "/v1", **config), "unused")
    backend.start()
    return backend


def run(backend, count=4, max_tokens=6):
    wl = workload(concurrency=2, num_requests=count, timeout_s=20)
    trackers = run_http_workload(backend, make_requests(count, max_tokens), [], wl)
    return [t.record("t", 0.0) for t in trackers]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_standard_bodies_succeed_against_a_strict_server(strict, api):
    server = strict(tokens_per_chunk=1)
    backend = attach(server, api=api)
    assert backend.served_model == MODEL  # from /v1/models
    rows = run(backend)
    assert [r[R.STATUS] for r in rows] == [R.STATUS_OK] * 4
    assert all(r[R.OUTPUT_TOKENS] == 6 == r[R.SERVER_OUTPUT_TOKENS] for r in rows)
    for body in server.bodies():
        assert "ignore_eos" not in body and body["max_tokens"] == 6
        assert body["stream_options"] == {"include_usage": True}
        assert body["model"] == MODEL and body["stream"] is True


def test_a_stream_held_open_after_done_costs_its_connection_not_the_request(strict):
    # the load generator reads on after [DONE] to the body's end (to keep the connection), but
    # only for DRAIN_S: a server that never ends the body still has its requests recorded ok
    server = strict(hold_after_done=4.0)  # past DRAIN_S; short enough for the server's cleanup
    started = time.monotonic()
    rows = run(attach(server), count=2)
    assert [r[R.STATUS] for r in rows] == [R.STATUS_OK] * 2
    assert all(r[R.OUTPUT_TOKENS] == 6 for r in rows)
    assert all(r[R.E2E_S] < 1.0 for r in rows)  # ended at [DONE], not when the body did
    assert time.monotonic() - started < DRAIN_S + 2.0 < server.hold_after_done


def test_a_closed_loop_turnaround_starts_when_the_stream_ends_not_at_its_last_token(strict):
    # vLLM on a busy CPU sends [DONE] tens of ms after the last token when it sends no per-chunk
    # usage; the next request cannot go before the stream ends, so that wait is the server's,
    # and counting it as send lag flagged a client at 10% CPU as saturated
    server = strict(close_after=0.3)
    rows = run(attach(server), count=4)  # a closed loop of 2: requests 2 and 3 follow 0 and 1
    assert [r[R.STATUS] for r in rows] == [R.STATUS_OK] * 4
    assert all(r[R.E2E_S] < 0.25 for r in rows)  # the request ended at its last token
    lags = [r[R.SENT_S] - r[R.SCHEDULED_S] for r in rows]
    assert max(lags) < 0.1, lags  # the turnaround, without the server's 0.3 s


def one_at_a_time(backend, count=3):
    wl = workload(concurrency=1, num_requests=count, timeout_s=20)
    trackers = run_http_workload(backend, make_requests(count, 6), [], wl)
    return [t.record("t", 0.0) for t in trackers]


def arrivals(server):
    """Request ids in the order the server took them, and those it dropped."""
    ids = [seen.headers["X-Request-ID"] for seen in server.seen]
    return ids, [seen.headers["X-Request-ID"] for seen in server.seen if seen.dropped]


def test_a_request_lost_to_a_pooled_connection_the_server_closed_goes_out_again(strict):
    # A server closes a connection kept idle for its keep-alive time (uvicorn: 5 s), and the
    # pool may hand it out at that moment: the request failed with "Connection reset by peer"
    # or "Can not write request body" (1 of a parity run's 400 against vLLM at 2 req/s),
    # although the server never took it. This server drops every request on a reused one.
    server = strict(drop="reused")
    rows = one_at_a_time(attach(server))
    assert [r[R.STATUS] for r in rows] == [R.STATUS_OK] * 3, [r[R.ERROR] for r in rows]
    assert all(r[R.OUTPUT_TOKENS] == 6 for r in rows)
    ids, dropped = arrivals(server)
    assert len(dropped) == 3 and len(ids) == 6  # each lost once, then taken on a new connection
    assert sorted(ids) == sorted(dropped * 2)
    lags = [r[R.SENT_S] - r[R.SCHEDULED_S] for r in rows]
    assert all(0 <= lag < 0.5 for lag in lags)  # the lost try counts in the send lag


def test_a_request_dropped_on_a_new_connection_is_not_sent_again(strict):
    # the server took it and went away: a failure to record, not a stale connection to retry
    server = strict(drop="all")
    rows = one_at_a_time(attach(server))
    assert [r[R.STATUS] for r in rows] == [R.STATUS_FAILED] * 3
    assert all(r[R.ERROR].startswith("disconnect: ") for r in rows), [r[R.ERROR] for r in rows]
    ids, dropped = arrivals(server)
    assert ids == dropped
    # only the first went out on a pooled connection (opened before the load): sent twice
    assert [ids.count(rid) for rid in dict.fromkeys(ids)] == [2, 1, 1]


def test_extensions_on_a_strict_server_fail_in_one_line_naming_the_field(strict):
    server = strict()
    rows = run(attach(server, extensions=True))
    expected = (
        "http_error: HTTP 400: the endpoint rejected field 'ignore_eos': "
        "Unrecognized request argument supplied: ignore_eos"
    )
    assert [r[R.STATUS] for r in rows] == [R.STATUS_FAILED] * 4
    assert [r[R.ERROR] for r in rows] == [expected] * 4


def test_extensions_sent_where_the_endpoint_takes_them_give_per_chunk_counts(strict):
    server = strict(vllm=True, tokens_per_chunk=3)
    rows = run(attach(server, extensions=True), max_tokens=7)
    assert all(r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == 7 for r in rows)
    for body in server.bodies():
        assert body["ignore_eos"] is True
        assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_headers_and_extra_body_arrive_with_values_from_the_environment(strict, monkeypatch):
    monkeypatch.setenv("GW_TOKEN", SECRET)
    monkeypatch.setenv("GW_USER", "bench-user")
    server = strict(required_headers={"X-Api-Key": SECRET, "X-Tenant": "bench"})
    backend = attach(
        server,
        api="chat",
        headers={"X-Api-Key": {"env": "GW_TOKEN"}, "X-Tenant": "bench"},
        extra_body={"user": {"env": "GW_USER"}, "metadata": {"run": "r1", "n": 2}},
    )
    assert SECRET not in repr(backend.request_headers())  # shown as '***'
    rows = run(backend, count=3)
    assert [r[R.STATUS] for r in rows] == [R.STATUS_OK] * 3
    for seen in server.seen:
        assert seen.headers["X-Api-Key"] == SECRET and seen.headers["X-Tenant"] == "bench"
        assert seen.body["user"] == "bench-user"
        assert seen.body["metadata"] == {"run": "r1", "n": 2}


def test_headers_and_body_fields_reach_sharded_client_processes(strict, monkeypatch):
    monkeypatch.setenv("GW_TOKEN", SECRET)
    server = strict(required_headers={"X-Api-Key": SECRET})
    backend = attach(server, headers={"X-Api-Key": {"env": "GW_TOKEN"}}, extra_body={"user": "u"})
    wl = workload(concurrency=2, num_requests=4, client_processes=2, timeout_s=20)
    trackers = run_http_workload(backend, make_requests(4, 3), [], wl)
    assert [t.error for t in trackers] == [None] * 4
    assert len(server.seen) == 4 and all(b["user"] == "u" for b in server.bodies())


def test_a_secret_echoed_in_an_error_is_not_recorded(strict, monkeypatch):
    monkeypatch.setenv("GW_TAG", SECRET)
    server = strict(echo=True)
    # `tag` is no OpenAI field: the server refuses it, quoting its value; the record does not
    rows = run(attach(server, extra_body={"tag": {"env": "GW_TAG"}}), count=1)
    assert server.bodies()[0]["tag"] == SECRET
    assert rows[0][R.ERROR] == (
        "http_error: HTTP 400: the endpoint rejected field 'tag': "
        'Unrecognized request argument supplied: tag (value "***")'
    )
    line = error_line(400, f'{{"error": {{"message": "bad value {SECRET}"}}}}', [SECRET])
    assert line == "http_error: HTTP 400: bad value ***"


def test_an_unset_variable_is_one_clear_line(strict, monkeypatch):
    monkeypatch.delenv("NO_SUCH_GW_TOKEN", raising=False)
    server = strict()
    config = OpenAIBackendConfig(url=server.url, headers={"X-Api-Key": {"env": "NO_SUCH_GW_TOKEN"}})
    with pytest.raises(BackendError) as info:
        OpenAIBackend(config, "m").start()
    assert str(info.value) == (
        "backend.headers.X-Api-Key names the environment variable NO_SUCH_GW_TOKEN, "
        "which is not set"
    )
    assert info.value.kind == R.ERROR_BACKEND_START
    nested = OpenAIBackendConfig(url=server.url, extra_body={"a": {"b": [{"env": "NO_SUCH_GW_X"}]}})
    with pytest.raises(BackendError, match=r"^backend.extra_body.a.b\[0\] names .* NO_SUCH_GW_X"):
        OpenAIBackend(nested, "m").request_body()
    assert server.seen == []  # nothing was sent


def test_chat_uses_max_completion_tokens_when_configured(strict):
    server = strict(refuse_max_tokens=True)
    refused = run(attach(server, api="chat"), count=1)
    assert refused[0][R.ERROR] == (
        "http_error: HTTP 400: the endpoint rejected field 'max_tokens': Unsupported parameter: "
        "'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
    )
    server.seen.clear()
    rows = run(attach(server, api="chat", max_tokens_field="max_completion_tokens"))
    assert all(r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == 6 for r in rows)
    assert all(b["max_completion_tokens"] == 6 and "max_tokens" not in b for b in server.bodies())


def test_unforced_lengths_are_what_the_server_produced_and_flagged_short(strict):
    server = strict(eos_after=4)
    rows = run(attach(server), max_tokens=6)
    assert all(r[R.STATUS] == R.STATUS_OK for r in rows)
    assert all(r[R.OUTPUT_TOKENS] == 4 == r[R.SERVER_OUTPUT_TOKENS] for r in rows)
    summary = summarize(pd.DataFrame(rows), num_gpus=0, price_per_hour=0.0)
    assert summary[R.SHORT_OUTPUT_REQUESTS] == 4


@pytest.mark.parametrize("backend_class", [VLLMServerBackend, SimBackend])
def test_vllm_server_and_sim_still_send_the_extensions(strict, backend_class):
    assert backend_class.vllm_extensions is True  # declared by the class, not by config
    server = strict(vllm=True, tokens_per_chunk=2)
    # the backend as it phrases requests, pointed at the strict server instead of its own
    redirected = type("AtStrict", (backend_class,), {"base_url": property(lambda s: server.url)})
    rows = run(redirected(backend_class.config_class(), MODEL), count=2, max_tokens=5)
    assert all(r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == 5 for r in rows)
    for body in server.bodies():
        assert body["ignore_eos"] is True and body["max_tokens"] == 5
        assert body["stream_options"]["continuous_usage_stats"] is True


def test_a_real_sim_gets_the_extensions_its_chunks_are_counted_by(sim):
    backend = sim(ttft_ms=2, itl_ms=1, tokens_per_chunk=4)
    rows = run(backend, max_tokens=10)
    # without per-chunk usage, chunks of 4 would count as 3 tokens, not 10
    assert all(r[R.OUTPUT_TOKENS] == 10 == r[R.SERVER_OUTPUT_TOKENS] for r in rows)


def run_sweep(out, *overrides):
    """A one-trial sweep on the openai backend, run in this process as a Ray task would."""
    settings = ["workload.num_requests=4", "workload.output_len=5", "workload.concurrency=2"]
    return run_sweep_here(
        out, ["backend=openai", "sweep.name=strict", *SMALL_CLOSED_LOOP, *settings, *overrides]
    )


def test_a_sweep_writes_no_secret_and_its_report_says_lengths_were_not_forced(
    strict, monkeypatch, tmp_path
):
    monkeypatch.setenv("GW_TOKEN", SECRET)
    server = strict(required_headers={"X-Api-Key": SECRET}, eos_after=3)
    folder = run_sweep(
        tmp_path, f"backend.url={server.url}", "+backend.headers.X-Api-Key={env:GW_TOKEN}"
    )
    write_report(folder)
    summary = pd.read_parquet(next(folder.rglob("summary.parquet"))).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK and summary[R.COMPLETED_REQUESTS] == 4
    assert summary[R.SHORT_OUTPUT_REQUESTS] == 4 and summary[R.OUTPUT_TOKENS_TOTAL] == 12
    report = (folder / "report.md").read_text()
    assert "Output lengths were not forced in 1 of 1 trial(s)" in report
    assert "4 request(s) shorter than requested (lengths not forced" in report
    assert "GW_TOKEN" in next(folder.rglob("trial.yaml")).read_text()  # the name only
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]
    assert all(s.headers["X-Api-Key"] == SECRET for s in server.seen)


def test_a_sweep_naming_an_unset_variable_is_a_failed_trial_saying_which(
    strict, monkeypatch, tmp_path
):
    monkeypatch.delenv("NO_SUCH_GW_TOKEN", raising=False)
    server = strict()
    folder = run_sweep(
        tmp_path, f"backend.url={server.url}", "+backend.extra_body.user={env:NO_SUCH_GW_TOKEN}"
    )
    summary = pd.read_parquet(next(folder.rglob("summary.parquet"))).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert summary[R.ERROR_KIND] == R.ERROR_BACKEND_START
    assert summary[R.ERROR_MESSAGE] == (
        "backend.extra_body.user names the environment variable NO_SUCH_GW_TOKEN, which is not set"
    )
    assert server.seen == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"headers": {"Authorization": "Bearer sk-abc"}}, "looks like a credential"),
        ({"headers": {"X-Api-Key": "k-123"}}, "looks like a credential"),
        ({"headers": {"X-Tenant": "a\r\nX-Evil: 1"}}, "newline or NUL"),
        ({"headers": {"X-Request-Id": "1"}}, "not a header name the load generator lets you"),
        ({"headers": {"X-A": {"env": "not a name"}}}, "must name an environment variable"),
        ({"headers": {"X-A": {"other": 1}}}, r"must be a string or \{env: NAME\}"),
        ({"extra_body": {"ignore_eos": True}}, "set backend.extensions=true"),
        ({"extra_body": {"max_tokens": 5}}, "set by the load generator"),
        ({"extra_body": {"a": [{"env": "1X"}]}}, r"backend.extra_body.a\[0\]: \{env: 1X\}"),
        ({"max_tokens_field": "max_completion_tokens"}, "applies to api=chat only"),
        ({"max_tokens_field": "max_new_tokens", "api": "chat"}, "choose one of"),
        ({"api_key_env": "K", "headers": {"Authorization": {"env": "T"}}}, "both set"),
    ],
)
def test_bad_settings_are_one_line_config_errors(config, message):
    with pytest.raises(ConfigError, match=message) as info:
        OpenAIBackendConfig(url="http://127.0.0.1:1", **config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (  # OpenAI's own answer to an unknown field: `param` is null, the message names it
            400,
            '{"error": {"message": "Unrecognized request argument supplied: ignore_eos", '
            '"type": "invalid_request_error", "param": null, "code": null}}',
            "the endpoint rejected field 'ignore_eos': Unrecognized request argument supplied: "
            "ignore_eos",
        ),
        (  # vLLM prints pydantic's errors into its message
            400,
            '{"object": "error", "message": "[{\'type\': \'extra_forbidden\', \'loc\': '
            "('body', 'stream_options', 'continuous_usage_stats'), 'msg': 'Extra inputs are "
            'not permitted\'}]", "type": "BadRequestError", "param": null, "code": 400}',
            "the endpoint rejected field 'stream_options.continuous_usage_stats': [{'type': "
            "'extra_forbidden', 'loc': ('body', 'stream_options', 'continuous_usage_stats'), "
            "'msg': 'Extra inputs are not permitted'}]",
        ),
        (  # FastAPI's 422 (its `input` echoes the body: not shown)
            422,
            '{"detail": [{"type": "extra_forbidden", "loc": ["body", "ignore_eos"], '
            '"msg": "Extra inputs are not permitted", "input": true}]}',
            "the endpoint rejected field 'ignore_eos': Extra inputs are not permitted",
        ),
        (400, '{"error": {"message": "prompt too long"}}', "prompt too long"),
        (400, "Bad Request\nmore", "Bad Request more"),
        (500, "Internal error\ntraceback line", "Internal error"),
    ],
)
def test_error_lines_name_the_rejected_field(status, text, expected):
    assert error_line(status, text) == f"http_error: HTTP {status}: {expected}"


def test_prompts_go_as_the_local_tokenizers_ids_when_asked(strict, tmp_path):
    # as vLLM's benchmark client sends a pre-tokenized trace: the server tokenizes nothing
    server = strict()
    folder = run_sweep(tmp_path, f"backend.url={server.url}", "backend.send_token_ids=true")
    summary = pd.read_parquet(next(folder.rglob("summary.parquet"))).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK and summary[R.COMPLETED_REQUESTS] == 4
    prompts = [body["prompt"] for body in server.bodies()]
    assert len(prompts) == 4 and all(isinstance(p, list) and len(p) == 16 for p in prompts)
    assert all(isinstance(t, int) for p in prompts for t in p)
    assert len({tuple(p) for p in prompts}) == 4  # each request its own prompt
    text = strict()
    run_sweep(tmp_path / "text", f"backend.url={text.url}")
    assert all(isinstance(body["prompt"], str) for body in text.bodies())


@pytest.mark.parametrize(
    "options", [{"api": "chat"}, {"tokenizer": "none"}], ids=["chat", "no-tokenizer"]
)
def test_token_id_prompts_need_completions_and_the_local_tokenizer(options):
    with pytest.raises(ConfigError, match="send_token_ids=true needs api=completions"):
        OpenAIBackendConfig(url="http://127.0.0.1:1/v1", send_token_ids=True, **options)
