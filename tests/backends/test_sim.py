"""The sim server, its backend and the server-process helper, as real processes on 127.0.0.1."""

import json
import sys
import threading
import time

import httpx
import psutil
import pytest

from backends import backend_class
from backends.process.group import ServerProcess, wait_healthy
from backends.process.launcher import free_port
from backends.process.prometheus import parse_metrics
from backends.sim import SimBackend, SimBackendConfig
from sweep.core import records as R
from sweep.core.config import WorkloadConfig
from sweep.core.errors import BackendError, ConfigError
from sweep.loadgen.http import Endpoint, run_endpoint_workload
from tests.helpers import make_requests

pytestmark = pytest.mark.timeout(60)


def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_registry_resolves_sim():
    assert backend_class("sim") is SimBackend


def test_config_rejects_unknown_fault_kind():
    with pytest.raises(ConfigError, match="fault_kinds"):
        SimBackendConfig(fault_kinds=["500", "explode"])


def test_sim_starts_and_stops_without_leaving_a_process(sim):
    backend = sim()
    pid = backend.pid
    assert psutil.pid_exists(pid)
    assert httpx.get(f"{backend.base_url}/health", timeout=2).status_code == 200
    assert "sim_server on" in backend.log_tail()
    assert "sim_server on" in backend.log_text()
    backend.stop()
    backend.stop()  # safe twice
    assert _gone(pid)


def test_stop_kills_the_whole_process_group(tmp_path):
    # The leader forks a grandchild (like an engine's worker) and ignores SIGTERM.
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = ServerProcess([sys.executable, "-c", code], tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 10
        while not proc.log_tail().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(proc.log_tail().split()[0])
        assert psutil.pid_exists(child)
    finally:
        proc.stop(grace_s=0.5)
    assert _gone(proc.pid) and _gone(child)


def test_start_failure_fails_fast_with_the_log_tail(tmp_path):
    code = "print('loading weights'); print('CUDA error: out of memory'); raise SystemExit(3)"
    proc = ServerProcess([sys.executable, "-c", code], tmp_path / "server.log")
    t0 = time.monotonic()
    with pytest.raises(BackendError) as info:
        wait_healthy(f"http://127.0.0.1:{free_port()}/health", 30, proc)
    assert time.monotonic() - t0 < 10
    assert info.value.kind == R.ERROR_BACKEND_START
    assert "exited with code 3" in str(info.value)
    assert "CUDA error: out of memory" in str(info.value)


def test_start_timeout_stops_the_server(tmp_path):
    proc = ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log")
    with pytest.raises(BackendError, match="did not answer"):
        wait_healthy(f"http://127.0.0.1:{free_port()}/health", 0.5, proc)
    assert _gone(proc.pid)


def test_stream_format_and_server_stamps(sim):
    backend = sim(ttft_ms=10, itl_ms=1, tokens_per_chunk=2)
    body = {
        "model": "m",
        "prompt": "a b c",
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        f"{backend.base_url}/v1/completions",
        json=body,
        timeout=5,
        headers={"X-Request-Id": "req-1"},
    ) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = [c["choices"][0]["text"] for c in chunks[:-1]]
    assert texts == [" t0 t1", " t2 t3", " t4"]  # k tokens per chunk as k words
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    sim_stamps = chunks[0]["sim"]
    assert (sim_stamps["first_token_ns"] - sim_stamps["arrival_ns"]) / 1e6 >= 9.0
    truth = httpx.get(f"{backend.base_url}/sim/requests", timeout=2).json()["req-1"]
    assert truth["output_tokens"] == 5 and truth["first_token_ns"] == sim_stamps["first_token_ns"]


def test_non_streaming_and_chat(sim):
    backend = sim(ttft_ms=1, itl_ms=1)
    full = httpx.post(
        f"{backend.base_url}/v1/completions",
        timeout=5,
        json={"model": "m", "prompt": [1, 2, 3], "max_tokens": 4},
    ).json()
    assert full["choices"][0]["text"].split() == ["t0", "t1", "t2", "t3"]
    assert full["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    chat = httpx.post(
        f"{backend.base_url}/v1/chat/completions",
        timeout=5,
        json={
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        },
    ).json()
    assert chat["choices"][0]["message"]["content"] == " t0 t1"


def test_metrics_scrape_gives_kv_cache_samples_under_load(sim):
    backend = sim(ttft_ms=5, itl_ms=50)
    source = backend.telemetry_sources()[0]
    idle = {m: v for _, m, v in source()}
    assert idle == {R.KV_CACHE_USAGE_PERCENT: 0.0, R.RUNNING_REQUESTS: 0.0, R.WAITING_REQUESTS: 0.0}
    workload = WorkloadConfig(
        name="closed_loop",
        concurrency=4,
        num_requests=4,
        output_len=20,
        warmup_requests=0,
        timeout_s=30,
    )
    endpoint = Endpoint(backend.base_url, "m")
    load = threading.Thread(
        target=run_endpoint_workload, args=(endpoint, make_requests(4, 20), [], workload)
    )
    load.start()
    try:
        time.sleep(0.4)  # the four streams last about a second
        busy = source()
    finally:
        load.join(timeout=30)
    assert all(s == "server" for s, _, _ in busy)
    values = {m: v for _, m, v in busy}
    assert values[R.RUNNING_REQUESTS] == 4
    assert values[R.KV_CACHE_USAGE_PERCENT] == pytest.approx(4 / 256 * 100)


def test_parse_metrics_maps_names_scales_and_keeps_label_sets():
    text = (
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0"} 0.25\n'
        'vllm:kv_cache_usage_perc{engine="1"} 0.5\n'
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0"} 3\n'
        "other_metric 7\n"
    )
    mapping = {
        "vllm:kv_cache_usage_perc": (R.KV_CACHE_USAGE_PERCENT, 100.0),
        "vllm:num_requests_running": (R.RUNNING_REQUESTS, 1.0),
    }
    assert parse_metrics(text, mapping) == [
        ("server", R.KV_CACHE_USAGE_PERCENT, 25.0),
        ("server", R.KV_CACHE_USAGE_PERCENT, 50.0),
        ("server", R.RUNNING_REQUESTS, 3.0),
    ]


def test_unreachable_metrics_give_no_samples():
    from backends.process.prometheus import PrometheusSource

    source = PrometheusSource(f"http://127.0.0.1:{free_port()}/metrics", {})
    assert source() == []
    source.close()
