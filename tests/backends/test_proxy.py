"""Study D's proxy as real processes in front of the sim server, through the trial runner.

A sweep of two trials on one sim server, without a proxy and behind `proxy=semantic_cache`, with
half the prompts rewording an earlier one (`dataset.paraphrase_rate=0.5`): about half the
requests are answered from the cache, far sooner than the server answers; the proxy's own
/metrics are captured and agree with the per-request records; the report puts the cached trial
beside the cache-less one. Then clipping, and an embedding model that cannot load (a failed
trial with its one-line reason). No proxy process outlives its deployment. The same check on
vLLM's CPU build is in tests/backends/test_vllm.py.
"""

import os

import pandas as pd
import psutil
import pytest

from analysis.report.report import write_report
from backends.proxy.launch import Proxies
from backends.sim_server.server import EARLY_NS
from sweep.core import records as R
from sweep.core.config import ProxyConfig, SemanticCacheProxyConfig
from tests.helpers import run_sweep_here

pytestmark = pytest.mark.timeout(120)

REQUESTS, OUTPUT_LEN, TTFT_MS = 40, 16, 60.0
CACHED = [
    "backend=sim",
    f"backend.ttft_ms={TTFT_MS}",
    "backend.itl_ms=2",
    "workload=closed_loop",
    "workload.concurrency=2",
    f"workload.num_requests={REQUESTS}",
    "workload.warmup_requests=0",  # the proxy's counters then count the measured requests only
    f"workload.output_len={OUTPUT_LEN}",
    "dataset.input_len=64",
    "dataset.paraphrase_rate=0.5",
    "++proxy.hit_tokens_per_s=1000",  # ++: the grid's proxy=none has no such key
    "sweep.name=proxy",
]


def proxy_processes():
    """Proxy servers this test run started (they inherit the run's tag), still alive."""
    tag = os.environ["SWEEP_TEST_RUN"]
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "backends.proxy.server" in " ".join(proc.info["cmdline"] or []):
                if proc.environ().get("SWEEP_TEST_RUN") == tag:
                    found.append(proc.info["pid"])
        except psutil.Error:
            continue  # gone, or another user's
    return found


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    files = []
    grid = ["proxy=semantic_cache", "+sweep.grid.proxy=[none,semantic_cache]"]
    root = run_sweep_here(tmp_path_factory.mktemp("proxy"), [*CACHED, *grid], files)
    by_proxy = {f.summary.to_pylist()[0]["proxy.name"]: f for f in files}
    return root, by_proxy


def test_half_the_prompts_are_answered_from_the_cache_far_sooner(cached):
    _, by_proxy = cached
    summary = by_proxy["semantic_cache"].summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    assert summary[R.PROMPT_NEAR_DUPLICATE_PERCENT] == 50.0
    rows = by_proxy["semantic_cache"].requests.to_pandas()
    assert (rows[R.STATUS] == R.STATUS_OK).all() and rows[R.CACHE_HIT].notna().all()
    hits, misses = rows[rows[R.CACHE_HIT].astype(bool)], rows[~rows[R.CACHE_HIT].astype(bool)]
    # Two streams: a rewording sent while its original is still answered finds nothing yet.
    assert 0.4 <= len(hits) / REQUESTS <= 0.5
    assert summary[R.CACHE_HIT_PERCENT] == pytest.approx(100.0 * len(hits) / REQUESTS)
    # A miss waits for the sim server's first chunk, sent up to EARLY_NS ahead of its schedule.
    assert misses[R.TTFT_S].median() >= (TTFT_MS - EARLY_NS / 1e6) / 1e3
    assert hits[R.TTFT_S].median() < 0.2 * misses[R.TTFT_S].median()
    assert (rows[R.OUTPUT_TOKENS] == OUTPUT_LEN).all()  # a replay streams the whole answer
    assert (hits[R.E2E_S] >= (OUTPUT_LEN - 1) / 1000).all()  # at hit_tokens_per_s
    plain = by_proxy["none"]
    assert plain.requests.to_pandas()[R.CACHE_HIT].isna().all()
    assert plain.summary.to_pylist()[0][R.CACHE_HIT_PERCENT] is None


def test_the_proxys_own_metrics_are_captured_and_agree(cached):
    _, by_proxy = cached
    files = by_proxy["semantic_cache"]
    capture = files.server_metrics.to_pandas()
    proxy = capture[capture[R.SOURCE] == R.PROXY_SOURCE].set_index(R.SAMPLE)
    server = capture[capture[R.SOURCE] == "server"]
    assert "sim:num_requests_running" in set(server[R.FAMILY])  # the server's, beside it
    hits = int(files.requests.to_pandas()[R.CACHE_HIT].astype(bool).sum())
    assert proxy.loc["proxy:cache_hits_total", R.DELTA] == hits
    assert proxy.loc["proxy:cache_misses_total", R.DELTA] == REQUESTS - hits
    assert proxy.loc["proxy:cache_lookup_seconds_count", R.DELTA] == REQUESTS
    assert proxy.loc["proxy:cache_entries", R.END] == REQUESTS - hits
    none = by_proxy["none"].server_metrics.to_pandas()
    assert R.PROXY_SOURCE not in set(none[R.SOURCE])


def test_the_report_shows_hits_and_misses_beside_the_trial_without_a_cache(cached):
    root, _ = cached
    text = write_report(root).report_md.read_text()
    section = text[text.index("## Proxy and semantic cache") :].split("\n## ")[0]
    row = next(line for line in section.splitlines() if line.startswith("| sim-semantic_cache"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "semantic_cache" and cells[2] == str(REQUESTS)
    assert 40.0 <= float(cells[3]) <= 50.0  # hit rate (%)
    assert cells[8] == "sim-none"  # the cache-less trial of the same configuration


def test_no_proxy_process_outlives_its_deployment(cached):
    assert proxy_processes() == []


def test_one_proxy_per_config_on_the_cores_given_and_none_left_after_stop(sim):
    backend = sim()
    proxies = Proxies(backend, cpus={0})
    proxy = proxies.front(SemanticCacheProxyConfig())
    assert proxies.front(SemanticCacheProxyConfig()) is proxy  # the next trial: emptied, reused
    assert proxies.front(ProxyConfig()) is backend
    assert proxy.base_url != backend.base_url and proxy.served_model == backend.served_model
    assert psutil.Process(proxy.pid).cpu_affinity() == [0]  # off the load generator's cores
    pid = proxy.pid
    proxies.stop()
    proxies.stop()  # safe twice
    assert not psutil.pid_exists(pid)  # stopped and reaped


def test_clipping_caps_outputs_and_cuts_prompts(tmp_path):
    files = []
    overrides = [
        "backend=sim",
        "workload=closed_loop",
        "workload.num_requests=6",
        "workload.warmup_requests=0",
        "workload.output_len=16",
        "dataset=prompts",
        "proxy=clip",
        "proxy.max_input_tokens=6",
        "proxy.max_output_tokens=5",
        "sweep.name=clip",
    ]
    run_sweep_here(tmp_path, overrides, files)
    (trial,) = files
    summary = trial.summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    rows = trial.requests.to_pandas()
    assert (rows[R.OUTPUT_TOKENS] == 5).all() and (rows[R.REQUESTED_OUTPUT_TOKENS] == 16).all()
    assert rows[R.CACHE_HIT].isna().all()  # no cache: `X-Cache: bypass`
    capture = trial.server_metrics.to_pandas().set_index(R.SAMPLE)
    assert capture.loc["proxy:clipped_outputs_total", R.DELTA] == 6
    assert capture.loc["proxy:clipped_inputs_total", R.DELTA] == 6  # every prompt is longer
    assert proxy_processes() == []


def test_an_embedding_model_that_cannot_load_fails_its_trial_with_one_line(tmp_path):
    files = []
    overrides = [
        "backend=sim",
        "workload=closed_loop",
        "workload.num_requests=4",
        "dataset.input_len=16",
        "proxy=semantic_cache",
        "++proxy.embedding_model=/no/such/embedding-model",  # ++: proxy=none has no such key
        "+sweep.grid.proxy=[none,semantic_cache]",
        "sweep.name=bad_model",
    ]
    run_sweep_here(tmp_path, overrides, files)
    rows = pd.DataFrame([f.summary.to_pylist()[0] for f in files]).set_index("proxy.name")
    assert rows.loc["none", R.TRIAL_STATUS] == R.STATUS_OK  # the deployment's other trial runs
    failed = rows.loc["semantic_cache"]
    assert failed[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert failed[R.ERROR_KIND] == R.ERROR_BACKEND_START
    message = failed[R.ERROR_MESSAGE]
    assert message.startswith("proxy error: ") and "/no/such/embedding-model" in message
    assert "\n" not in message and "Traceback" not in message
    assert proxy_processes() == []
