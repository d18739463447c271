"""llamacpp_server for real: llama-cpp-python's server on CPU, on the tiny model's GGUF.

The GGUF is written by our converter on the backend's own path (`backends.llamacpp.gguf_path`),
into this session's test cache. The module starts ONE server: the `served` fixture runs a
two-trial `llamacpp_server` deployment through the trial runner
(`sweep.worker.trial.run_deployment`, what a user's sweep runs in its Ray task) and keeps the runner
suspended after its last trial, which leaves that server up for the tests that follow. The last test
closes the runner, which stops the server, and checks that no server process is left. Config, argv
and the bad-input tests (a GGUF that will not load, a missing package) need no shared server.
"""

import sys

import httpx
import pandas as pd
import psutil
import pytest

from backends.llamacpp_server import LlamaCppServerBackend, LlamaCppServerConfig
from sweep.core import records as R
from sweep.core.errors import ConfigError, MissingExtraError
from sweep.datasets.cache import PromptSource
from sweep.loadgen.requests import build_requests
from sweep.worker.trial import DeploymentStarted, run_deployment
from tests.helpers import deployment_of, environment_restored, serve, table

pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")
pytestmark = pytest.mark.timeout(120)

OUTPUT_LEN = 16
OVERSHOOT = 3  # tokens past max_tokens that llama-cpp-python may add to finish a character
NUM_REQUESTS = 64
SERVING = [
    "sweep.name=llamacpp_server",
    "model=tiny_llama",
    "backend=llamacpp_server",
    "backend.n_ctx=512",
    "backend.token_counts=logprobs",  # exact counts (the attached openai trial counts by chunk)
    "workload=throughput_bound",
    "+sweep.grid={workload.batch_size: [1, 8]}",  # two trials: concurrency 1, then 8
    f"workload.num_requests={NUM_REQUESTS}",
    f"workload.output_len={OUTPUT_LEN}",
    "dataset=random",
    "dataset.input_len=24",
    # The tiny model has random weights: some of seed 1's replies are bytes of characters it never
    # finishes (streamed as empty text), some split a character between tokens that one chunk
    # then carries, and some run past max_tokens to finish one.
    "dataset.seed=1",
]


def server_processes(marker):
    """Processes whose command line holds `marker` (a GGUF path), other than this one."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and "llama_cpp.server" in cmdline:
            found.append(proc.info["pid"])
    return found


@pytest.fixture(scope="module")
def test_cache(tmp_path_factory):
    """The session's engine cache (as `cache_dir`), for the tiny model and its conversion."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.getbasetemp() / "engine-cache"
        patch.setenv("SWEEP_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def served(test_cache):
    deployment = deployment_of(SERVING)
    assert len(deployment.trials) == 2
    with serve(deployment, LlamaCppServerBackend, "llama.cpp server") as shared:
        yield shared


def test_trials_share_one_server_on_the_converted_gguf(served, test_cache):
    assert served.starts == 1
    gguf = served.backend.gguf
    assert gguf.is_file() and gguf.is_relative_to(test_cache / "gguf")  # our converter's output
    assert served.backend.served_model == str(gguf)
    log = served.trials[-1].backend_log
    assert log.count("Uvicorn running on") == 1
    for files in served.trials:
        summary = table(files, "summary").iloc[0]
        assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
        # its start, by phase: each phase's end found in the server's log, adding up to the whole
        phases = [summary[p] for p in R.START_PHASES]
        assert all(pd.notna(p) and p >= 0 for p in phases), phases
        assert sum(phases) == pytest.approx(summary[R.SERVER_START_S])


def test_streamed_requests_are_counted_and_timed(served):
    """The server sends no usage: each request asks for logprobs, one entry a token, so every
    reply has its max_tokens or more (to finish a character), and no count is an estimate."""
    for files in served.trials:
        requests = table(files, "requests")
        assert len(requests) == NUM_REQUESTS
        assert (requests[R.STATUS] == R.STATUS_OK).all(), requests[R.ERROR].tolist()
        assert (requests[R.INPUT_TOKENS] == 24).all()
        assert (requests[R.REQUESTED_OUTPUT_TOKENS] == OUTPUT_LEN).all()
        assert (requests[R.OUTPUT_TOKENS] >= OUTPUT_LEN).all()
        assert not requests[R.OUTPUT_TOKENS_ESTIMATED].any()
        assert requests[R.SERVER_OUTPUT_TOKENS].isna().all()  # no usage in llama.cpp's stream
        assert table(files, "summary").iloc[0][R.ESTIMATED_OUTPUT_REQUESTS] == 0
        assert (requests[R.TTFT_S] > 0).all() and (requests[R.E2E_S] >= requests[R.TTFT_S]).all()
        assert (requests[R.ITL_S].map(len) == requests[R.OUTPUT_TOKENS] - 1).all()


def test_every_request_is_counted_as_the_server_counts_it(served):
    """64 requests at output_len=16, closed loop: each request's count is the server's own for
    its prompt, asked again unstreamed (its `usage`; temperature 0, so the same reply): 16, or
    more where llama-cpp-python ran past max_tokens to finish a character. Counted by chunk, a
    chunk that sends the tokens of a character split between them counted one (15, not 16)."""
    trial = deployment_of(SERVING).trials[0]  # concurrency 1, as the served fixture ran it
    prompts = PromptSource(served.backend.model_path, None, False).prompts(
        trial.config.dataset, NUM_REQUESTS + trial.config.workload.warmup_requests
    )
    _, sent = build_requests(prompts, trial.config.workload)
    requests = table(served.trials[0], "requests").set_index(R.REQUEST_IDX)
    with httpx.Client(base_url=served.backend.base_url, timeout=30, trust_env=False) as client:
        own = {
            r.idx: client.post(
                "/v1/completions",
                json={"prompt": r.prompt, "max_tokens": r.max_tokens, "temperature": 0},
            ).json()["usage"]["completion_tokens"]
            for r in sent
        }
    assert len(own) == NUM_REQUESTS and (requests[R.STATUS] == R.STATUS_OK).all()
    assert requests[R.OUTPUT_TOKENS].to_dict() == own
    assert min(own.values()) == OUTPUT_LEN


def test_the_server_stops_at_max_tokens_or_just_after(served):
    """Not streamed, the server's own count: `max_tokens`, or up to 3 more where llama-cpp-python
    finishes a UTF-8 character the last token began (`Llama._create_completion`)."""
    texts = ["The old farmer carried a heavy box", "A brave sailor", "In 2019 the city council"]
    with httpx.Client(base_url=served.backend.base_url, timeout=30, trust_env=False) as client:
        for text in texts:
            for n in (1, 5, OUTPUT_LEN):
                body = {"prompt": text, "max_tokens": n, "temperature": 0}
                answer = client.post("/v1/completions", json=body).json()
                assert n <= answer["usage"]["completion_tokens"] <= n + OVERSHOOT
                assert answer["choices"][0]["finish_reason"] == "length"


def test_concurrent_requests_are_served_one_at_a_time_and_never_cut_short(served):
    """At concurrency 8 the server still generates one reply at a time: consecutive replies'
    first tokens are spread by about one reply's time (as long as it takes at concurrency 1),
    where a server decoding them together would send them within a prefill of each other.
    `interrupt_requests` is off, so no waiting request ends a streaming one.

    Judged by the median spacing, not by every pair: llama-cpp-python releases its lock once a
    reply's events are queued for sending (`get_event_publisher`, a channel of 10), so on a loaded
    machine a reply's last tokens can reach the client after the next reply's first (seen in CI:
    18 ms after it).
    """
    requests = table(served.trials[-1], "requests")  # batch size 8: eight in flight
    alone = table(served.trials[0], "requests")  # concurrency 1: one reply, sent to its end
    # A reply's whole time, not its first token to its end: on a loaded machine a reply's tokens
    # can all reach the client in one read, and then that span is 0 (seen in a full run).
    reply = (alone[R.END_S] - alone[R.SENT_S]).median()
    spacing = requests[R.FIRST_TOKEN_S].sort_values().diff().dropna().median()
    assert reply > 0 and spacing >= 0.5 * reply, (spacing, reply)
    assert (requests[R.OUTPUT_TOKENS] >= alone[R.OUTPUT_TOKENS]).all()


def test_no_metrics_route_so_no_server_columns(served):
    assert served.backend.metrics_scrape() is None and served.backend.server_series == {}
    assert httpx.get(served.backend.base_url + "/metrics", trust_env=False).status_code == 404
    for files in served.trials:
        assert files.server_metrics.num_rows == 0
        series = table(files, "timeseries")
        assert R.KV_CACHE_USAGE_PERCENT not in set(series[R.METRIC])
        summary = table(files, "summary").iloc[0]
        assert pd.isna(summary[R.SERVER_REQUESTS]) and pd.isna(
            summary[R.latency_column(R.SERVER_TTFT, "mean")]
        )


def test_attached_as_openai_it_counts_by_chunk_and_says_where_that_may_fall_short(served):
    """`backend=openai` on the same server: its UUID request ids pass llama-cpp-python's check
    (it answers 400 to any other), and `server_kind=llamacpp` counts one token per chunk, which
    no logprobs slow down. A chunk with a character outside ASCII may carry several tokens: its
    request's count is marked estimated; every other count is the exact one, by logprobs."""
    url = served.backend.base_url
    attached = [
        "backend=openai", f"backend.url={url}", "backend.server_kind=llamacpp",
        f"backend.model={served.backend.served_model}",
        *[o for o in SERVING if not o.startswith(("backend", "+sweep.grid"))],
    ]  # fmt: skip
    with environment_restored():  # the deployment's task sets variables in its process
        files = [
            f
            for f in run_deployment(deployment_of(attached), {})
            if not isinstance(f, DeploymentStarted)
        ]
    requests = table(files[0], "requests")
    assert (requests[R.STATUS] == R.STATUS_OK).all(), requests[R.ERROR].tolist()
    direct = table(served.trials[0], "requests")  # the same prompts, launched, concurrency 1
    by_chunk, exact = requests[R.OUTPUT_TOKENS], direct[R.OUTPUT_TOKENS]
    estimated = requests[R.OUTPUT_TOKENS_ESTIMATED]
    assert (by_chunk[~estimated] == exact[~estimated]).all()
    assert (by_chunk[estimated] <= exact[estimated]).all()
    assert (by_chunk < exact).sum() >= 1  # seed 1 has such a reply: the flag is not idle
    summary = table(files[0], "summary").iloc[0]
    assert summary[R.ESTIMATED_OUTPUT_REQUESTS] == estimated.sum()


def test_stopping_leaves_no_server_process(served):
    with environment_restored():  # the runner's end clears what its start set (module-wide)
        served.runner.close()
    assert not served.backend._server.url
    gone, alive = psutil.wait_procs(served.tree, timeout=15)
    assert not alive, [p.pid for p in alive]
    assert server_processes(str(served.backend.gguf)) == []


def test_a_gguf_that_will_not_load_fails_the_trials_in_one_line(tmp_path, test_cache):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))  # the magic, then no valid header
    deployment = deployment_of([*SERVING, f"backend.gguf_file={bad}"])
    with environment_restored():
        trials = [f for f in run_deployment(deployment, {}) if not isinstance(f, DeploymentStarted)]
    assert len(trials) == len(deployment.trials)
    summaries = [table(files, "summary").iloc[0] for files in trials]
    assert {s[R.TRIAL_STATUS] for s in summaries} == {R.STATUS_FAILED}
    assert {s[R.ERROR_KIND] for s in summaries} == {R.ERROR_BACKEND_START}
    message = summaries[0][R.ERROR_MESSAGE]
    assert "\n" not in message and "Traceback" not in message, message
    assert f"ValueError: Failed to load model from file: {bad}" in message
    assert "(gguf_init_from_reader: " in message  # llama.cpp's own reason, from the log
    assert "Traceback" in trials[0].backend_log  # the whole log is kept beside the results
    assert server_processes(str(bad)) == []


@pytest.mark.parametrize("module", ["llama_cpp", "starlette_context"])
def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[llamacpp\]'") as info:
        LlamaCppServerBackend(LlamaCppServerConfig(), "unused").start()
    assert "\n" not in str(info.value)


def test_argv_one_element_per_value_in_the_servers_own_spelling(monkeypatch):
    config = LlamaCppServerConfig(
        n_ctx=1024,
        n_threads=2,
        model_alias="tiny",
        extra_args={"cache": True, "rope_freq_base": 10000.0, "verbose": False},
    )
    backend = LlamaCppServerBackend(config, "/models/m.gguf")
    argv = backend.argv(8123)
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=True))  # every flag takes one value
    assert pairs == {
        "--model": "/models/m.gguf",
        "--port": "8123",
        "--host": "127.0.0.1",
        "--model_alias": "tiny",
        "--n_gpu_layers": "0",
        "--n_ctx": "1024",
        "--n_batch": "512",
        "--n_threads": "2",
        "--interrupt_requests": "false",  # the server's default would cut replies short
        "--cache": "true",
        "--rope_freq_base": "10000.0",
        "--verbose": "false",
    }
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("HOST", "0.0.0.0")
    env = backend.child_env()
    assert "PORT" not in env and "HOST" not in env  # uvicorn would prefer them to the flags


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"extra_args": {"model": "other.gguf"}}, "is set by the backend itself"),
        ({"extra_args": {"config_file": "c.json"}}, "is set by the backend itself"),
        ({"extra_args": {"n_ctx": 64}}, "duplicates backend.n_ctx"),
        ({"extra_args": {"n-ubatch": 64}}, "is not a plain flag name"),
        ({"extra_args": {"chat_format": "--x"}}, "begins with '-'"),
        ({"model_alias": "a\n--api_key"}, "newline or NUL"),
        ({"gguf_repo": "org/repo"}, "needs backend.gguf_file"),
        ({"convert_outtype": "q4"}, "convert_outtype='q4' is not valid"),
        ({"api": "tgi"}, "api='tgi' is not valid"),
    ],
)
def test_bad_config_is_refused_in_one_line(values, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        LlamaCppServerConfig(**values)
    assert "\n" not in str(info.value)
