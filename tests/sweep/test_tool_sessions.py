"""Tool-calling sessions through the normal trial path, against the sim server as ground truth.

One sim server for the module (`--record-prompts`, one-token words, chunks of 1, 3 and 2
tokens): a chat request offering tools gets a call when it requires one or names a function, and
with `auto` in `tool_call_rate` of replies (`backends.sim_server.tool_calls`: the arguments are
each property's first allowed value, 4 characters a token, cut by the output cap). Trials run
with `backend=openai` attached to it through `tests.helpers.run_sweep_here` (no Ray).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from analysis.read.load import load_summary
from analysis.report.report import write_report
from analysis.report.tool_sessions import tool_findings, tool_rows
from backends.sim_server.tool_calls import SimCall, arguments, pick_call
from sweep.core import records as R
from sweep.core.chunk_decoder import read_event
from sweep.core.errors import ConfigError
from sweep.core.stream_chunks import decode_event, parse_event
from sweep.core.tools import SHIPPED, ToolCall, assemble, load_tools
from sweep.plan.plan import build_plan
from tests.sweep.test_multi_turn import frame, launched_sim, user_messages
from tests.sweep.test_multi_turn import sweep as session_sweep

WEATHER = '{"city":"Paris","unit":"celsius"}'  # the sim's call of get_weather: 9 tokens
TOOLS = ["backend.api=chat", "dataset.tools=agent"]


@pytest.fixture(scope="module")
def sim_url():
    launcher = launched_sim("sim-tool-sessions")
    yield launcher.url
    launcher.stop()


@pytest.fixture(scope="module")
def auto_sim_url():
    """A sim whose model calls a tool in every reply it may choose for (tool_choice=auto)."""
    launcher = launched_sim("sim-tool-sessions-auto", tool_call_rate=1.0)
    yield launcher.url
    launcher.stop()


@pytest.fixture(scope="module")
def tokenizer():
    from backends.models.tiny import ensure_tiny_model
    from sweep.datasets.cache import PromptSource

    return PromptSource(str(ensure_tiny_model()), None, False).tokenizer()


def tool_sweep(tmp_path, url, *overrides, name="tool_sessions"):
    return session_sweep(tmp_path, url, *TOOLS, *overrides, name=name)


def test_a_named_call_is_answered_by_a_tool_result_after_the_tool_latency(
    tmp_path, sim_url, tokenizer
):
    """Turn 2 sends u1, the assistant's call, and the call's result; it waits the tool latency."""
    latency = 0.25
    files, received = tool_sweep(
        tmp_path,
        sim_url,
        "dataset.tool_choice=get_weather",
        f"dataset.tool_latency_s={latency}",
        "dataset.num_turns=3",
        "workload.num_requests=6",
        "workload.output_len=16",
    )
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    assert rows[R.TOOL_CALLS].tolist() == [1] * 6
    assert rows[R.TOOL_NAME].tolist() == ["get_weather"] * 6
    assert rows[R.TOOL_ARGS_VALID].tolist() == [True] * 6
    assert rows[R.OUTPUT_TOKENS].tolist() == [9] * 6  # the call's arguments, not the cap of 16
    assert rows[R.TOOL_RESULT].tolist() == [False, True, True] * 2
    assert rows[R.TOOL_WAIT_S].tolist()[1:3] == [latency, latency]
    due = rows[R.SCHEDULED_S].to_numpy() - np.roll(rows[R.END_S].to_numpy(), 1)
    assert np.allclose(due[[1, 2, 4, 5]], latency)  # due the tool latency after the call
    np.testing.assert_allclose(rows[R.TOOL_CALL_S], rows[R.E2E_S])  # complete at its last token
    users = user_messages(tokenizer, 6, num_turns=3)
    for idx in (1, 2):
        got = received[idx]["received"]
        assert got[0] == {"role": "user", "content": users[0]}
        for k in range(1, idx + 1):
            call, result = got[2 * k - 1], got[2 * k]
            assert call["role"] == "assistant" and call["content"] == ""
            (made,) = call["tool_calls"]
            assert made["function"] == {"name": "get_weather", "arguments": WEATHER}
            assert made["id"].startswith("call_") and made["type"] == "function"
            assert result == {"role": "tool", "content": users[k], "tool_call_id": made["id"]}
        rendered = tokenizer.apply_chat_template(got, add_generation_prompt=True, tokenize=False)
        assert rows[R.INPUT_TOKENS].iloc[idx] == len(
            tokenizer(rendered, add_special_tokens=False).input_ids
        )
    summary = frame(files, "summary").iloc[0]
    assert summary[R.TOOL_CALLS_TOTAL] == 6 and summary[R.TOOL_ARGS_VALID_FRACTION] == 1.0
    assert summary[R.TOOL_CALL_MS_P50] == pytest.approx(rows[R.TOOL_CALL_S].median() * 1e3)
    spans = [rows[R.END_S].iloc[s + 2] - rows[R.SENT_S].iloc[s] for s in (0, 3)]
    assert summary[R.SESSION_S_P50] == pytest.approx(np.median(spans))
    assert min(spans) > 2 * latency


def test_a_call_cut_by_the_output_cap_is_invalid_and_the_session_goes_on(tmp_path, sim_url):
    files, _ = tool_sweep(
        tmp_path,
        sim_url,
        "dataset.tool_choice=required",
        "dataset.num_turns=2",
        "workload.num_requests=4",
        "workload.output_len=4",  # below either call's length (9 and 7 tokens)
    )
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    assert rows[R.TOOL_CALLS].tolist() == [1] * 4
    assert rows[R.TOOL_ARGS_VALID].tolist() == [False] * 4
    assert all(e.startswith("arguments not JSON") for e in rows[R.TOOL_ARGS_ERROR])
    assert rows[R.TOOL_RESULT].tolist() == [False, True] * 2  # answered all the same
    summary = frame(files, "summary").iloc[0]
    assert summary[R.TOOL_ARGS_VALID_FRACTION] == 0.0
    findings = tool_findings(load_summary(tmp_path / "tool_sessions"))
    assert any("invalidly in 4 replies" in line for line in findings), findings


def test_a_reply_without_a_call_is_answered_by_the_next_user_message(
    tmp_path, sim_url, auto_sim_url, tokenizer
):
    """`auto` leaves it to the model: the sim at rate 0 never calls, at rate 1 always does."""
    plain, received = tool_sweep(tmp_path / "never", sim_url, "workload.num_requests=4",
                                 "dataset.num_turns=2", name="tools_never")  # fmt: skip
    rows = frame(plain, "requests").sort_values(R.REQUEST_IDX)
    assert rows[R.TOOL_CALLS].tolist() == [0] * 4 and rows[R.TOOL_RESULT].tolist() == [False] * 4
    assert rows[R.TOOL_ARGS_VALID].isna().all() and rows[R.TOOL_CALL_S].isna().all()
    users = user_messages(tokenizer, 4, num_turns=2)
    assert [m["role"] for m in received[1]["received"]] == ["user", "assistant", "user"]
    assert received[1]["received"][2]["content"] == users[1]
    called, _ = tool_sweep(tmp_path / "always", auto_sim_url, "workload.num_requests=4",
                           "dataset.num_turns=2", "workload.output_len=16",
                           name="tools_always")  # fmt: skip
    rows = frame(called, "requests").sort_values(R.REQUEST_IDX)
    assert rows[R.TOOL_CALLS].tolist() == [1] * 4
    assert rows[R.TOOL_RESULT].tolist() == [False, True] * 2
    assert set(rows[R.TOOL_NAME]) <= {"get_weather", "search_docs"}
    assert rows[R.TOOL_ARGS_VALID].all()


def test_the_report_has_the_tool_table_and_findings(tmp_path, sim_url):
    files, _ = tool_sweep(
        tmp_path,
        sim_url,
        "dataset.tool_choice=search_docs",
        "dataset.num_turns=2",
        "workload.num_requests=4",
        "workload.output_len=16",
        "dataset.tool_latency_s=0.05",
        "dataset.tool_latency_dist=exponential",
    )
    trials = load_summary(tmp_path / "tool_sessions")
    (row,) = tool_rows(trials).to_dict("records")
    assert row["calls"] == 4 and row["valid_fraction"] == 1.0 and row["sessions"] == 2
    assert row["tools"] == "agent (search_docs)"
    report = write_report(tmp_path / "tool_sessions", tmp_path / "report").report_md.read_text()
    assert "## Tool-calling sessions" in report
    assert "4 tool calls in 4 replies of 2 sessions, 100% with valid arguments" in report
    waits = frame(files, "requests")[R.TOOL_WAIT_S].dropna()
    assert len(waits) == 2 and len(set(waits)) == 2  # drawn per turn, exponential


def test_stamped_usage_reports_cached_prompt_tokens():
    usage = (
        b'{"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":5,'
        b'"prompt_tokens_details":{"cached_tokens":32}}}'
    )
    for chunk in (read_event(usage, "chat"), parse_event(decode_event(usage), "chat")):
        assert chunk.cached_tokens == 32 and chunk.prompt_tokens == 40


@pytest.mark.parametrize(
    "payload",
    [
        # vLLM 0.32's first and later deltas of a named call (the name null after the first)
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"c1","type":"function","index":0,'
        b'"function":{"name":"get_weather","arguments":"{\\"ci"}}]},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":null,'
        b'"arguments":"ty\\":"}}]},"finish_reason":null}]}',
    ],
)
def test_tool_call_deltas_are_read_alike_by_both_decoders_and_carry_tokens(payload):
    fast, slow = read_event(payload, "chat"), parse_event(decode_event(payload), "chat")
    assert fast == slow
    assert fast.has_text and fast.tool_calls and fast.tool_calls[0][0] == 0
    assert fast.text == fast.tool_calls[0][3]  # the pieces are what a token count reads


def test_pieces_assemble_into_calls_by_index():
    pieces = [
        (0, "a", "get_weather", '{"ci'),
        (1, "b", "search_docs", "{"),
        (0, None, None, 'ty":1}'),
        (1, None, None, "}"),
    ]
    assert assemble(pieces) == (
        ToolCall("a", "get_weather", '{"city":1}'),
        ToolCall("b", "search_docs", "{}"),
    )
    tools = load_tools("agent")
    assert tools.check(ToolCall("a", "get_weather", '{"city":"Paris","unit":"celsius"}')) is None
    assert "city: 'Rome' is not one of" in tools.check(
        ToolCall("a", "get_weather", '{"city":"Rome","unit":"celsius"}')
    )
    assert tools.check(ToolCall("a", "lookup", "{}")).startswith("unknown function 'lookup'")
    assert "not JSON" in tools.check(ToolCall("a", "get_weather", '{"city":'))


def test_the_sim_writes_valid_arguments_for_every_shipped_tool():
    tools = load_tools("agent")
    for tool in SHIPPED["agent"]:
        function = tool["function"]
        text = json.dumps(arguments(function["parameters"]))
        assert tools.check(ToolCall("x", function["name"], text)) is None
    body = {"tools": SHIPPED["agent"], "tool_choice": "none"}
    assert pick_call(body, "r", 1.0, random.Random(0)) is None
    call = SimCall("c", "f", "0123456789", named=True)
    assert call.tokens(100) == 3 and call.tokens(2) == 2
    assert call.finish(3) == "stop" and call.finish(2) == "length"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("dataset.tools=nope", "neither a shipped tool set"),
        ("dataset.tool_choice=lookup", "none of auto, required, none nor a function"),
        ("dataset.tool_latency_dist=gamma", "dataset.tool_latency_dist='gamma' is not valid"),
        ("dataset.tool_latency_s=-1", "dataset.tool_latency_s must be >= 0"),
    ],
)
def test_bad_tool_settings_are_one_line_when_planned(override, words):
    base = ["dataset=multi_turn", "backend=sim", "backend.api=chat", "dataset.tools=agent"]
    with pytest.raises(ConfigError, match=words) as raised:
        build_plan([*base, "workload=closed_loop", "workload.num_requests=6", override])
    assert "\n" not in str(raised.value)


def test_tools_on_completions_and_a_choice_without_tools_are_refused():
    base = ["dataset=multi_turn", "backend=sim", "workload=closed_loop", "workload.num_requests=6"]
    with pytest.raises(ConfigError, match="set backend.api=chat"):
        build_plan([*base, "dataset.tools=agent"])
    with pytest.raises(ConfigError, match="needs dataset.tools"):
        build_plan([*base, "backend.api=chat", "dataset.tool_choice=required"])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "is not JSON"),
        ("[]", "non-empty list of OpenAI tools"),
        ('[{"type": "function"}]', 'tool 0 is not {"type": "function"'),
        ('[{"type": "function", "function": {"parameters": {}}}]', "has no name"),
        ('[{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]',
         "f's parameters are not a JSON Schema"),
        ('[{"type": "function", "function": {"name": "f"}}, '
         '{"type": "function", "function": {"name": "f"}}]', "two functions are called 'f'"),
    ],
)  # fmt: skip
def test_a_bad_tools_file_is_one_line(tmp_path, content, words):
    path = tmp_path / "tools.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=words) as raised:
        load_tools(str(path))
    assert "\n" not in str(raised.value)


def test_a_users_tools_file_is_offered(tmp_path, sim_url):
    path = tmp_path / "mine.json"
    tool = {"type": "function", "function": {"name": "ping", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 3}},
        "required": ["n"]}}}  # fmt: skip
    path.write_text(json.dumps({"tools": [tool]}))
    files, received = tool_sweep(
        tmp_path, sim_url, f"dataset.tools={path}", "dataset.tool_choice=required",
        "dataset.num_turns=2", "workload.num_requests=2", "workload.output_len=16",
    )  # fmt: skip
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert rows[R.TOOL_NAME].tolist() == ["ping", "ping"] and rows[R.TOOL_ARGS_VALID].all()
    call = received[1]["received"][1]["tool_calls"][0]["function"]
    assert call == {"name": "ping", "arguments": '{"n":3}'}


def test_a_call_shorter_than_the_cap_is_not_a_short_output(tmp_path, sim_url):
    """A call ends with its arguments: 9 of 16 tokens is its length, not a short reply."""
    files, _ = tool_sweep(
        tmp_path, sim_url, "dataset.tool_choice=get_weather", "dataset.num_turns=2",
        "workload.num_requests=2", "workload.output_len=16",
    )  # fmt: skip
    rows = frame(files, "requests")
    assert rows[R.OUTPUT_TOKENS].tolist() == [9, 9]
    assert frame(files, "summary").iloc[0][R.SHORT_OUTPUT_REQUESTS] == 0


def test_the_turn_table_gives_each_turns_cached_share_where_the_server_reports_it():
    import pandas as pd

    from analysis.report.turns import CACHED, turn_table

    requests = pd.DataFrame({
        R.TRIAL_ID: ["t"] * 4, R.STATUS: [R.STATUS_OK] * 4, R.IN_WINDOW: [True] * 4,
        R.TURN: [1, 2, 1, 2], R.TTFT_S: [0.1, 0.2, 0.1, 0.3], R.INPUT_TOKENS: [141, 284, 141, 284],
        R.SERVER_INPUT_TOKENS: [141, 284, 141, 284], R.CACHED_INPUT_TOKENS: [0, 128, 128, 256],
    })  # fmt: skip
    trials = pd.DataFrame({R.TRIAL_ID: ["t"], R.LABEL: ["vllm"]})
    table = turn_table(requests, trials)
    assert table[CACHED].tolist() == pytest.approx([100 * 128 / 282, 100 * 384 / 568])
    unreported = turn_table(requests.drop(columns=[R.CACHED_INPUT_TOKENS]), trials)
    assert unreported[CACHED].isna().all()
