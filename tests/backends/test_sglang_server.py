"""sglang_server: the argv it builds, its /metrics map, a missing install, and (GPU) the real thing.

SGLang has no CPU build here, so a live server runs only in the test marked `gpu`. The CPU tests
check what the backend builds and reads: the command line from the config, the map of its
`/metrics` against a sample of SGLang 0.5.23's exposition (tests/fixtures; written from SGLang's
metric definitions, not recorded from a live server: see its header), the drain and radix-cache
flush between trials against a stand-in server launched through the same launcher, and the
one-line error when the `sglang` package is missing (it is not installed here).
"""

import sys
import textwrap

import psutil
import pytest

from backends.process.prometheus import parse_metrics, snapshot
from backends.sglang_server import (
    SGLANG_METRICS,
    SGLANG_SERVER_SERIES,
    SGLangServerBackend,
    SGLangServerConfig,
)
from sweep.core import records as R
from sweep.core.errors import ConfigError, MissingExtraError
from sweep.core.server_view import server_columns
from sweep.plan.plan import build_plan
from sweep.worker.trial import DeploymentStarted, run_deployment
from tests.backends.test_metrics_capture import capture_of, derived_start
from tests.helpers import FIXTURES, environment_restored, own_processes

pytestmark = pytest.mark.timeout(60)

SAMPLE = (FIXTURES / "sglang-0.5.23-metrics-sample.txt").read_text()


def test_argv_carries_each_setting_as_its_own_element():
    config = SGLangServerConfig(
        num_gpus=2,
        dtype="bf16",
        mem_fraction_static=0.8,
        max_running_requests=64,
        chunked_prefill_size=-1,
        context_length=4096,
        disable_radix_cache=True,
        served_model_name="tiny",
        extra_args={"attention-backend": "triton", "enable-torch-compile": True},
    )
    argv = SGLangServerBackend(config, "/models/m").argv(8123)
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    bare = {"--enable-metrics", "--disable-radix-cache", "--enable-torch-compile"}
    assert bare <= set(argv)  # switches: no value after them
    valued = [a for a in argv[3:] if a not in bare]
    pairs = dict(zip(valued[::2], valued[1::2], strict=True))
    assert pairs == {
        "--model-path": "/models/m",
        "--port": "8123",
        "--dtype": "bfloat16",
        "--tp-size": "2",
        "--host": "127.0.0.1",
        "--mem-fraction-static": "0.8",
        "--max-running-requests": "64",
        "--chunked-prefill-size": "-1",
        "--context-length": "4096",
        "--served-model-name": "tiny",
        "--attention-backend": "triton",
    }
    # SGLang's defaults stay SGLang's: an unset setting is no flag at all, one GPU no --tp-size
    plain = SGLangServerBackend(SGLangServerConfig(num_gpus=1), "/models/m").argv(1)
    assert plain[3:] == [
        "--model-path", "/models/m", "--port", "1", "--dtype", "auto", "--enable-metrics",
        "--host", "127.0.0.1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"extra_args": {"model-path": "/other"}}, "is set by the backend itself"),
        ({"extra_args": {"tp-size": 4}}, "is set by the backend itself"),
        ({"extra_args": {"tensor-parallel-size": 4}}, "is set by the backend itself"),
        ({"extra_args": {"enable-metrics": True}}, "is set by the backend itself"),
        ({"extra_args": {"port": 30000}}, "is set by the backend itself"),
        ({"extra_args": {"mem-fraction-static": 0.5}}, "duplicates backend.mem_fraction_static"),
        ({"extra_args": {"x --api-key k": 1}}, "is not a plain flag name"),
        ({"extra_args": {"tokenizer-path": "--trust-remote-code"}}, "begins with '-'"),
        ({"served_model_name": "a\n--api-key"}, "newline or NUL"),
        ({"mem_fraction_static": 1.5}, r"mem_fraction_static must be in \(0, 1\]"),
        ({"chunked_prefill_size": 0}, "must be > 0 or -1"),
        ({"dtype": "fp8"}, "dtype='fp8' is not valid"),
    ],
)
def test_bad_config_is_refused_in_one_line(values, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        SGLangServerConfig(**values)
    assert "\n" not in str(info.value)


def test_the_telemetry_map_reads_sglangs_gauges():
    samples = {metric: value for _, metric, value in parse_metrics(SAMPLE, SGLANG_METRICS)}
    assert samples == {
        R.KV_CACHE_USAGE_PERCENT: 12.5,  # sglang:token_usage 0.125, a fraction
        R.RUNNING_REQUESTS: 8.0,
        R.WAITING_REQUESTS: 3.0,
    }


def test_the_summary_map_names_families_sglang_exports():
    families = {family: kind for family, kind, _ in snapshot(SAMPLE).values()}
    for role, family in SGLANG_SERVER_SERIES.items():
        expected = "histogram" if role in R.SERVER_LATENCIES else "counter"
        assert families.get(family) == expected, (role, family)


def test_server_columns_from_the_sglang_sample():
    """The sample's trial: 40 requests; TTFT 30 x 50 ms and 10 x 150 ms; 560 one-token gaps of
    12 ms and 20 two-token chunks of 50 ms (SGLang files 2 tokens at 25 ms, the sum gets 50 ms);
    TPOT 30 x 12 ms and 10 x 20 ms; queue 20 x 0 and 20 x 20 ms; 192 of 960 prompt tokens
    cached; 4 retractions. The trial's start is a quarter of each value (test_metrics_capture's
    `derived_start`), so deltas are 3/4 of them: same means and shapes, counts x 3/4."""
    table, gets = capture_of((200, derived_start(SAMPLE)), (200, SAMPLE))
    assert gets == 2
    row = server_columns(table, SGLANG_SERVER_SERIES)
    col = R.latency_column
    assert row[R.SERVER_REQUESTS] == 30  # TTFT observations in the trial: 3/4 of 40
    assert row[col(R.SERVER_TTFT, "mean")] == pytest.approx(75.0)
    # buckets 0.1: 22.5, 0.2: 30 (deltas); median rank 15, p99 rank 29.7
    assert row[col(R.SERVER_TTFT, "median")] == pytest.approx(100 * 15 / 22.5)
    assert row[col(R.SERVER_TTFT, "p99")] == pytest.approx(100 + 100 * (29.7 - 22.5) / 7.5)
    assert row[col(R.SERVER_ITL, "mean")] == pytest.approx(1000 * (560 * 0.012 + 20 * 0.05) / 600)
    assert row[col(R.SERVER_TPOT, "mean")] == pytest.approx(14.0)
    assert row[col(R.SERVER_QUEUE, "mean")] == pytest.approx(10.0)
    assert row[col(R.SERVER_QUEUE, "median")] == pytest.approx(0.0)  # half waited not at all
    assert row[col(R.SERVER_PREFILL, "mean")] is None  # SGLang has no per-request prefill
    assert row[R.SERVER_PREFIX_CACHE_HIT_PERCENT] == pytest.approx(20.0)
    assert row[R.SERVER_PREEMPTIONS] == 3
    assert row[R.SPEC_ACCEPTANCE_PERCENT] is None


def test_a_missing_sglang_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sglang", None)  # also where sglang is installed
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[sglang\]'") as info:
        SGLangServerBackend(SGLangServerConfig(), "unused").start()
    assert "'sglang' package" in str(info.value) and "\n" not in str(info.value)


# A stand-in for SGLang's routes that `reset_between_trials` uses: /metrics shows 2 running
# requests, then 1, then none; /flush_cache answers 400 (SGLang's answer while requests run)
# once, then 200. It logs every call, which the backend's log then holds.
STAND_IN = textwrap.dedent(
    """
    import http.server, sys
    running = [2, 1]
    flushes = [400]

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status, body=""):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/metrics":
                now = running.pop(0) if running else 0
                print(f"metrics running={now}", flush=True)
                body = f"sglang:num_running_reqs {now}\\nsglang:num_queue_reqs 0\\n"
                return self.answer(200, body)
            return self.answer(200 if self.path == "/health" else 404)

        def do_POST(self):
            status = flushes.pop(0) if flushes else 200
            print(f"POST {self.path} {status}", flush=True)
            self.answer(status if self.path == "/flush_cache" else 404)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def test_between_trials_it_waits_for_the_drain_then_flushes_the_radix_cache(tmp_path):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)

    class StandIn(SGLangServerBackend):
        server_packages = {}  # the stand-in needs no sglang

        def argv(self, port):
            return [sys.executable, str(script), str(port)]

    backend = StandIn(SGLangServerConfig(startup_timeout_s=20), "unused")
    backend.start()
    try:
        backend.reset_between_trials()
        log = backend.log_text().splitlines()
    finally:
        backend.stop()
    assert log == [
        "metrics running=2",
        "metrics running=1",
        "metrics running=0",
        "POST /flush_cache 400",
        "POST /flush_cache 200",
    ]
    assert not psutil.pid_exists(backend.pid)  # stopped and reaped


@pytest.mark.gpu
@pytest.mark.timeout(900)
def test_live_sglang_server_through_the_trial_runner():
    """Needs a CUDA GPU and `pip install -e '.[sglang]'` (SGLang has no CPU build here)."""
    pytest.importorskip("sglang", reason="needs the sglang extra")
    overrides = [
        "sweep.name=sglang_live",
        "model=tiny_llama",
        "backend=sglang_server",
        "backend.mem_fraction_static=0.3",
        "workload=closed_loop",
        "+sweep.grid={workload.concurrency: [1, 8]}",
        "workload.num_requests=32",
        "workload.output_len=24",
        "dataset=random",
        "dataset.input_len=32",
    ]
    (deployment,) = build_plan(overrides).deployments
    trials = []
    with environment_restored():  # the deployment's task sets variables in its process
        runner = run_deployment(deployment, {})
        try:
            for item in runner:
                if not isinstance(item, DeploymentStarted):
                    trials.append(item)
        finally:
            runner.close()
    assert len(trials) == 2
    for files in trials:
        summary = files.summary.to_pylist()[0]
        assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
        requests = files.requests.to_pandas()
        assert (requests[R.OUTPUT_TOKENS] == 24).all()  # ignore_eos: exact lengths
        assert (requests[R.SERVER_OUTPUT_TOKENS] == 24).all()  # SGLang's own count agrees
        assert (requests[R.INPUT_TOKENS] == 32).all() and (requests[R.TTFT_S] > 0).all()
        col = R.latency_column
        assert summary[col(R.SERVER_TTFT, "mean")] > 0 and summary[col(R.SERVER_ITL, "mean")] > 0
        assert summary[col(R.SERVER_TPOT, "mean")] > 0 and summary[col(R.SERVER_QUEUE, "mean")] >= 0
        assert 0 <= summary[R.SERVER_PREFIX_CACHE_HIT_PERCENT] <= 100
        series = files.timeseries.to_pandas()
        assert R.KV_CACHE_USAGE_PERCENT in set(series[R.METRIC])
    assert own_processes("sglang.launch_server") == []  # this run's: another's may run beside
