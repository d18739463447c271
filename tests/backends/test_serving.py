"""Serving backends without a server: argv safety, the command lines they build, attach failures.

No docker engine runs here, so the TGI backend is tested on the `docker run` argv it builds;
its stream format is tested in tests/sweep/test_tgi_stream.py. The vLLM server's argv is
checked here too; vLLM itself runs in tests/backends/test_vllm.py.
"""

import os
import time

import pytest

from backends import backend_class
from backends.config import DEPLOYMENT_ENV
from backends.openai import OpenAIBackend, OpenAIBackendConfig
from backends.process.argv import flag_args
from backends.process.launcher import free_port
from backends.process.prometheus import parse_metrics
from backends.tgi import TGIBackend, TGIBackendConfig
from backends.vllm import VLLMBackendConfig
from backends.vllm_server import VLLM_METRICS, Acceptance, VLLMServerBackend, VLLMServerConfig
from sweep.core import records as R
from sweep.core.errors import BackendError, ConfigError
from sweep.plan.plan import build_plan
from sweep.worker.trial import DeploymentStarted, run_deployment
from tests.helpers import FIXTURES

pytestmark = [pytest.mark.timeout(60)]


@pytest.mark.parametrize("name", ["vllm_server", "vllm", "tgi", "openai"])
def test_registry_resolves_each_serving_backend(name):
    assert backend_class(name).__module__ == f"backends.{name}"


def test_flag_args_one_element_per_flag_and_value():
    argv = flag_args(
        {
            "enforce-eager": True,
            "disable-log-stats": False,
            "seed": None,
            "max-num-seqs": 64,
            "speculative-config": {"num_speculative_tokens": 4, "method": "ngram"},
            "served-model-name": ["a", "b c"],
        }
    )
    assert argv == [
        "--enforce-eager",
        "--max-num-seqs", "64",
        "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}',
        "--served-model-name", "a", "b c",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"x --api-key k": 1}, "is not a plain flag name"),
        ({"--trust-remote-code": True}, "is not a plain flag name"),
        ({"Tokenizer": "t"}, "is not a plain flag name"),
        ({"tokenizer": "--trust-remote-code"}, "begins with '-'"),
        ({"tokenizer": "t\n--trust-remote-code"}, "newline or NUL"),
        ({"tokenizer": "t\0x"}, "newline or NUL"),
        ({"chat-template": ["ok", "-x"]}, "begins with '-'"),
        ({"port": 1234}, "is set by the backend itself"),
        ({"max-num-seqs": 8}, "duplicates backend.max_num_seqs"),
    ],
)
def test_smuggled_flags_are_refused_at_config_time(extra, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        VLLMServerConfig(extra_args=extra)
    assert "\n" not in str(info.value)


def test_typed_string_settings_cannot_smuggle_flags_either():
    with pytest.raises(ConfigError, match=r"backend.kv_cache_dtype='--enforce-eager'"):
        VLLMServerConfig(kv_cache_dtype="--enforce-eager")
    with pytest.raises(ConfigError, match="backend.tag"):
        TGIBackendConfig(tag="latest\n--privileged")
    with pytest.raises(ConfigError, match="model-id"):
        TGIBackendConfig(extra_args={"model-id": "other"})


def test_a_smuggled_flag_fails_composition_as_one_line():
    with pytest.raises(ConfigError) as info:
        build_plan(["+experiment=quickstart_serving", "+backend.extra_args.api-key=-x"])
    assert "backend.extra_args.api-key" in str(info.value) and "\n" not in str(info.value)


def test_vllm_server_argv_carries_each_setting():
    config = VLLMServerConfig(
        num_gpus=2,
        max_num_seqs=256,
        kv_cache_dtype="fp8",
        calculate_kv_scales=True,
        speculative_config={"method": "suffix", "num_speculative_tokens": 12},
        override_generation_config={"temperature": 0},
        enable_prefix_caching=False,
        dtype="bf16",
        extra_args={"enforce-eager": True, "disable-access-log-for-endpoints": "/health"},
    )
    argv = VLLMServerBackend(config, "/models/m").argv(8123)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(argv[3::1], argv[4::1], strict=False))
    assert pairs["--model"] == "/models/m" and pairs["--port"] == "8123"
    assert pairs["--host"] == "127.0.0.1" and pairs["--dtype"] == "bfloat16"
    assert pairs["--tensor-parallel-size"] == "2" and pairs["--max-num-seqs"] == "256"
    assert pairs["--speculative-config"] == '{"method": "suffix", "num_speculative_tokens": 12}'
    assert "--calculate-kv-scales" in argv and "--no-enable-prefix-caching" in argv
    assert argv.count("--disable-access-log-for-endpoints") == 1  # extra_args overrides default
    assert pairs["--disable-access-log-for-endpoints"] == "/health"
    assert "--enforce-eager" in argv


def test_vllm_server_env_on_cpu_sizes_the_kv_cache_and_enables_the_reset(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    backend = VLLMServerBackend(VLLMServerConfig(cpu_kvcache_space_gb=3), "m")
    env = backend.child_env()
    backend.stop()  # the environment names the server's socket folder: stop removes it, unstarted
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["VLLM_SERVER_DEV_MODE"] == "1"
    assert not os.path.exists(env["VLLM_RPC_BASE_PATH"])
    # dev mode exposes control routes: never on a server bound to every interface
    exposed = VLLMServerBackend(VLLMServerConfig(host="0.0.0.0"), "m")
    assert "VLLM_SERVER_DEV_MODE" not in exposed.child_env()
    exposed.stop()
    off = VLLMServerBackend(VLLMServerConfig(enable_prefix_caching=False), "m")
    assert not off.resets_prefix_cache


def test_tgi_docker_argv(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    config = TGIBackendConfig(
        num_gpus=2, volume=str(tmp_path), extra_args={"quantize": "bitsandbytes"}
    )
    backend = TGIBackend(config, "meta-llama/Llama-2-7b-chat-hf")
    argv = backend.argv(9000)
    image = argv.index("ghcr.io/huggingface/text-generation-inference:3.3.5")
    docker, launcher = argv[:image], argv[image + 1 :]
    assert docker[:5] == ["docker", "run", "--rm", "--name", backend.container]
    assert docker[docker.index("--gpus") + 1] == '"device=2,3"'
    assert docker[docker.index("-p") + 1] == "127.0.0.1:9000:80"
    assert f"{tmp_path}:/data" in docker and docker[docker.index("--shm-size") + 1] == "1g"
    assert docker[docker.index("-e") + 1] == "HF_TOKEN"  # by name: docker copies the value
    assert not any("hf_secret_value_123" in a for a in argv)
    assert launcher == [
        "--model-id", "meta-llama/Llama-2-7b-chat-hf",
        "--num-shard", "2",
        "--max-concurrent-requests", "128",
        "--quantize", "bitsandbytes",
    ]  # fmt: skip


def test_tgi_mounts_a_local_model_and_runs_without_gpus(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    config = TGIBackendConfig(num_gpus=0, max_batch_total_tokens=32768)
    argv = TGIBackend(config, str(tmp_path)).argv(9000)
    assert "--gpus" not in argv and "-e" not in argv
    assert f"{tmp_path}:/model:ro" in argv
    assert argv[argv.index("--model-id") + 1] == "/model"
    assert argv[argv.index("--max-batch-total-tokens") + 1] == "32768"


def test_tgi_without_docker_is_a_clear_start_failure():
    backend = TGIBackend(TGIBackendConfig(docker="no-such-docker-binary"), "m")
    with pytest.raises(BackendError, match="no-such-docker-binary.*not installed") as info:
        backend.start()
    assert info.value.kind == R.ERROR_BACKEND_START
    backend.stop()


def test_openai_backend_fails_fast_when_nothing_listens():
    url = f"http://127.0.0.1:{free_port()}"
    backend = OpenAIBackend(OpenAIBackendConfig(url=url, connect_timeout_s=2), "m")
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="no server answers") as info:
        backend.start()
    assert info.value.kind == R.ERROR_BACKEND_START
    assert time.monotonic() - t0 < 10


def test_unreachable_endpoint_is_failed_trials_not_a_hang():
    url = f"http://127.0.0.1:{free_port()}"
    plan = build_plan(["backend=openai", f"backend.url={url}", "workload.num_requests=2"])
    (deployment,) = plan.deployments
    files = [f for f in run_deployment(deployment, {}) if not isinstance(f, DeploymentStarted)]
    summary = files[0].summary.to_pandas().iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert summary[R.ERROR_KIND] == R.ERROR_BACKEND_START
    assert url in summary[R.ERROR_MESSAGE]


def test_openai_config_takes_a_variable_name_not_a_key():
    with pytest.raises(ConfigError, match="must name an environment variable"):
        OpenAIBackendConfig(url="http://x", api_key_env="sk-abc123")
    with pytest.raises(ConfigError, match="http:// or https://"):
        OpenAIBackendConfig(url="ftp://x")
    assert VLLMBackendConfig().gpu_memory_utilization == 0.9


def test_spec_decode_acceptance_counts_from_the_trials_first_sample():
    counters = iter([(100.0, 40.0), (160.0, 70.0), (220.0, 85.0)])

    acceptance = Acceptance()

    def sample():
        drafted, accepted = next(counters)
        scrape = [
            ("server", R.SPEC_DRAFT_TOKENS, drafted),
            ("server", R.SPEC_ACCEPTED_TOKENS, accepted),
        ]
        return acceptance(scrape)

    assert not [m for _, m, _ in sample() if m == R.SPEC_ACCEPTANCE_PERCENT]  # baseline only
    assert sample()[-1] == ("server", R.SPEC_ACCEPTANCE_PERCENT, 50.0)  # 30 of 60
    assert sample()[-1] == ("server", R.SPEC_ACCEPTANCE_PERCENT, 37.5)  # 45 of 120


def test_vllm_metrics_recorded_mid_load_map_to_percent_and_counts():
    """Real /metrics bytes of vllm-cpu 0.32.0 serving the tiny model, scraped while 19 requests
    of 4 blocks each ran (its log: 2,097,152 cache tokens in blocks of 128, so 16,384 blocks).

    A live trial cannot promise a scrape mid-load on two busy cores, hence the recording.
    """
    text = (FIXTURES / "vllm-0.32.0-metrics-midload.txt").read_text()
    samples = parse_metrics(text, VLLM_METRICS)
    assert sorted(m for _, m, _ in samples) == sorted(
        [R.RUNNING_REQUESTS, R.WAITING_REQUESTS, R.KV_CACHE_USAGE_PERCENT]
    )  # one series each; waiting-by-reason and the HELP lines are not mistaken for them
    values = {m: v for _, m, v in samples}
    assert values[R.RUNNING_REQUESTS] == 19 and values[R.WAITING_REQUESTS] == 0
    blocks = 19 * 4
    assert values[R.KV_CACHE_USAGE_PERCENT] == pytest.approx(100 * blocks / 16384, rel=1e-3)


def test_counters_keep_their_total_suffix_among_unmapped_lines():
    text = (
        "# HELP vllm:spec_decode_num_draft_tokens Draft tokens.\n"
        "# TYPE vllm:spec_decode_num_draft_tokens counter\n"
        'vllm:spec_decode_num_draft_tokens_total{engine="0"} 42.0\n'
        'vllm:spec_decode_num_draft_tokens_created{engine="0"} 1.7e9\n'
        "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
        'vllm:num_requests_waiting_by_reason{reason="capacity"} 5.0\n'
        'vllm:num_requests_waiting{engine="0"} 2.0\n'
    )
    assert parse_metrics(text, VLLM_METRICS) == [
        ("server", R.SPEC_DRAFT_TOKENS, 42.0),
        ("server", R.WAITING_REQUESTS, 2.0),
    ]


def test_a_deployments_backend_is_told_its_deployment_id(monkeypatch):
    """The trial runner exports the id while the backend lives (a TGI container's label)."""
    seen = []

    def start(self):
        seen.append(os.environ.get(DEPLOYMENT_ENV))
        raise RuntimeError("stopped here by the test")

    monkeypatch.setattr(OpenAIBackend, "start", start)
    monkeypatch.delenv(DEPLOYMENT_ENV, raising=False)
    plan = build_plan(
        ["backend=openai", "backend.url=http://127.0.0.1:9", "workload.num_requests=2"]
    )
    (deployment,) = plan.deployments
    files = [f for f in run_deployment(deployment, {}) if not isinstance(f, DeploymentStarted)]
    assert seen == [deployment.deployment_id]
    assert files[0].summary.to_pandas().iloc[0][R.TRIAL_STATUS] == R.STATUS_FAILED
    assert DEPLOYMENT_ENV not in os.environ  # gone with the deployment
