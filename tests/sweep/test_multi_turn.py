"""Multi-turn sessions through the normal trial path, against the sim server as ground truth.

One sim server for the module, started with `--record-prompts`, so that what each request sent
can be read back from its stamps, and with words that are one token each for the tiny tokenizer,
streamed in chunks of 1, 3 and 2 words with running usage counts (the case where the base
tracker keeps no text). Trials run with `backend=openai` attached to it through
`tests.helpers.run_sweep_here` (plan, trial runner, result files; no Ray).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys

import httpx
import numpy as np
import pandas as pd
import pytest

from analysis.report.report import write_report
from analysis.report.turns import TURNS_FILE
from backends.models.tiny import ensure_tiny_model
from backends.process.launcher import ServerLauncher
from sweep.core import records as R
from sweep.core.config import MultiTurnDatasetConfig
from sweep.core.errors import ConfigError
from sweep.datasets.cache import PromptSource
from sweep.datasets.multi_turn import check_plan, think_times
from sweep.loadgen.arrivals import arrival_offsets
from sweep.loadgen.request_ids import parse as parse_id
from sweep.loadgen.sessions import SEPARATOR
from sweep.plan.plan import build_plan
from tests.helpers import run_sweep_here

WORDS = ["the", "red", "old", "apples", "a", "map", "box", "train", "coat"]  # 1 token each
CHUNKS = [1, 3, 2]
USER_LEN, OUTPUT_LEN = 16, 6


def launched_sim(name, **schedule):
    """A sim server of the module's words and chunk sizes, recording what each request sent."""
    launcher = ServerLauncher(name)
    flags = ["--words", ",".join(WORDS), "--chunk-sizes", "1,3,2", "--record-prompts"]
    timing = json.dumps({"ttft_ms": 5.0, "itl_ms": 1.0, **schedule})

    def argv(port):
        return [
            sys.executable, "-m", "backends.sim_server", "--host", "127.0.0.1",
            "--port", str(port), "--schedule", timing, *flags,
        ]  # fmt: skip

    launcher.launch(argv, "127.0.0.1", 30.0)
    return launcher


@pytest.fixture(scope="module")
def sim_url():
    launcher = launched_sim("sim-multi-turn")
    yield launcher.url
    launcher.stop()


@pytest.fixture(scope="module")
def reasoning_sim_url():
    """The same sim as a reasoning model: each chat reply thinks for its first 2 tokens."""
    launcher = launched_sim("sim-multi-turn-reasoning", reasoning_tokens=2)
    yield launcher.url
    launcher.stop()


@pytest.fixture(scope="module")
def tokenizer():
    return PromptSource(str(ensure_tiny_model()), None, False).tokenizer()


def stamps(url):
    return httpx.get(f"{url}/sim/requests", timeout=10).json()


def sweep(tmp_path, url, *overrides, name="multi_turn"):
    """Run one multi-turn trial on the sim; its files and what the sim received, by request."""
    before = set(stamps(url))
    collected = []
    base = [
        f"sweep.name={name}",
        "backend=openai",
        f"backend.url={url}",
        "backend.extensions=true",
        "backend.server_kind=sim",
        "dataset=multi_turn",
        f"dataset.user_len={USER_LEN}",
        "workload=closed_loop",
        "workload.concurrency=2",
        f"workload.output_len={OUTPUT_LEN}",
    ]
    run_sweep_here(tmp_path, [*base, *overrides], collected)
    (files,) = collected
    new = {rid: s for rid, s in stamps(url).items() if rid not in before}
    measured = {i.idx: s for rid, s in new.items() if not (i := parse_id(rid)).warmup}
    return files, measured


def reply(tokens):
    """What the sim streams for a request of `tokens` tokens."""
    return "".join(f" {WORDS[i % len(WORDS)]}" for i in range(tokens))


def user_messages(tokenizer, count, warmup=1, **dataset):
    """The user message of each measured request, as the trial's dataset made them."""
    cfg = MultiTurnDatasetConfig(user_len=USER_LEN, **dataset)
    prompts = PromptSource(str(ensure_tiny_model()), None, False).prompts(cfg, count + warmup)
    assert [len(tokenizer(p.text, add_special_tokens=False).input_ids) for p in prompts] == [
        USER_LEN
    ] * len(prompts)
    return [p.text for p in prompts[warmup:]]


def frame(files, name):
    return getattr(files, name).to_pandas()


def test_completions_turns_send_the_history_with_the_actual_replies(tmp_path, sim_url, tokenizer):
    """Turn k sends exactly u1 r1 ... uk, each reply as the sim streamed it (3 sizes)."""
    files, received = sweep(
        tmp_path, sim_url, "workload.num_requests=6", "workload.output_range_ratio=0.5"
    )
    summary = frame(files, "summary").iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    assert summary[R.SESSIONS] == 2 and summary[R.TRUNCATED_REQUESTS] == 0
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    assert rows[R.SESSION].tolist() == [0, 0, 0, 1, 1, 1]
    assert rows[R.TURN].tolist() == [1, 2, 3, 1, 2, 3]
    assert (rows[R.DROPPED_TURNS] == 0).all()
    users = user_messages(tokenizer, 6)
    outputs = rows[R.OUTPUT_TOKENS].tolist()
    assert len(set(outputs)) > 1  # replies of different lengths: a wrong pairing shows
    for idx in range(6):
        session, turn = divmod(idx, 3)
        history = []
        for j in range(session * 3, idx):
            history += [users[j], reply(received[j]["output_tokens"])]
        expected = "".join(m + SEPARATOR for m in [*history, users[idx]])
        assert received[idx]["received"] == expected, f"request {idx}"
        assert rows[R.INPUT_TOKENS].iloc[idx] == len(tokenizer(expected).input_ids)
    # each turn adds the last reply and its user message, each with a separator (2 tokens here)
    for session in (0, 1):
        inputs = rows[rows[R.SESSION] == session][R.INPUT_TOKENS].tolist()
        grown = [b - a for a, b in itertools.pairwise(inputs)]
        assert grown == [USER_LEN + o + 4 for o in outputs[session * 3 : session * 3 + 2]]


def test_chat_turns_send_the_messages_and_count_the_chat_template(tmp_path, sim_url, tokenizer):
    files, received = sweep(
        tmp_path, sim_url, "backend.api=chat", "workload.num_requests=4", "dataset.num_turns=2"
    )
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    users = user_messages(tokenizer, 4, num_turns=2)
    for idx in range(4):
        first = idx - idx % 2
        messages = []
        for j in range(first, idx):
            messages += [
                {"role": "user", "content": users[j]},
                {"role": "assistant", "content": reply(OUTPUT_LEN)},
            ]
        messages.append({"role": "user", "content": users[idx]})
        assert received[idx]["received"] == messages
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        assert rows[R.INPUT_TOKENS].iloc[idx] == len(
            tokenizer(rendered, add_special_tokens=False).input_ids
        )
    assert rows[R.INPUT_TOKENS].iloc[1] > rows[R.INPUT_TOKENS].iloc[0] + USER_LEN + OUTPUT_LEN


def test_a_reasoning_models_thinking_is_not_sent_back_in_the_next_turn(
    tmp_path, reasoning_sim_url, tokenizer
):
    """The assistant message of turn 2 is the answer only; the thinking is counted as output.

    Chunks of 1, 3 and 2 words with 2 of thinking: the first chunk is all thinking, the second
    ends the thinking and starts the answer in one chunk, the third is all answer.
    """
    files, received = sweep(
        tmp_path,
        reasoning_sim_url,
        "backend.api=chat",
        "workload.num_requests=4",
        "dataset.num_turns=2",
        name="multi_turn_reasoning",
    )
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    assert rows[R.OUTPUT_TOKENS].tolist() == [OUTPUT_LEN] * 4  # the thinking is output too
    assert rows[R.REASONING_TOKENS].tolist() == [2] * 4
    users = user_messages(tokenizer, 4, num_turns=2)
    answer = "".join(f" {WORDS[i]}" for i in range(2, OUTPUT_LEN))  # words 0 and 1 were thought
    for idx in (1, 3):
        assert received[idx]["received"] == [
            {"role": "user", "content": users[idx - 1]},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": users[idx]},
        ]
        rendered = tokenizer.apply_chat_template(
            received[idx]["received"], add_generation_prompt=True, tokenize=False
        )
        assert rows[R.INPUT_TOKENS].iloc[idx] == len(
            tokenizer(rendered, add_special_tokens=False).input_ids
        )


def test_think_time_is_waited_between_a_reply_and_the_next_turn(tmp_path, sim_url):
    think = 0.3
    files, _ = sweep(
        tmp_path,
        sim_url,
        "workload.num_requests=3",
        "workload.concurrency=1",
        f"dataset.think_time_s={think}",
    )
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    gaps = rows[R.SENT_S].to_numpy()[1:] - rows[R.END_S].to_numpy()[:-1]
    assert (gaps >= think).all() and (gaps < think + 1.0).all(), gaps  # a busy machine is late
    due = rows[R.SCHEDULED_S].to_numpy()[1:] - rows[R.END_S].to_numpy()[:-1]
    assert np.allclose(due, think)  # due a think time after the reply: the rest is send lag


def test_random_think_times_are_seeded_and_drawn_per_turn():
    cfg = MultiTurnDatasetConfig(num_turns=4, think_time_s=2.0, think_time_dist="exponential")
    drawn = think_times(cfg, 500)
    assert drawn.shape == (500, 4) and (drawn[:, 0] == 0).all()
    assert np.array_equal(drawn, think_times(cfg, 500))
    assert 1.8 < drawn[:, 1:].mean() < 2.2 and drawn[:, 1:].std() > 1.5
    other = MultiTurnDatasetConfig(num_turns=4, think_time_s=2.0, think_time_dist="uniform", seed=3)
    uniform = think_times(other, 500)[:, 1:]
    assert uniform.min() >= 0 and uniform.max() <= 4.0 and 1.8 < uniform.mean() < 2.2


def test_open_loop_starts_sessions_on_the_schedule(tmp_path, sim_url):
    rate, think = 5.0, 0.05
    files, _ = sweep(
        tmp_path,
        sim_url,
        "workload=open_loop",
        f"workload.request_rate={rate}",
        "workload.num_requests=8",
        "dataset.num_turns=2",
        f"dataset.think_time_s={think}",
        "workload.seed=7",
    )
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    firsts, seconds = rows[rows[R.TURN] == 1], rows[rows[R.TURN] == 2]
    due = firsts[R.SCHEDULED_S].to_numpy()
    assert np.allclose(due - due[0], arrival_offsets(4, rate, 1.0, 7), atol=1e-6)
    follow = seconds[R.SCHEDULED_S].to_numpy() - firsts[R.END_S].to_numpy()
    assert np.allclose(follow, think)
    assert (seconds[R.SENT_S].to_numpy() >= seconds[R.SCHEDULED_S].to_numpy()).all()


# Turns 1, 2, 3 of a session send 19, 45 and 71 tokens (BOS, and a 2-token separator after each
# message) and ask for 6 more: they need 25, 51 and 77 tokens of context.


def test_truncate_drops_the_oldest_turns_and_says_so(tmp_path, sim_url, tokenizer):
    files, received = sweep(
        tmp_path,
        sim_url,
        "model.max_model_len=60",
        "dataset.on_overflow=truncate",
        "workload.num_requests=3",
        "workload.concurrency=1",
    )
    summary = frame(files, "summary").iloc[0]
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
    assert rows[R.DROPPED_TURNS].tolist() == [0, 0, 1]
    assert summary[R.TRUNCATED_REQUESTS] == 1
    users = user_messages(tokenizer, 3)
    kept = [users[1], reply(OUTPUT_LEN), users[2]]  # turn 1 and its reply left out
    assert received[2]["received"] == "".join(m + SEPARATOR for m in kept)
    assert (rows[R.INPUT_TOKENS] + OUTPUT_LEN <= 60).all()


def test_refuse_fails_the_turn_that_does_not_fit_naming_its_session(tmp_path, sim_url):
    # The plan's bound (3 x 22 = 66) holds; the exact count of turn 3 (77) does not.
    files, received = sweep(tmp_path, sim_url, "model.max_model_len=70", "workload.num_requests=6")
    rows = frame(files, "requests").sort_values(R.REQUEST_IDX)
    assert rows[R.STATUS].tolist() == ["ok", "ok", "failed"] * 2
    assert sorted(received) == [0, 1, 3, 4]  # the refused turns were never sent
    error = rows[R.ERROR].iloc[5]
    assert error.startswith("context_overflow: session 1 turn 3 needs")
    assert "> the context 70 (dataset.on_overflow=refuse)" in error


def test_a_session_that_cannot_fit_fails_the_trial_before_any_request(tmp_path, sim_url):
    """No model.max_model_len: the model's own (4096, config.json) is read by the worker."""
    files, received = sweep(
        tmp_path,
        sim_url,
        "model.max_model_len=null",
        "dataset.num_turns=4",
        "dataset.user_len=1000",
        "workload.output_len=100",
        "workload.num_requests=4",
        "workload.warmup_requests=0",
    )
    summary = frame(files, "summary").iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert summary[R.ERROR_KIND] == R.ERROR_DATASET
    assert "session 0, turn 4" in summary[R.ERROR_MESSAGE]
    assert "context 4096" in summary[R.ERROR_MESSAGE]
    assert received == {}


PLAIN = [
    "dataset=multi_turn",
    "backend=sim",
    "workload=closed_loop",
    "workload.num_requests=6",
    "workload.output_len=32",
]


def one_line(call):
    with pytest.raises(ConfigError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("override", "words"),
    [
        (["backend=hf"], "backend=hf runs in process"),
        (["backend=tgi", "backend.url=http://127.0.0.1:9"], "backend=tgi"),
        (["dataset.on_overflow=drop"], "dataset.on_overflow='drop' is not valid"),
    ],
)
def test_bad_input_is_one_line_when_planned(override, words):
    assert words in one_line(lambda: build_plan([*PLAIN, *override]))


@pytest.fixture(scope="module")
def planned():
    """A valid multi-turn trial config, to vary one section at a time."""
    (deployment,) = build_plan(PLAIN).deployments
    return deployment.trials[0].config


@pytest.mark.parametrize(
    ("section", "values", "words"),
    [
        ("workload", {"num_requests": 7}, "multiple of dataset.num_turns=3"),
        ("workload", {"name": "offline_batch"}, "cannot run workload=offline_batch"),
        ("workload", {"client_processes": 2}, "unset client_processes"),
        ("workload", {"duration_s": 5.0}, "unset workload.duration_s"),
        ("workload", {"cancel_rate": 0.5}, "stages and cancel_rate"),
        ("model", {"max_model_len": 100}, "session 0, turn 2 (every session is alike)"),
        ("dataset", {"on_overflow": "truncate", "user_len": 99}, "even with its history dropped"),
    ],
)
def test_what_sessions_cannot_run_is_refused_by_the_plan_check(planned, section, values, words):
    config = dataclasses.replace(planned)
    setattr(config, section, dataclasses.replace(getattr(planned, section), **values))
    if section == "dataset":
        config.model = dataclasses.replace(planned.model, max_model_len=100)
    assert words in one_line(lambda: check_plan(config))
    check_plan(planned)  # the unchanged config passes


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"think_time_dist": "normal"}, "dataset.think_time_dist='normal' is not valid"),
        ({"num_turns": 0}, "dataset.num_turns must be > 0"),
        ({"user_len": -4}, "dataset.user_len must be > 0"),
        ({"think_time_s": -1.0}, "dataset.think_time_s must be >= 0"),
    ],
)
def test_bad_dataset_values_are_one_line(values, words):
    assert words in one_line(lambda: MultiTurnDatasetConfig(**values))


def test_report_shows_ttft_by_turn(tmp_path, sim_url):
    files, _ = sweep(tmp_path, sim_url, "workload.num_requests=6", name="turns_report")
    rows = frame(files, "requests")
    paths = write_report(tmp_path / "turns_report", tmp_path / "report")
    text = paths.report_md.read_text()
    assert "## TTFT by turn" in text
    assert (tmp_path / "report" / TURNS_FILE).is_file()
    for turn, group in rows.groupby(R.TURN):
        median = np.percentile(group[R.TTFT_S] * 1e3, 50)
        p90 = np.percentile(group[R.TTFT_S] * 1e3, 90)
        assert f"| {turn} | 2 |" in text
        assert f"{median:,.1f} | {p90:,.1f} |" in text


def test_plain_trials_have_no_session_columns(tmp_path, sim_url):
    collected = []
    run_sweep_here(
        tmp_path,
        [
            "sweep.name=plain",
            "backend=openai",
            f"backend.url={sim_url}",
            "workload=closed_loop",
            "workload.num_requests=2",
            "dataset.input_len=8",
        ],
        collected,
    )
    rows = frame(collected[0], "requests")
    assert rows[R.SESSION].isna().all() and rows[R.TURN].isna().all()
    assert R.SESSIONS not in frame(collected[0], "summary")
    assert pd.isna(rows[R.DROPPED_TURNS]).all()
