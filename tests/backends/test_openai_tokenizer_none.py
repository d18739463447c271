"""An attached endpoint without a local tokenizer, and the server behind it named for its /metrics.

`backend.tokenizer=none`: no tokenizer is loaded (the model here is a hub id that cannot be
loaded offline, so a trial that tried would fail), prompts are sentences of the bundled corpus at
0.75 words a token, and every count is the server's `usage`: the strict server says 2 prompt
tokens whatever the prompt, the sim one per word. An endpoint that sends no usage fails the
trial in one line. `backend.server_kind=sim` maps the sim's /metrics into the summary's
server-side columns, which stay empty with `none`.
"""

import json
import sys

import pandas as pd
import pytest

from analysis.report.report import write_report
from backends.openai import OpenAIBackend, OpenAIBackendConfig
from backends.process.launcher import ServerLauncher
from sweep.core import records as R
from sweep.core.config import PromptsDatasetConfig, RandomDatasetConfig
from sweep.core.errors import BackendError, ConfigError
from sweep.datasets import corpus
from sweep.datasets.cache import PromptSource
from sweep.loadgen.attribution import NO_USAGE, NO_USAGE_AT_ALL, require_server_counts
from sweep.loadgen.recorder import RequestTracker
from tests.backends.test_openai_endpoint import run_sweep, strict  # noqa: F401 - a fixture
from tests.strict_server import MODEL

pytestmark = pytest.mark.timeout(90)

SERVER_COUNTS = "Token counts are the server's own (no local tokenizer) in 1 of 1 trial(s)"
NO_TOKENIZER = ("backend.tokenizer=none", "model=opt_125m")  # a hub id: unloadable offline
INPUT_LEN = 16  # SMALL_CLOSED_LOOP's dataset.input_len
SERVER_TTFT_MEAN = R.latency_column(R.SERVER_TTFT, "mean")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub: a tokenizer load of `model=opt_125m` fails at once instead of downloading."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def results(folder):
    """(summary row, requests frame) of a one-trial sweep."""
    summary = pd.read_parquet(next(folder.rglob("summary.parquet"))).iloc[0]
    return summary, pd.read_parquet(next(folder.rglob("requests.parquet")))


# --- prompts without a tokenizer ---


def test_random_prompts_are_corpus_text_of_about_the_length():
    cfg = RandomDatasetConfig(input_len=200, seed=3)
    source = PromptSource("/nonexistent/model", None, False, local=False)
    made = source.prompts(cfg, 6)
    assert source.tokenizer() is None and not source.is_cached(cfg, 6)
    assert [len(p.text.split()) for p in made] == [150] * 6  # 200 tokens * 0.75
    assert all(p.token_ids == () and p.input_tokens == 0 for p in made)
    assert len({p.text for p in made}) == 6 and made == source.prompts(cfg, 6)  # seeded
    words = set(" ".join(corpus.corpus()).split())
    assert all(set(p.text.split()) <= words for p in made)
    varied = source.prompts(RandomDatasetConfig(input_len=100, range_ratio=0.5), 20)
    lengths = [len(p.text.split()) for p in varied]
    assert len(set(lengths)) > 1 and 37 <= min(lengths) and max(lengths) <= 113
    assert corpus.words_for(1) == 1 == corpus.words_for(0)


def test_text_datasets_keep_their_text_untokenized():
    made = PromptSource("/nonexistent/model", None, False, local=False).prompts(
        PromptsDatasetConfig(task="qa"), 3
    )
    assert [(p.task, p.token_ids) for p in made] == [("qa", ())] * 3 and made[0].text


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"tokenizer": "remote"},
            "backend.tokenizer='remote' is not valid; choose one of: local, none",
        ),
        (
            {"server_kind": "ollama"},
            "backend.server_kind='ollama' is not valid; choose one of: vllm, tgi, sim, sglang, "
            "llamacpp, none",
        ),
    ],
)
def test_bad_values_are_one_line_naming_the_choices(config, message):
    with pytest.raises(ConfigError) as info:
        OpenAIBackendConfig(url="http://127.0.0.1:1", **config)
    assert str(info.value) == message


def test_the_backend_declares_what_its_settings_say():
    default = OpenAIBackend(OpenAIBackendConfig(url="http://127.0.0.1:1"), "m")
    assert default.local_tokenizer and default.server_series == {}
    none = OpenAIBackendConfig(url="http://127.0.0.1:1", tokenizer="none", server_kind="vllm")
    backend = OpenAIBackend(none, "m")
    assert not backend.local_tokenizer
    assert backend.server_series[R.SERVER_TTFT] == "vllm:time_to_first_token_seconds"


# --- counts from the server ---


def test_strict_server_counts_are_the_records(strict, tmp_path):  # noqa: F811 - the fixture
    server = strict(eos_after=3, tokens_per_chunk=2)
    folder = run_sweep(tmp_path, f"backend.url={server.url}", *NO_TOKENIZER)
    summary, requests = results(folder)
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    assert summary["backend.tokenizer"] == "none"
    assert requests[R.STATUS].eq(R.STATUS_OK).all() and len(requests) == 4
    assert requests[R.INPUT_TOKENS].eq(2).all()  # the strict server's prompt_tokens
    assert requests[R.OUTPUT_TOKENS].eq(3).all() and requests[R.SERVER_OUTPUT_TOKENS].eq(3).all()
    assert summary[R.INPUT_TOKENS_TOTAL] == 8 and summary[R.OUTPUT_TOKENS_TOTAL] == 12
    bodies = server.bodies()
    assert all(b["model"] == MODEL and len(b["prompt"].split()) == 12 for b in bodies)  # 16 * 0.75
    write_report(folder)
    report = (folder / "report.md").read_text()
    assert SERVER_COUNTS in report
    assert "Output lengths were not forced in 1 of 1 trial(s)" in report


def test_a_local_tokenizer_trial_says_nothing_of_server_counts(strict, tmp_path):  # noqa: F811
    server = strict()
    folder = run_sweep(tmp_path, f"backend.url={server.url}")
    summary, requests = results(folder)
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK and summary["backend.tokenizer"] == "local"
    assert requests[R.INPUT_TOKENS].eq(16).all()  # the tiny model's count, exact
    write_report(folder)
    assert "server's own" not in (folder / "report.md").read_text()


@pytest.mark.parametrize("kind", ["sim", "none"])
def test_sim_counts_and_its_metrics_map_by_server_kind(sim, tmp_path, kind):
    backend = sim(ttft_ms=5, itl_ms=1, tokens_per_chunk=3)
    overrides = [f"backend.url={backend.base_url}", f"backend.server_kind={kind}"]
    folder = run_sweep(tmp_path, *overrides, *NO_TOKENIZER, "workload.output_len=8")
    summary, requests = results(folder)
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    # the sim counts a prompt's words and streams exactly the tokens asked for
    assert requests[R.INPUT_TOKENS].eq(12).all()
    assert requests[R.OUTPUT_TOKENS].eq(8).all() and requests[R.SERVER_OUTPUT_TOKENS].eq(8).all()
    assert all(len(itl) == 8 - 3 for itl in requests[R.ITL_S])  # the first chunk's 3: no gap
    if kind == "sim":
        # the sim's own TTFT histogram, in ms: its 5 ms schedule (it wakes up to 0.5 ms early),
        # never after the client saw the first token
        client_ms = requests[R.TTFT_S].mean() * 1e3
        assert 4.0 <= summary[SERVER_TTFT_MEAN] <= client_ms + 0.5
        assert summary[R.SERVER_REQUESTS] == 4
    else:
        assert pd.isna(summary[SERVER_TTFT_MEAN]) and pd.isna(summary[R.SERVER_REQUESTS])


@pytest.fixture
def sim_without_usage():
    """A sim server that never sends usage, whatever the request asks."""
    launcher = ServerLauncher("sim-no-usage")

    def argv(port):
        return [
            sys.executable, "-m", "backends.sim_server", "--host", "127.0.0.1",
            "--port", str(port), "--schedule", json.dumps({"ttft_ms": 1, "itl_ms": 1}),
            "--usage", "none",
        ]  # fmt: skip

    launcher.launch(argv, "127.0.0.1", 30.0)
    yield launcher.url
    launcher.stop()


def test_no_usage_at_all_fails_the_trial_in_one_line(sim_without_usage, tmp_path):
    folder = run_sweep(tmp_path, f"backend.url={sim_without_usage}", *NO_TOKENIZER)
    summary, requests = results(folder)
    assert summary[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert summary[R.ERROR_KIND] == R.ERROR_BACKEND
    assert summary[R.ERROR_MESSAGE] == NO_USAGE_AT_ALL and "\n" not in NO_USAGE_AT_ALL
    assert requests[R.ERROR].eq(NO_USAGE).all() and requests[R.INPUT_TOKENS].isna().all()


def test_a_request_without_usage_fails_alone():
    counted, bare, failed = (RequestTracker(i, None, 0, 4) for i in range(3))
    for t in (counted, bare, failed):
        t.mark_sent(0.0)
        t.add_chunk(" a b", at=0.1)
    counted.server_input_tokens = 7
    counted.finish(server_tokens=4, at=0.2)
    bare.finish(at=0.2)
    failed.fail("disconnect: gone", at=0.2)
    require_server_counts([counted, bare, failed])  # one request counted: not the endpoint's fault
    rows = [t.record("t", 0.0) for t in (counted, bare, failed)]
    assert [r[R.STATUS] for r in rows] == [R.STATUS_OK, R.STATUS_FAILED, R.STATUS_FAILED]
    assert [r[R.ERROR] for r in rows] == [None, NO_USAGE, "disconnect: gone"]
    assert rows[0][R.INPUT_TOKENS] == 7 and rows[0][R.OUTPUT_TOKENS] == 4
    alone = RequestTracker(3, None, 0, 4)
    alone.mark_sent(0.0)
    alone.add_chunk(" a", at=0.1)
    alone.finish(at=0.2)
    with pytest.raises(BackendError, match="sent no `usage` with any stream"):
        require_server_counts([alone])
    require_server_counts([failed])  # nothing completed: nothing to say about usage
