"""vLLM for real, on CPU with the tiny model: server, offline engine, openai attach, failures,
study D's semantic-cache proxy in front of the server, and quality scoring through vLLM's
prompt log-probabilities against HF's forward pass (fp32 all).

The server and the offline engine start once for the folder (`conftest.py`: `served`,
`offline`), with LoRA adapters loaded; the trials checked here send every request to the base
model. The last test closes both runners, which stops them, and checks that no vLLM process is
left.
"""

import dataclasses
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from analysis.report.report import write_report
from backends.base import GenRequest
from backends.hf import HFBackend, HFBackendConfig
from backends.models.tokenizer import load_tokenizer
from backends.openai import OpenAIBackend, OpenAIBackendConfig
from backends.vllm_server import VLLM_SERVER_SERIES
from sweep.core import records as R
from sweep.core.cancel_release import release_columns
from sweep.core.config import (
    MultiTurnDatasetConfig,
    PromptsDatasetConfig,
    QualityConfig,
    RandomDatasetConfig,
    WorkloadConfig,
)
from sweep.core.errors import BackendError
from sweep.datasets import load_prompts
from sweep.datasets.cache import PromptSource
from sweep.datasets.quality_texts import load_text_set, token_ids
from sweep.loadgen.cancel import cancel_rules
from sweep.loadgen.engine import run_engine_workload
from sweep.loadgen.http import endpoint_of, run_http_workload
from sweep.loadgen.requests import build_requests
from sweep.loadgen.sessions import SEPARATOR, run_sessions
from sweep.measure.telemetry import Sampler
from sweep.worker.trial import DeploymentStarted, run_deployment
from tests.backends.on_vllm.deployments import OUTPUT_LEN, SERVING
from tests.helpers import deployment_of, own_processes, run_sweep_here, table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run_all(deployment):
    """Run a deployment with the trial runner; return its trial files."""
    return [f for f in run_deployment(deployment, {}) if not isinstance(f, DeploymentStarted)]


def base_trials(served):
    """The shared server's two `quickstart_serving` trials (its last trial is the LoRA one)."""
    return served.trials[:2]


def test_trials_share_one_server_start(served):
    assert served.starts == 1
    assert served.resets == 2  # between the three trials
    log = served.trials[-1].backend_log
    assert log.count("Starting vLLM server on") == 1
    assert log.count("Resetting prefix cache") >= 2
    for files in served.trials:
        summary = table(files, "summary").iloc[0]
        assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]


def test_every_request_returns_exactly_the_requested_tokens(served):
    for files in base_trials(served):
        requests = table(files, "requests")
        assert len(requests) == 48
        assert (requests[R.STATUS] == R.STATUS_OK).all()
        assert (requests[R.OUTPUT_TOKENS] == OUTPUT_LEN).all()
        assert (requests[R.SERVER_OUTPUT_TOKENS] == OUTPUT_LEN).all()
        assert (requests[R.INPUT_TOKENS] == 24).all()
        assert (requests[R.TTFT_S] > 0).all() and (requests[R.E2E_S] >= requests[R.TTFT_S]).all()
        # One gap per read after the first: how many reads a stream takes is the OS's choice
        # (several tokens may come in one read, the whole answer even), never more than tokens.
        assert requests[R.ITL_S].map(len).between(0, OUTPUT_LEN - 1).all()
        gaps = requests[R.ITL_S].map(sum)
        assert (requests[R.TTFT_S] + gaps <= requests[R.E2E_S] + 1e-6).all()


def test_kv_cache_usage_and_queue_are_sampled_from_metrics(served):
    for files in base_trials(served):
        series = table(files, "timeseries")
        server = series[series[R.SOURCE] == "server"]
        wide = server.pivot_table(index=R.T_S, columns=R.METRIC, values=R.VALUE)
        assert {R.KV_CACHE_USAGE_PERCENT, R.RUNNING_REQUESTS, R.WAITING_REQUESTS} <= set(wide)
        assert len(wide) >= 2 and wide[R.KV_CACHE_USAGE_PERCENT].between(0, 100).all()
        # one scrape is one scheduler snapshot: running requests hold blocks, idle ones none
        busy = wide[wide[R.RUNNING_REQUESTS] > 0]
        assert (busy[R.KV_CACHE_USAGE_PERCENT] > 0).all()
        idle = wide[(wide[R.RUNNING_REQUESTS] == 0) & (wide[R.WAITING_REQUESTS] == 0)]
        assert (idle[R.KV_CACHE_USAGE_PERCENT] == 0).all()


def test_the_whole_metrics_is_captured_and_mapped_into_the_summary(served):
    mapped = {f for r, f in VLLM_SERVER_SERIES.items() if not r.startswith("spec_")}
    col = R.latency_column
    for files in base_trials(served):
        capture = table(files, "server_metrics")
        assert mapped <= set(capture[R.FAMILY]) and len(capture) > 300
        summary = table(files, "summary").iloc[0]
        sent = summary[R.NUM_REQUESTS] + summary["workload.warmup_requests"]
        assert summary[R.SERVER_REQUESTS] == sent  # the server counts the warm-up too
        # In ms as the client's (vLLM's are seconds: left unconverted it would read 0.0x); the
        # server's mean includes the warm-up. The server starts its clock when the engine takes
        # the request, after the HTTP front end: on two busy cores the client's TTFT was 22x
        # the server's in one CI-like run (374 ms against 16.8 ms), so only an upper bound holds.
        server_ttft = summary[col(R.SERVER_TTFT, "mean")]
        assert 1.0 < server_ttft < 2 * summary[col("ttft", "p99")]
        queue = summary[col(R.SERVER_QUEUE, "mean")]
        prefill = summary[col(R.SERVER_PREFILL, "mean")]
        assert queue >= 0 and 0 < prefill and queue + prefill <= server_ttft + 5.0
        assert 0 < summary[col(R.SERVER_ITL, "mean")] and 0 < summary[col(R.SERVER_TPOT, "mean")]
        assert 0 <= summary[R.SERVER_PREFIX_CACHE_HIT_PERCENT] <= 100
        assert summary[R.SERVER_PREEMPTIONS] >= 0
        assert pd.isna(summary[R.SPEC_ACCEPTANCE_PERCENT])  # no drafter


def test_openai_backend_attaches_to_the_running_server(served):
    url = served.backend.base_url + "/v1"  # a trailing /v1, as users often write it
    backend = OpenAIBackend(OpenAIBackendConfig(url=url), "unused-model-path")
    backend.start()
    assert backend.served_model == served.backend.served_model  # listed by /v1/models
    requests = [GenRequest(i, "The old farmer carried a box", (), 5 + i) for i in range(3)]
    workload = WorkloadConfig(name="closed_loop", concurrency=3, num_requests=3)
    rows = [t.record("t", 0.0) for t in run_http_workload(backend, requests, [], workload)]
    assert [r[R.OUTPUT_TOKENS] for r in rows] == [5, 6, 7]
    assert all(r[R.STATUS] == R.STATUS_OK for r in rows)
    assert served.backend.pid == served.tree[0].pid  # still the one server


def test_standard_bodies_count_the_tokens_that_stream_with_no_text(served):
    """Attached with standard OpenAI bodies (no per-chunk usage), every reply counts in full.

    The tiny model's greedy replies to some random prompts decode to no text at all: vLLM
    streams a chunk a step with empty text, and its final usage says how many tokens. Such a
    reply is that many tokens, timed from its first chunk, not a failed request with "no tokens
    received" (4 of 100 were, in a parity run of 64-token replies).
    """
    backend = OpenAIBackend(OpenAIBackendConfig(url=served.backend.base_url), "unused-model-path")
    backend.start()
    source = PromptSource(served.backend.model_path, None, False)
    prompts = source.prompts(RandomDatasetConfig(input_len=128), 100)
    workload = WorkloadConfig(
        name="closed_loop", concurrency=16, num_requests=100, warmup_requests=0, output_len=8
    )
    warmup, requests = build_requests(prompts, workload)
    trackers = run_http_workload(backend, requests, warmup, workload)
    silent = [t for t in trackers if t.chunk_times and not "".join(t.chunk_texts)]
    print(f"{len(silent)} of {len(trackers)} replies streamed no text")
    assert silent  # the case this test is about
    rows = [t.record("t", 0.0) for t in trackers]
    failed = [r[R.ERROR] for r in rows if r[R.STATUS] != R.STATUS_OK]
    assert not failed, failed[:3]
    assert all(r[R.OUTPUT_TOKENS] == 8 == r[R.SERVER_OUTPUT_TOKENS] for r in rows)
    assert all(0 < r[R.TTFT_S] <= r[R.E2E_S] for r in rows)  # timed from the first chunk
    # At most a gap per token after the first. Not "at least one gap": when its streaming loop
    # falls behind, vLLM merges the steps not yet sent into one delta (its RequestOutputCollector
    # aggregates DELTA outputs), so on a loaded machine all 8 tokens can come in one chunk. This
    # failed so once, with three test workers on two cores.
    assert all(len(r[R.ITL_S]) <= r[R.OUTPUT_TOKENS] - 1 for r in rows)


def test_a_capacity_search_on_the_vllm_server_brackets_its_answer(served, tmp_path):
    """search=capacity through the trial runner, attached to the shared vLLM server.

    The SLO is twice the end-to-end latency one stream gets from this server (measured first,
    with the same workload), so it holds at low concurrency and breaks before 48 streams on two
    cores. (Not TPOT: on a busy CPU the tiny model's tokens can reach the client in one chunk,
    and a TPOT of 0 is then what the client saw.) The answer must pass the SLO and the next
    probe above it must fail it.
    """
    e2e = R.latency_column("e2e", "median")
    workload = [
        "sweep.name=vllm_capacity",
        "backend=openai",
        "backend.num_gpus=0",
        f"backend.url={served.backend.base_url}",
        "backend.extensions=true",
        "workload=closed_loop",
        "workload.num_requests=48",
        "workload.output_len=24",
        "workload.warmup_requests=0",
        "dataset.input_len=24",
    ]
    alone = []
    run_sweep_here(tmp_path / "alone", [*workload, "workload.concurrency=1"], alone)
    limit = 2 * alone[0].summary.to_pylist()[0][e2e]
    collected = []
    search = ["search=capacity", "search.start=2", "search.max_load=48", "search.tolerance=0.3"]
    overrides = [*workload, *search, "search.max_probes=6", f"slo.e2e_ms_median={limit:.3f}"]
    run_sweep_here(tmp_path / "search", overrides, collected)
    rows = pd.DataFrame([f.summary.to_pylist()[0] for f in collected])
    assert (rows[R.TRIAL_STATUS] == R.STATUS_OK).all(), rows[R.ERROR_MESSAGE].tolist()
    curve = rows[[R.SEARCH_LOAD, e2e, R.SLO_PASSED]].to_string()
    passed = rows[rows[R.SLO_PASSED]]
    assert not passed.empty, f"limit {limit:.2f} ms:\n{curve}"
    best = passed[R.SEARCH_LOAD].max()
    above = rows[(rows[R.SEARCH_LOAD] > best)].sort_values(R.SEARCH_LOAD)
    assert not above.empty, (
        f"nothing above concurrency {best} failed (limit {limit:.2f} ms):\n{curve}"
    )
    nearest = above.iloc[0]
    assert not nearest[R.SLO_PASSED]
    assert nearest[e2e] > limit
    assert passed.loc[passed[R.SEARCH_LOAD] == best, e2e].iloc[0] <= limit
    assert rows[R.SEARCH_LOAD].is_unique and len(rows) <= 6


# Issue 33's acceptance: vLLM's prompt log-probabilities equal HF's forward pass, fp32 both.
# Measured on this CPU: at most 2e-6 apart (float32 kernels summing in another order).
SCORE_BOUND = 1e-4
TOP_K = 20  # vLLM's default --max-logprobs


@pytest.fixture(scope="module")
def quality_ids(model_dir):
    """The first 6 texts of the bundled quality set, as the worker tokenizes them."""
    text_set = load_text_set(QualityConfig(name="on", max_texts=6))
    return token_ids(text_set, load_tokenizer(model_dir), context=512, too_long="refuse")


@pytest.fixture(scope="module")
def hf_scores(model_dir, quality_ids):
    with HFBackend(HFBackendConfig(dtype="fp32"), model_dir) as hf:
        return [hf.score(ids, TOP_K) for ids in quality_ids]


def assert_same_scores(found, expected, what):
    """Every log-probability within SCORE_BOUND; top-K ids equal where no two are that close."""
    worst = 0.0
    for got, want in zip(found, expected, strict=True):
        assert got.token_ids.tolist() == want.token_ids.tolist(), what
        worst = max(worst, float(np.abs(got.token_logprobs - want.token_logprobs).max()))
        worst = max(worst, float(np.abs(got.top_logprobs - want.top_logprobs).max()))
        # ranks may swap only between near-ties: compare ids where the gap is clear
        gaps = np.diff(want.top_logprobs, axis=1)
        clear = np.concatenate([gaps[:, :1], gaps], axis=1) < -SCORE_BOUND
        clear[:, :-1] &= gaps < -SCORE_BOUND
        assert (got.top_ids[clear] == want.top_ids[clear]).all(), what
    assert worst <= SCORE_BOUND, (what, worst)
    return worst


def test_server_prompt_logprobs_equal_hfs_forward_pass(served, quality_ids, hf_scores):
    """vLLM's server (`prompt_logprobs` on /v1/completions) scores the set as HF does."""
    found = [served.backend.score(ids, TOP_K) for ids in quality_ids]
    assert found[0].top_ids.shape == (len(quality_ids[0]) - 1, TOP_K)
    worst = assert_same_scores(found, hf_scores, "vllm_server")
    print(f"vllm_server against HF: largest difference {worst:.2e}")
    # one position off would compare each distribution with its neighbour's: far apart
    shifted = np.abs(found[0].token_logprobs[1:] - hf_scores[0].token_logprobs[:-1]).max()
    assert shifted > 1e-2


def test_openai_attach_to_vllm_scores_and_an_unknown_endpoint_says_why(served, quality_ids):
    url = served.backend.base_url
    named = OpenAIBackend(OpenAIBackendConfig(url=url, server_kind="vllm"), "unused-model-path")
    named.start()
    assert named.scoring_unavailable is None
    expected = served.backend.score(quality_ids[0], 5)
    got = named.score(quality_ids[0], 5)
    assert got.token_logprobs.tolist() == expected.token_logprobs.tolist()
    plain = OpenAIBackend(OpenAIBackendConfig(url=url), "unused-model-path")
    assert "names tokens by their text" in plain.scoring_unavailable


def test_more_alternatives_than_the_server_lists_is_one_line(served, quality_ids):
    with pytest.raises(BackendError) as raised:
        served.backend.score(quality_ids[0], TOP_K + 1)
    message = str(raised.value)
    assert "answered 400" in message and "\n" not in message


def test_offline_engine_prompt_logprobs_equal_hfs_forward_pass(offline, quality_ids, hf_scores):
    found = [offline.backend.score(ids, TOP_K) for ids in quality_ids]
    worst = assert_same_scores(found, hf_scores, "vllm")
    print(f"vllm (offline) against HF: largest difference {worst:.2e}")


def test_offline_engine_exact_tokens_and_real_first_token_times(offline):
    requests = [
        GenRequest(i, "", tuple(range(5, 5 + n)), m)
        for i, (n, m) in enumerate([(16, 9), (40, 3), (8, 17), (24, 1)])
    ]
    workload = WorkloadConfig(name="throughput_bound", batch_size=4, num_requests=4)
    warm = [GenRequest(99, "", (5, 6, 7), 2)]
    engine = offline.backend
    rows = [t.record("t", 0.0) for t in run_engine_workload(engine, requests, warm, workload)]
    assert [r[R.OUTPUT_TOKENS] for r in rows] == [9, 3, 17, 1]
    assert [r[R.SERVER_OUTPUT_TOKENS] for r in rows] == [9, 3, 17, 1]
    for row in rows:
        assert 0 < row[R.TTFT_S] <= row[R.E2E_S]
        assert len(row[R.ITL_S]) == row[R.OUTPUT_TOKENS] - 1
    # tokens arrive step by step: the 17-token request's first token comes long before its end
    longest = rows[2]
    assert longest[R.TTFT_S] < 0.5 * longest[R.E2E_S]


def test_server_that_cannot_start_is_failed_trials_with_its_log_tail():
    deployment = deployment_of([*SERVING, "+backend.extra_args.no-such-flag=1"])
    assert len(deployment.trials) == 2
    trials = run_all(deployment)
    assert len(trials) == len(deployment.trials)  # every trial of the deployment is recorded
    summaries = [table(files, "summary").iloc[0] for files in trials]
    assert {s[R.TRIAL_STATUS] for s in summaries} == {R.STATUS_FAILED}
    assert {s[R.ERROR_KIND] for s in summaries} == {R.ERROR_BACKEND_START}
    files, message = trials[0], summaries[0][R.ERROR_MESSAGE]
    assert "--- server log tail ---" in message and "--no-such-flag" in message
    assert "unrecognized arguments" in message
    assert "no-such-flag" in files.backend_log
    # failed on the server's exit, not at the start-up timeout (whatever this machine's speed)
    assert message.startswith("server exited with code 2 before"), message[:200]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_multi_turn_session_carries_the_actual_replies(served, api):
    """Turn 3 sends turn 1's and 2's replies as vLLM streamed them; vLLM counts what we count."""
    tokenizer = load_tokenizer(served.backend.model_path)
    dataset = MultiTurnDatasetConfig(num_turns=3, user_len=12)
    users = [p.text for p in load_prompts(dataset, tokenizer, 3)]
    requests = [GenRequest(i, text, (), 8) for i, text in enumerate(users)]
    workload = WorkloadConfig(name="closed_loop", concurrency=1, num_requests=3, warmup_requests=0)
    endpoint = dataclasses.replace(endpoint_of(served.backend), api=api)
    turns = run_sessions(endpoint, requests, [], workload, dataset, tokenizer, context=None)
    assert all(t.completed for t in turns), [t.error for t in turns]
    replies = [t.reply_text for t in turns]
    assert replies[0] and [t.server_tokens for t in turns] == [8, 8, 8]
    history = [users[0], replies[0], users[1], replies[1], users[2]]
    third = turns[2].request
    if api == "completions":
        assert third.prompt == "".join(m + SEPARATOR for m in history)
        ids = tokenizer(third.prompt).input_ids
    else:
        roles = ["user", "assistant"] * 2 + ["user"]
        assert third.messages == tuple(zip(roles, history, strict=True))
        chat = [{"role": r, "content": c} for r, c in third.messages]
        text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False).input_ids
    assert replies[0] in (third.prompt or third.messages[1][1])
    assert turns[2].input_tokens == len(ids) == turns[2].server_input_tokens  # vLLM's count
    inputs = [t.input_tokens for t in turns]
    assert inputs == [t.server_input_tokens for t in turns] and inputs[0] < inputs[1] < inputs[2]


# Issue 14: a prefix cache against what the prompts offered. vLLM's CPU blocks are 128 tokens and
# it reuses whole blocks only: 896 = 7 blocks of shared prefix, 100 tokens of a prompt's own.
PREFIX_CACHE = [
    "backend=openai",
    "backend.num_gpus=0",
    "backend.extensions=true",
    "backend.server_kind=vllm",  # read its /metrics through vLLM's map: the hit columns
    "workload=closed_loop",
    "workload.concurrency=2",
    "workload.num_requests=24",
    "workload.output_len=4",
]
DATASETS = {
    "random": ["dataset=random", "dataset.input_len=996", "dataset.seed=14"],
    "shared_prefix": [
        "dataset=shared_prefix",
        "dataset.num_groups=4",
        "dataset.prefix_len=896",
        "dataset.suffix_len=100",
        "dataset.seed=14",
    ],
}


def test_shared_prefixes_hit_the_servers_prefix_cache_and_random_ones_do_not(served, tmp_path):
    """vLLM's own hit rate (its prefix-cache hits over queries, deltas over the trial) beside the
    share of input tokens a perfect prefix cache could reuse, for ~90%-shared prompts and random
    ones. The cache is emptied before each trial (an attached endpoint is never reset)."""
    rows = {}
    for name, dataset in DATASETS.items():
        served.backend.reset_between_trials()
        url = f"backend.url={served.backend.base_url}"
        files = []
        run_sweep_here(tmp_path / name, [f"sweep.name={name}", *PREFIX_CACHE, url, *dataset], files)
        rows[name] = files[0].summary.to_pylist()[0]
        assert rows[name][R.TRIAL_STATUS] == R.STATUS_OK, rows[name][R.ERROR_MESSAGE]
        assert rows[name][R.SERVER_REQUESTS] == 25 and rows[name][R.PROMPT_REPEAT_PERCENT] == 0
    hit = {n: r[R.SERVER_PREFIX_CACHE_HIT_PERCENT] for n, r in rows.items()}
    ideal = {n: r[R.PROMPT_REUSABLE_PREFIX_PERCENT] for n, r in rows.items()}
    print(f"prefix-cache hits {hit}, reusable (ideal) {ideal}")
    # 25 prompts (1 warm-up) in 4 groups: 21 reuse 896 of their 996 tokens (75.5%), plus chance
    assert 75.0 < ideal["shared_prefix"] < 77.0 and ideal["random"] < 1.0
    assert hit["random"] < 1.0  # nothing a block long in common
    # whole blocks of the shared part only, and not while a group's first prompt is in prefill
    assert 40.0 < hit["shared_prefix"] <= ideal["shared_prefix"] + 1.0


def test_chat_input_lengths_are_the_servers_own_count(served, cache_dir):
    """With api=chat the prompts' ids render the chat template as vLLM does: same counts."""
    source = PromptSource(served.backend.model_path, None, False, chat=True)
    prompts = source.prompts(RandomDatasetConfig(input_len=40, seed=5), 3)
    prompts += source.prompts(PromptsDatasetConfig(task="qa"), 3)
    assert [p.input_tokens for p in prompts[:3]] == [40, 40, 40]  # exact, template included
    config = OpenAIBackendConfig(url=served.backend.base_url, api="chat", extensions=True)
    backend = OpenAIBackend(config, "unused-model-path")
    backend.start()
    workload = WorkloadConfig(
        name="closed_loop", concurrency=3, num_requests=6, warmup_requests=0, output_len=3
    )
    warmup, requests = build_requests(prompts, workload)
    trackers = sorted(run_http_workload(backend, requests, warmup, workload), key=lambda t: t.idx)
    assert [t.server_input_tokens for t in trackers] == [p.input_tokens for p in prompts]


# Issue 16: study D's semantic cache (`proxy=semantic_cache`) in front of the shared server.
SEMANTIC_CACHE = [
    "sweep.name=semantic_cache",
    "backend=openai",
    "backend.num_gpus=0",
    "backend.extensions=true",
    "backend.server_kind=vllm",  # vLLM's /metrics map: how many requests the server itself saw
    "workload=closed_loop",
    "workload.concurrency=1",
    "workload.num_requests=32",
    "workload.warmup_requests=0",
    "workload.output_len=16",
    "dataset.input_len=64",
    "dataset.paraphrase_rate=0.5",
    "proxy=semantic_cache",
    "+sweep.grid.proxy=[none,semantic_cache]",
]


def test_a_semantic_cache_answers_the_rewordings_far_sooner_than_vllm(served, tmp_path):
    """Half the prompts reword an earlier one (one token changed): the proxy answers about half
    the requests from its cache, at a median TTFT far below that of those vLLM answered, and
    vLLM sees only the misses. One trial without the proxy, one behind it, in one sweep."""
    files = []
    url = f"backend.url={served.backend.base_url}"
    run_sweep_here(tmp_path, [*SEMANTIC_CACHE, url], files)
    trials = {f.summary.to_pylist()[0]["proxy.name"]: f for f in files}
    for trial in trials.values():
        summary = trial.summary.to_pylist()[0]
        assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    rows = table(trials["semantic_cache"], "requests")
    assert (rows[R.STATUS] == R.STATUS_OK).all() and (rows[R.OUTPUT_TOKENS] == 16).all()
    hit = rows[R.CACHE_HIT].astype(bool)
    ttft_hit, ttft_miss = rows[hit][R.TTFT_S].median(), rows[~hit][R.TTFT_S].median()
    print(f"hit rate {hit.mean():.2f}, TTFT p50 hits {ttft_hit * 1e3:.1f} ms, "
          f"misses {ttft_miss * 1e3:.1f} ms")  # fmt: skip
    assert 0.4 <= hit.mean() <= 0.5  # 0.5 unless an answer streamed no text (not cached)
    assert ttft_hit < 0.25 * ttft_miss
    cached = table(trials["semantic_cache"], "summary").iloc[0]
    plain = table(trials["none"], "summary").iloc[0]
    assert cached[R.SERVER_REQUESTS] == (~hit).sum() and plain[R.SERVER_REQUESTS] == 32
    assert table(trials["none"], "requests")[R.CACHE_HIT].isna().all()


def test_vllm_lets_go_of_the_requests_the_client_cancels(served):
    """Cut after 4 tokens, vLLM aborts them: far sooner than their answers would have ended.

    The server's running count, sampled every 50 ms beside the requests in flight, says how
    long it held each (`sweep.core.cancel_release`).
    """
    backend = served.backend
    load = WorkloadConfig(
        name="closed_loop", concurrency=8, num_requests=16, warmup_requests=0,
        cancel_rate=0.5, cancel_after="tokens", cancel_after_tokens=4,
    )  # fmt: skip
    requests = [GenRequest(i, "Once upon a time", (), OUTPUT_LEN) for i in range(16)]
    sources = [(source, 0.05) for source in backend.telemetry_sources()]
    with Sampler(sources, 0.0) as sampler:  # the records' clock: t0 = 0
        trackers = run_http_workload(backend, requests, [], load)
    rows = [t.record("cancel", 0.0) for t in trackers]
    cancelled = [r for r in rows if r[R.CANCELLED]]
    assert {r[R.REQUEST_IDX] for r in cancelled} == set(cancel_rules(load, 16))
    assert all(4 <= r[R.OUTPUT_TOKENS] < OUTPUT_LEN for r in cancelled), cancelled
    done = [r for r in rows if not r[R.CANCELLED]]
    assert all(r[R.STATUS] == R.STATUS_OK and r[R.OUTPUT_TOKENS] == OUTPUT_LEN for r in done)
    samples = pd.DataFrame(sampler.rows, columns=[R.T_S, R.SOURCE, R.METRIC, R.VALUE])
    columns = release_columns(pd.DataFrame(rows), samples)
    rest_ms = np.median([r[R.TPOT_S] for r in done]) * (OUTPUT_LEN - 4) * 1e3
    assert columns[R.CANCEL_RELEASE_SAMPLES] >= 5
    assert columns[R.CANCEL_RELEASE_MS_MEAN] < rest_ms / 4, (columns, rest_ms)


def test_vllm_keeps_to_a_json_schema_enforced_and_the_findings_compare_it(served, tmp_path):
    """The shipped `person` schema, enforced (vLLM's structured-output backend) and not, side by
    side on the same requests: every enforced answer is valid; the findings state both."""
    overrides = [
        "sweep.name=vllm_structured",
        "backend=openai",
        "backend.num_gpus=0",
        f"backend.url={served.backend.base_url}",
        "backend.extensions=true",
        "workload=closed_loop",
        "workload.concurrency=4",
        "workload.num_requests=24",  # the report's minimum to state a speed
        f"workload.output_len={OUTPUT_LEN}",
        "workload.warmup_requests=0",
        # text prompts: a random prompt's ids can end inside a character, and vLLM 0.32 then
        # starts the first delta with the prompt's undecoded tail (seen: 7 of 24 answers)
        "dataset=prompts",
        "workload.structured=json_schema",
        "+sweep.grid={workload.structured_enforce: [true, false]}",
    ]
    collected = []
    out = run_sweep_here(tmp_path, overrides, collected)
    rows = pd.DataFrame([f.summary.to_pylist()[0] for f in collected])
    assert (rows[R.TRIAL_STATUS] == R.STATUS_OK).all(), rows[R.ERROR_MESSAGE].tolist()
    by = rows.set_index("workload.structured_enforce")
    enforced = table(collected[list(rows["workload.structured_enforce"]).index(True)], "requests")
    print(by[[R.STRUCTURED_VALID_FRACTION, R.OUTPUT_THROUGHPUT, R.OUTPUT_TOKENS_TOTAL]])
    print(enforced[R.STRUCTURED_ERROR].value_counts(dropna=False))
    assert by.loc[True, R.STRUCTURED_CHECKED] == 24
    assert by.loc[True, R.STRUCTURED_VALID_FRACTION] == 1.0
    free = by.loc[False, R.STRUCTURED_VALID_FRACTION]
    assert free < 1.0  # the tiny model, unconstrained
    paths = write_report(out)
    findings = paths.findings
    assert "## Server start-up" not in paths.report_md.read_text()  # attached: no start of ours
    lines = [f for f in findings if "structured answers valid" in f or "Enforcing" in f]
    assert len(lines) == 3, findings
    assert "100% of 24 structured answers valid (json_schema person, enforced)" in lines[0]
    # the speed is stated unless the request checks distrust a trial (then they say why)
    assert re.fullmatch(
        rf"Enforcing the constraint: 100% valid against {free:.0%} without"
        r"(, at \d+\.\d\dx the output tok/s of the same requests unconstrained|"
        r"; speed not stated \(trials [a-z ,-]+: \*Request checks\*\))\.",
        lines[2],
    ), lines[2]


def test_vllm_calls_tools_validly_when_required_or_named_in_growing_sessions(served, tmp_path):
    """Agent sessions on vLLM's CPU server: each reply's call answered by a tool result.

    With a named function (and with `required`) vLLM keeps the tiny model to the tools' schemas
    with its structured-output backend; the calls' arguments are checked against them, each
    turn's prompt is counted as vLLM counts it, and the later turns find the earlier ones in the
    prefix cache (`--enable-prompt-tokens-details`).
    """
    overrides = [
        "sweep.name=vllm_tools",
        "backend=openai",
        "backend.num_gpus=0",
        f"backend.url={served.backend.base_url}",
        "backend.extensions=true",
        "backend.api=chat",
        "dataset=multi_turn",
        "dataset.num_turns=3",
        "dataset.user_len=128",  # vLLM's CPU build caches blocks of 128 tokens: a whole one
        "dataset.tools=agent",
        "dataset.tool_latency_s=0.05",
        "workload=closed_loop",
        "workload.concurrency=2",
        "workload.num_requests=12",
        f"workload.output_len={OUTPUT_LEN}",
        "workload.warmup_requests=0",
        "+sweep.grid={dataset.tool_choice: [get_weather, required]}",
    ]
    collected = []
    out = run_sweep_here(tmp_path, overrides, collected)
    for files in collected:
        summary = files.summary.to_pylist()[0]
        choice = summary["dataset.tool_choice"]
        rows = table(files, "requests").sort_values(R.REQUEST_IDX)
        shown = [R.TOOL_CALLS, R.TOOL_NAME, R.TOOL_ARGS_VALID, R.TOOL_ARGS_ERROR, R.INPUT_TOKENS]
        print(choice, rows[[*shown, R.SERVER_INPUT_TOKENS, R.CACHED_INPUT_TOKENS]])
        assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
        assert (rows[R.STATUS] == R.STATUS_OK).all(), rows[R.ERROR].tolist()
        assert (rows[R.TOOL_CALLS] >= 1).all()  # every reply called
        assert rows[R.TOOL_RESULT].tolist() == [False, True, True] * 4
        assert summary[R.TOOL_ARGS_VALID_FRACTION] == 1.0, rows[R.TOOL_ARGS_ERROR].tolist()
        if choice == "get_weather":
            assert rows[R.TOOL_NAME].tolist() == ["get_weather"] * 12
        assert rows[R.INPUT_TOKENS].tolist() == rows[R.SERVER_INPUT_TOKENS].tolist()
        later = rows[rows[R.TURN] > 1]
        assert (later[R.CACHED_INPUT_TOKENS] > 0).all(), later[R.CACHED_INPUT_TOKENS].tolist()
        assert summary[R.CACHED_INPUT_PERCENT] > 0
    paths = write_report(out)
    turns = paths.report_md.read_text().split("## TTFT by turn", 1)[1].split("\n## ", 1)[0]
    assert "Cached input (%)" in turns
    findings = paths.findings
    lines = [f for f in findings if "tool calls in 12 replies of 4 sessions" in f]
    assert len(lines) == 2 and all("100% with valid arguments" in f for f in lines), findings


def test_stopping_leaves_no_vllm_process(served, offline):
    """The folder's last test of a live engine: the shared server and the offline engine stop
    (their fixtures' teardown closes the runners again: a no-op), and all is gone: processes,
    and the sockets vLLM's processes talk over, kept in each one's own folder meanwhile."""
    folders = [served.backend._server.folder, Path(offline.backend._sockets)]
    for folder in folders:
        assert any(stat.S_ISSOCK(f.stat().st_mode) for f in folder.iterdir()), folder
    served.runner.close()
    offline.runner.close()
    assert not any(folder.exists() for folder in folders)
    assert not served.backend._server.url
    assert offline.backend._llm is None
    gone, alive = psutil.wait_procs(served.tree, timeout=15)
    assert not alive, [p.pid for p in alive]
    assert [p.pid for p in own_processes("vllm.entrypoints")] == []
    engine_cores = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "VLLM" in proc.name() or "EngineCore" in " ".join(proc.cmdline()):
                engine_cores.append(proc.pid)
        except psutil.Error:
            continue  # exited while we looked
    assert engine_cores == []
