"""Schemas of the backend config group: one dataclass per backend, named `<name>_schema`.

Each `conf/backend/<name>.yaml` lists `- <name>_schema` in its defaults, so unknown engine flags
fail at composition. Backend-specific validation lives in `__post_init__`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING

from backends.argv import check_extra_args, check_values
from backends.sim_faults import SIM_FAULT_KINDS
from sweep.errors import ConfigError, check_choice, check_positive

DTYPES = ("auto", "fp32", "fp16", "bf16")
HF_QUANTIZATIONS = ("bnb_8bit", "bnb_4bit")
CT2_COMPUTE_TYPES = ("float32", "float16", "int8", "int8_float16")
GGUF_OUTTYPES = ("f32", "f16")
EXL2_CACHE_TYPES = ("fp16", "q8", "q6", "q4")


@dataclass
class BackendConfig:
    """Fields every backend shares: its registry name and the resources of one deployment."""

    name: str = MISSING
    num_gpus: int = 0
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        check_positive("backend", num_cpus=self.num_cpus)
        if self.num_gpus < 0:
            raise ConfigError(f"backend.num_gpus must be >= 0, got {self.num_gpus}")


@dataclass
class HFBackendConfig(BackendConfig):
    """Plain `transformers` generation: the baseline every engine is compared against."""

    name: str = "hf"
    mode: str = "per_request"
    dtype: str = "fp32"
    device: str = "auto"
    quantization: str | None = None
    attn_implementation: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "mode", self.mode, ("per_request", "static_batch"))
        check_choice("backend", "dtype", self.dtype, DTYPES)
        check_choice("backend", "device", self.device, ("auto", "cpu", "cuda"))
        if self.quantization is not None:
            check_choice("backend", "quantization", self.quantization, HF_QUANTIZATIONS)


@dataclass
class SimBackendConfig(BackendConfig):
    """The simulated OpenAI-compatible server: exact latencies, injectable faults, no model."""

    name: str = "sim"
    host: str = "127.0.0.1"
    ttft_ms: float = 20.0
    itl_ms: float = 5.0
    tokens_per_chunk: int = 1
    load_ms_per_running: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: list[str] = field(default_factory=lambda: list(SIM_FAULT_KINDS))
    seed: int = 0
    usage_skew: int = 0  # added to the final usage count: a server that miscounts its tokens
    startup_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(
            "backend",
            tokens_per_chunk=self.tokens_per_chunk,
            startup_timeout_s=self.startup_timeout_s,
        )
        if min(self.ttft_ms, self.itl_ms, self.load_ms_per_running) < 0:
            raise ConfigError("backend.ttft_ms, itl_ms and load_ms_per_running must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ConfigError(f"backend.fault_rate must be in [0, 1], got {self.fault_rate}")
        for kind in self.fault_kinds:
            check_choice("backend", "fault_kinds", kind, SIM_FAULT_KINDS)


@dataclass
class CTranslate2BackendConfig(BackendConfig):
    """CTranslate2: the HF checkpoint converted once per compute type, static batches."""

    name: str = "ctranslate2"
    compute_type: str = "float32"
    device: str = "auto"
    device_index: int = 0
    intra_threads: int = 0
    max_batch_size: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "compute_type", self.compute_type, CT2_COMPUTE_TYPES)
        check_choice("backend", "device", self.device, ("auto", "cpu", "cuda"))
        if min(self.device_index, self.intra_threads, self.max_batch_size) < 0:
            raise ConfigError("backend.device_index, intra_threads and max_batch_size must be >= 0")


@dataclass
class LlamaCppBackendConfig(BackendConfig):
    """llama.cpp through llama-cpp-python: a GGUF file (given, or converted from the HF model)."""

    name: str = "llamacpp"
    gguf_file: str | None = None
    gguf_repo: str | None = None
    convert_outtype: str = "f16"
    n_gpu_layers: int = 0
    n_ctx: int = 2048
    n_batch: int = 512
    n_threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "convert_outtype", self.convert_outtype, GGUF_OUTTYPES)
        check_positive("backend", n_ctx=self.n_ctx, n_batch=self.n_batch, n_threads=self.n_threads)
        if self.gguf_repo is not None and self.gguf_file is None:
            raise ConfigError("backend.gguf_repo needs backend.gguf_file (the file in that repo)")
        if self.n_gpu_layers < -1:
            raise ConfigError(f"backend.n_gpu_layers must be >= -1 (all), got {self.n_gpu_layers}")


@dataclass
class ExLlamaV2BackendConfig(BackendConfig):
    """ExLlamaV2: GPTQ or EXL2 checkpoints on CUDA, its dynamic (continuous) batching generator."""

    name: str = "exllamav2"
    max_seq_len: int = 4096
    max_batch_size: int = 64
    cache_tokens: int = 32768
    cache_type: str = "fp16"
    paged: bool = True
    num_gpus: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "cache_type", self.cache_type, EXL2_CACHE_TYPES)
        check_positive("backend", max_seq_len=self.max_seq_len, max_batch_size=self.max_batch_size)
        if self.cache_tokens < self.max_seq_len or self.cache_tokens % 256:
            raise ConfigError(
                f"backend.cache_tokens={self.cache_tokens} must be a multiple of 256 (the page "
                f"size) and at least max_seq_len={self.max_seq_len}"
            )


SERVER_APIS = ("completions", "chat")
# Flags a launching backend sets itself (model, address, GPUs): not allowed in extra_args.
VLLM_RESERVED_FLAGS = ("model", "port", "tensor-parallel-size")
TGI_RESERVED_FLAGS = ("model-id", "hostname", "port", "num-shard")


def _typed_names(config: object) -> list[str]:
    return [f.name for f in fields(config) if f.name != "extra_args"]


@dataclass
class VLLMServerConfig(BackendConfig):
    """vLLM's OpenAI-compatible server, launched once per deployment; None = vLLM's default."""

    name: str = "vllm_server"
    host: str = "127.0.0.1"
    api: str = "completions"
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
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "api", self.api, SERVER_APIS)
        check_choice("backend", "dtype", self.dtype, DTYPES)
        check_positive(
            "backend",
            startup_timeout_s=self.startup_timeout_s,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_model_len=self.max_model_len,
            cpu_kvcache_space_gb=self.cpu_kvcache_space_gb,
        )
        _check_fraction("gpu_memory_utilization", self.gpu_memory_utilization)
        check_values(
            "backend",
            host=self.host,
            kv_cache_dtype=self.kv_cache_dtype,
            quantization=self.quantization,
            served_model_name=self.served_model_name,
        )
        check_extra_args(
            "backend.extra_args", self.extra_args, _typed_names(self), VLLM_RESERVED_FLAGS
        )


@dataclass
class VLLMBackendConfig(BackendConfig):
    """vLLM's offline `LLM` engine in the trial's process; None = vLLM's default."""

    name: str = "vllm"
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    enable_prefix_caching: bool | None = None
    kv_cache_dtype: str | None = None
    quantization: str | None = None
    seed: int = 0
    cpu_kvcache_space_gb: int = 1
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "dtype", self.dtype, DTYPES)
        check_positive(
            "backend",
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_num_seqs=self.max_num_seqs,
            max_model_len=self.max_model_len,
            cpu_kvcache_space_gb=self.cpu_kvcache_space_gb,
        )
        _check_fraction("gpu_memory_utilization", self.gpu_memory_utilization)


@dataclass
class TGIBackendConfig(BackendConfig):
    """Text Generation Inference in docker (launched per deployment), or attached at `url`."""

    name: str = "tgi"
    url: str | None = None
    host: str = "127.0.0.1"
    image: str = "ghcr.io/huggingface/text-generation-inference"
    tag: str = "3.3.5"
    docker: str = "docker"
    volume: str = "~/.cache/huggingface/hub"
    shm_size: str = "1g"
    max_concurrent_requests: int = 128
    max_batch_total_tokens: int | None = None
    startup_timeout_s: float = 1800.0
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(
            "backend",
            max_concurrent_requests=self.max_concurrent_requests,
            max_batch_total_tokens=self.max_batch_total_tokens,
            startup_timeout_s=self.startup_timeout_s,
        )
        _check_url("url", self.url)
        check_values(
            "backend",
            host=self.host,
            image=self.image,
            tag=self.tag,
            docker=self.docker,
            volume=self.volume,
            shm_size=self.shm_size,
        )
        check_extra_args(
            "backend.extra_args", self.extra_args, _typed_names(self), TGI_RESERVED_FLAGS
        )


@dataclass
class OpenAIBackendConfig(BackendConfig):
    """An existing OpenAI-compatible endpoint: nothing is launched, only attached to."""

    name: str = "openai"
    url: str = MISSING
    api: str = "completions"
    model: str | None = None
    api_key_env: str | None = None
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("backend", "api", self.api, SERVER_APIS)
        check_positive("backend", connect_timeout_s=self.connect_timeout_s)
        _check_url("url", self.url)
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_]\w*", self.api_key_env):
            raise ConfigError(
                "backend.api_key_env must name an environment variable (the key itself is "
                "never put in config)"
            )


def _check_fraction(key: str, value: float | None) -> None:
    if value is not None and not 0.0 < value <= 1.0:
        raise ConfigError(f"backend.{key} must be in (0, 1], got {value}")


def _check_url(key: str, value: str | None) -> None:
    if value is not None and not re.match(r"https?://[^\s/]+", value):
        raise ConfigError(f"backend.{key}={value!r} must be an http:// or https:// URL")


BACKEND_SCHEMAS: dict[str, type] = {
    "hf_schema": HFBackendConfig,
    "sim_schema": SimBackendConfig,
    "vllm_server_schema": VLLMServerConfig,
    "vllm_schema": VLLMBackendConfig,
    "tgi_schema": TGIBackendConfig,
    "openai_schema": OpenAIBackendConfig,
    "ctranslate2_schema": CTranslate2BackendConfig,
    "llamacpp_schema": LlamaCppBackendConfig,
    "exllamav2_schema": ExLlamaV2BackendConfig,
}
