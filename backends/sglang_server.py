"""The sglang_server backend: SGLang's OpenAI-compatible server, launched once per deployment.

It runs `python -m sglang.launch_server --model-path <model> --host 127.0.0.1 --port N
--enable-metrics ...` with the settings of `SGLangServerConfig`, each value its own argv element
(`backends.process.argv`), on the GPUs Ray gave the task (`CUDA_VISIBLE_DEVICES` is inherited;
tensor parallel over `num_gpus` with `--tp-size`). Every trial of the deployment runs against this
one server; between trials `reset_between_trials` waits for it to drain and flushes its radix
(prefix) cache. SGLang has no CPU build here, so its live tests carry `@pytest.mark.gpu`.

Flag and metric names are SGLang 0.5.23's, read from its wheel (`sglang/srt/arg_groups/fields/`
and `sglang/srt/observability/metrics_collector.py`). `--enable-metrics` is always passed, since
`/metrics` exists only with it. Telemetry: KV-cache use (`sglang:token_usage`, a fraction), running
and queued requests. The summary maps SGLang's queue time, TTFT, inter-token latency and
per-request TPOT histograms, its cached over prompt tokens (the prefix-cache hit rate) and its
retracted requests (preemptions). Not mapped: prefill (SGLang times it only per stage, in one
histogram labelled by stage), and speculative decoding (it exports acceptance as gauges, not
counts of drafted and accepted tokens). Request bodies carry vLLM's extensions, which SGLang's
OpenAI server takes too (`ignore_eos`, `stream_options.continuous_usage_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from backends.base import TelemetrySource
from backends.config import (
    DTYPES,
    TORCH_DTYPES,
    LoraServerConfig,
    check_fraction,
    typed_names,
)
from backends.launched import LaunchedServerBackend
from backends.lora import resolve_adapters, served_adapters
from backends.process.argv import check_extra_args, check_values, field_flags, module_argv
from backends.process.prometheus import MetricMap, PrometheusSource
from backends.process.startup import StartupLines
from sweep.core import records as R
from sweep.core.errors import ConfigError, check_choice, check_positive

SERVER_MODULE = "sglang.launch_server"
SGLANG_METRICS: MetricMap = {
    "sglang:token_usage": (R.KV_CACHE_USAGE_PERCENT, 100.0),  # a fraction of the KV pool
    "sglang:num_running_reqs": (R.RUNNING_REQUESTS, 1.0),
    "sglang:num_queue_reqs": (R.WAITING_REQUESTS, 1.0),
}
# The summary's server-side columns from the trial's /metrics deltas (names as in SGLang 0.5.23;
# a counter's family drops the `_total` of its sample, as in `sglang:cached_tokens_total`).
SGLANG_SERVER_SERIES = {
    R.SERVER_QUEUE: "sglang:queue_time_seconds",
    R.SERVER_TTFT: "sglang:time_to_first_token_seconds",
    R.SERVER_ITL: "sglang:inter_token_latency_seconds",
    R.SERVER_TPOT: "sglang:request_time_per_output_token_seconds",
    R.PREFIX_CACHE_HITS: "sglang:cached_tokens",  # one series per cache_source: added up
    R.PREFIX_CACHE_QUERIES: "sglang:prompt_tokens",
    R.PREEMPTIONS: "sglang:num_retracted_requests",
}
# Config fields that are not a server flag under their own name: how the server is launched and
# reached, and the dtype, whose names `argv` maps.
NOT_SERVER_FLAGS = (
    "name",
    "num_gpus",
    "num_cpus",
    "api",
    "startup_timeout_s",
    "dtype",
    "extra_args",
    "lora_adapters",
    "lora_count",
)
# Flags the backend sets itself (model, address, GPUs, metrics): not allowed in extra_args.
SGLANG_RESERVED_FLAGS = (
    "model-path", "model", "port", "tp-size", "tensor-parallel-size", "enable-metrics",
    "enable-lora", "lora-paths",
)  # fmt: skip


@dataclass
class SGLangServerConfig(LoraServerConfig):
    """SGLang's server, launched once per deployment; None = SGLang's default."""

    name: str = "sglang_server"
    startup_timeout_s: float = 900.0
    dtype: str = "auto"
    mem_fraction_static: float | None = None
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None  # -1: no chunked prefill
    context_length: int | None = None
    disable_radix_cache: bool = False
    served_model_name: str | None = None
    # LoRA adapters (`lora_adapters`, `lora_count`): --enable-lora --lora-paths when any; the
    # rank, target modules and adapters per batch are SGLang's own (inferred, or 8 a batch).
    max_loras_per_batch: int | None = None
    max_lora_rank: int | None = None
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(
            "backend",
            max_loras_per_batch=self.max_loras_per_batch,
            max_lora_rank=self.max_lora_rank,
        )
        check_choice("backend", "dtype", self.dtype, DTYPES)
        check_positive(
            "backend",
            max_running_requests=self.max_running_requests,
            context_length=self.context_length,
        )
        chunk = self.chunked_prefill_size
        if chunk is not None and chunk != -1 and chunk <= 0:
            raise ConfigError(f"backend.chunked_prefill_size must be > 0 or -1 (off), got {chunk}")
        check_fraction("mem_fraction_static", self.mem_fraction_static)
        check_values("backend", served_model_name=self.served_model_name)
        check_extra_args(
            "backend.extra_args", self.extra_args, typed_names(self), SGLANG_RESERVED_FLAGS
        )


# What SGLang's server logs as it starts (its scheduler's lines, one per tensor-parallel rank):
# loading the weights begins and ends; the KV cache, CUDA graphs and the HTTP server follow. It
# reports the load's and the graph capture's seconds (the capture line spelt two ways: 0.5.10's
# "Capture cuda graph end. Time elapsed: X s", later "Capture decode CUDA graph end. elapsed=X s").
SGLANG_STARTUP = StartupLines(
    ends={
        R.START_PROCESS_S: r"Load weight begin",
        R.START_LOAD_S: r"Load weight end",
        R.START_ENGINE_S: r"Uvicorn running on|Application startup complete",
    },
    reported={
        R.START_WEIGHTS_S: r"Load weight end\. elapsed=([\d.]+) s",
        R.START_GRAPHS_S: r"Capture .*?graph end\. (?:Time elapsed: |elapsed=)([\d.]+) s",
    },
)


class SGLangServerBackend(LaunchedServerBackend):
    """A `sglang.launch_server` child process configured from `SGLangServerConfig`."""

    config_class: ClassVar[type] = SGLangServerConfig
    prompt_logprobs: ClassVar[str | None] = "sglang"  # quality: `backends.prompt_scoring`
    scoring_unavailable: ClassVar[str | None] = None
    roofline_fields: ClassVar[tuple[str, ...]] = ("dtype",)

    launcher_name: ClassVar[str] = "sglang_server"
    server_series: ClassVar[Mapping[str, str]] = SGLANG_SERVER_SERIES
    server_packages: ClassVar[Mapping[str, str]] = {"sglang": "sglang"}
    server_extra: ClassVar[str] = "sglang"
    vllm_extensions: ClassVar[bool] = True  # ignore_eos, per-chunk usage: SGLang takes both
    load_metrics: ClassVar[MetricMap] = SGLANG_METRICS
    startup_lines: ClassVar[StartupLines | None] = SGLANG_STARTUP
    adapter_field: ClassVar[str] = "lora_path"  # SGLang's request field naming an adapter

    def __init__(self, config: Any, model_path: str) -> None:
        super().__init__(config, model_path)
        self._adapters: dict[str, str] = {}  # name -> local directory, resolved by `start`

    @property
    def adapters(self) -> tuple[str, ...]:
        """The LoRA adapters served, by name; a request names one in `lora_path`."""
        return tuple(served_adapters(self.config.lora_adapters, self.config.lora_count))

    @property
    def cache_reset_path(self) -> str | None:  # type: ignore[override]
        """`/flush_cache` unless the radix cache is off (SGLang refuses it while requests run)."""
        return None if self.config.disable_radix_cache else "/flush_cache"

    @property
    def served_model(self) -> str:
        """The name requests use: `served_model_name`, else the model path (SGLang's default)."""
        return self.config.served_model_name or self.model_path

    @property
    def api(self) -> str:
        """`completions` or `chat`: which endpoint the load generator streams from."""
        return self.config.api

    def start(self) -> None:
        """Launch the server and wait for `/health`; raise BackendError with its log tail."""
        self._adapters = resolve_adapters(self.config.lora_adapters, self.config.lora_count)
        self.launch("/health")

    def argv(self, port: int) -> list[str]:
        """The server's command line for `port`."""
        c = self.config
        typed: dict[str, Any] = {
            "model-path": self.model_path,
            "port": port,
            "dtype": TORCH_DTYPES[c.dtype],  # auto, float16, bfloat16, float32: SGLang's names
            "tp-size": c.num_gpus if c.num_gpus > 1 else None,
            "enable-metrics": True,
            **field_flags(c, NOT_SERVER_FLAGS),
            "enable-lora": bool(self._adapters),
            "lora-paths": [f"{name}={path}" for name, path in self._adapters.items()] or None,
        }
        return module_argv(SERVER_MODULE, typed, c.extra_args, SGLANG_RESERVED_FLAGS)

    def telemetry_sources(self) -> list[TelemetrySource]:
        """KV-cache usage and running / queued requests from `/metrics`."""
        return [PrometheusSource(f"{self.base_url}/metrics", SGLANG_METRICS)]
