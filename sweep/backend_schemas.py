"""Schemas of the backend config group: one dataclass per backend, named `<name>_schema`.

Each `conf/backend/<name>.yaml` lists `- <name>_schema` in its defaults, so unknown engine flags
fail at composition. Backend-specific validation lives in `__post_init__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from sweep.errors import ConfigError, check_choice, check_positive

DTYPES = ("auto", "fp32", "fp16", "bf16")
# Faults the sim server can inject (HTTP codes, a cut stream, a bad event, a stall, a TCP reset).
SIM_FAULT_KINDS = ("500", "429", "truncate", "malformed", "stall", "reset")


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


BACKEND_SCHEMAS: dict[str, type] = {
    "hf_schema": HFBackendConfig,
    "sim_schema": SimBackendConfig,
}
