"""Structured outputs: constraints shipped and from files, their body fields, each answer checked.

The sim server ignores a constraint (it has no model): its made-up words are checked, found
invalid with a reason, counted in the summary and named by the report; vLLM's CPU server keeps
to one for real (tests/backends/on_vllm/test_vllm.py).
"""

import json

import pandas as pd
import pytest

from analysis.report.report import write_report
from analysis.report.structured import structured_findings
from sweep.core import records as R
from sweep.core.config import WorkloadConfig
from sweep.core.errors import ConfigError
from sweep.core.structured import SHIPPED, load_constraint
from sweep.loadgen.http import Endpoint, _body
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.structured import check_answers, keep_replies, structured_endpoint
from tests.helpers import make_requests, run_sweep_here, table


@pytest.mark.parametrize(
    ("kind", "valid", "invalid", "why"),
    [
        ("json_schema", '{"name": "Ada", "age": 36, "city": "Lima"}', '{"name": "Ada"}', "schema:"),
        ("json_schema", ' {"name": "Bo", "age": 0, "city": "Osaka"}\n', "Ada, 36", "not JSON"),
        ("regex", " 2024-02-29", "2024-13-01", "does not match"),
        ("choice", "neutral ", "mixed", "not one of the choices"),
        ("grammar", "12+(3-4)", "12+", "grammar:"),
    ],
)
def test_each_shipped_kind_passes_a_valid_answer_and_says_why_another_fails(
    kind, valid, invalid, why
):
    constraint = load_constraint(kind, None)  # the kind's shipped default
    assert constraint.value == next(iter(SHIPPED[kind].values()))
    assert constraint.check(valid) is None
    reason = constraint.check(invalid)
    assert reason.startswith(why) and "\n" not in reason


def test_a_users_files_hold_each_kind(tmp_path):
    schema = tmp_path / "ticket.json"
    schema.write_text(json.dumps({"type": "object", "required": ["id"]}))
    (tmp_path / "code.regex").write_text("[A-Z]{3}\\d\n")
    (tmp_path / "colours.txt").write_text("red\ngreen\n\n")
    (tmp_path / "yes.lark").write_text('start: "yes" | "no"\n')
    ticket = load_constraint("json_schema", str(schema))
    assert ticket.name == "ticket" and ticket.check('{"id": 3}') is None
    assert ticket.check("{}").startswith("schema: 'id' is a required property")
    assert load_constraint("regex", str(tmp_path / "code.regex")).check("ABC1") is None
    assert load_constraint("choice", str(tmp_path / "colours.txt")).value == ["red", "green"]
    assert load_constraint("grammar", str(tmp_path / "yes.lark")).check("maybe") is not None


@pytest.mark.parametrize(
    ("kind", "text", "words"),
    [
        ("json_schema", '{"type": "objekt"}', "not JSON Schema: 'objekt' is not valid"),
        ("json_schema", "[1, 2", "is not JSON"),
        ("regex", "(unclosed", "the regex does not compile"),
        ("choice", "[]", "a non-empty list of non-empty strings"),
        ("grammar", "start: ::=", "Lark cannot read the grammar"),
    ],
)
def test_a_file_that_does_not_hold_its_kind_is_one_line(tmp_path, kind, text, words):
    spec = tmp_path / f"bad.{kind}"
    spec.write_text(text)
    with pytest.raises(ConfigError) as raised:
        WorkloadConfig(name="closed_loop", structured=kind, structured_spec=str(spec))
    assert words in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"structured": "xml"}, "workload.structured='xml' is not valid"),
        ({"structured_spec": "person"}, "needs workload.structured"),
        ({"structured": "regex", "structured_spec": "person"}, "neither a shipped regex"),
    ],
)
def test_bad_structured_settings_are_one_line(values, words):
    with pytest.raises(ConfigError) as raised:
        WorkloadConfig(name="closed_loop", **values)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_the_body_asks_for_the_constraint_and_lets_the_answer_end():
    (request,) = make_requests(1, 8)
    served = Endpoint("http://x", "m", "chat", extensions=True)
    schema = load_constraint("json_schema", "person")
    body = _body(structured_endpoint(served, schema, enforce=True), request)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SHIPPED["json_schema"]["person"]
    assert body["ignore_eos"] is False
    free = _body(structured_endpoint(served, schema, enforce=False), request)
    assert "response_format" not in free and free["ignore_eos"] is False
    assert _body(served, request)["ignore_eos"] is True  # no constraint: lengths forced
    regex = _body(structured_endpoint(served, load_constraint("regex", None), True), request)
    assert regex["structured_outputs"] == {"regex": SHIPPED["regex"]["iso_date"]}
    standard = Endpoint("http://x", "m", "chat")
    with pytest.raises(ConfigError, match="use json_schema"):
        structured_endpoint(standard, load_constraint("choice", None), enforce=True)


def test_only_completed_answers_are_checked():
    valid, invalid, failed, unkept = (RequestTracker(i, None, 0, 4) for i in range(4))
    keep_replies([valid, invalid, failed])
    for tracker, text in ((valid, ' {"name": "Al", "age": 1, '), (invalid, "{")):
        tracker.mark_sent(0.0)
        tracker.add_chunk(text, at=0.1)
    valid.add_chunk('"city": "Lima"}', at=0.2)
    failed.fail("server_error: boom")
    check_answers([valid, invalid, failed, unkept], load_constraint("json_schema", None))
    assert (valid.structured_valid, valid.structured_error) == (True, None)
    assert invalid.structured_valid is False and invalid.structured_error.startswith("not JSON")
    assert failed.structured_valid is None and unkept.structured_valid is None


SIM = [
    "backend=sim",
    "sweep.name=structured_sim",
    "workload=closed_loop",
    "workload.num_requests=24",
    "workload.warmup_requests=0",
    "workload.output_len=4",
    "dataset.input_len=16",
    "workload.structured=json_schema",
]


def test_the_sims_answers_are_checked_counted_and_named_in_the_report(tmp_path):
    collected = []
    out = run_sweep_here(tmp_path, SIM, collected)
    (files,) = collected
    summary, requests = table(files, "summary").iloc[0], table(files, "requests")
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK
    assert summary[R.STRUCTURED_CHECKED] == 24 and summary[R.STRUCTURED_VALID_FRACTION] == 0.0
    assert (requests[R.STRUCTURED_VALID] == False).all()  # noqa: E712 - the column's values
    assert requests[R.STRUCTURED_ERROR].str.startswith("not JSON").all()
    paths = write_report(out)
    report = paths.report_md.read_text()
    section = report.split("## Structured outputs", 1)[1].split("\n## ", 1)[0]
    assert "| json_schema person | yes | 24 | 0.0 |" in section
    assert "broke the trial's constraint" in report  # the request checks name the trial
    (line,) = [f for f in paths.findings if "structured answers valid" in f]
    assert line.startswith("**sim**: 0% of 24 structured answers valid (json_schema person, enf")
    assert "broke the constraint 24 times" in line


def test_enforced_and_not_side_by_side_state_validity_and_speed():
    trials = pd.DataFrame(
        {
            R.TRIAL_ID: ["a", "b"],
            R.TRIAL_STATUS: [R.STATUS_OK] * 2,
            R.BACKEND_NAME: ["vllm_server"] * 2,
            "workload.structured": ["json_schema"] * 2,
            "workload.structured_spec": [None] * 2,
            "workload.structured_enforce": [True, False],
            R.STRUCTURED_CHECKED: [40, 40],
            R.STRUCTURED_VALID_FRACTION: [1.0, 0.25],
            R.OUTPUT_THROUGHPUT: [90.0, 100.0],
        }
    )
    lines = structured_findings(trials)
    assert lines[0].startswith("**vllm_server · structured_enforce=True**: 100% of 40")
    assert "(json_schema person, not enforced) at 100.0 output tok/s" in lines[1]
    assert "broke the constraint 30 times" in lines[1]
    assert lines[2] == (
        "Enforcing the constraint: 100% valid against 25% without, at 0.90x the output tok/s "
        "of the same requests unconstrained."
    )


def test_a_distrusted_trial_gets_its_validity_but_not_its_speed():
    trials = pd.DataFrame(
        {
            R.TRIAL_ID: ["a", "b"],
            R.TRIAL_STATUS: [R.STATUS_OK] * 2,
            R.BACKEND_NAME: ["vllm_server"] * 2,
            "workload.structured": ["regex"] * 2,
            "workload.structured_enforce": [True, False],
            R.STRUCTURED_CHECKED: [8, 8],
            R.STRUCTURED_VALID_FRACTION: [1.0, 0.5],
            R.OUTPUT_THROUGHPUT: [90.0, 100.0],
            R.COMPLETED_REQUESTS: [8, 8],  # under the report's minimum of 24: too short
        }
    )
    lines = structured_findings(trials)
    assert lines[0].endswith("(regex iso_date, enforced) (speed not stated: trials too short).")
    assert lines[2] == (
        "Enforcing the constraint: 100% valid against 50% without; speed not stated (trials too "
        "short: *Request checks*)."
    )
