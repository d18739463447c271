"""The sim backend: launches `backends.sim_server` on a free loopback port.

The simulated server has an exact, configured latency schedule and injectable faults, so it is
the ground truth for measuring the load generator itself, and it lets any sweep run end to end
on a laptop (`backend=sim`). Its `/metrics` feed the trial's timeseries like a real server's.
With `backend.api=chat` and `backend.reasoning_tokens=N` it streams as a reasoning model does: N
tokens of thinking (under `backend.reasoning_field`) before each answer. A chat request's images
each cost `backend.ms_per_image` before its first token and `backend.tokens_per_image` prompt
tokens, and the server stamps how many each request carried. With `backend.lora_adapters` it
answers requests for those adapters by name, and stamps the `model` each asked for. With
`backend.landscape=peak` its speed is a known function of `max_num_seqs`,
`max_num_batched_tokens` and `chunked_prefill` (`backends.sim_server.landscape`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from backends.base import TelemetrySource
from backends.config import LoraServerConfig
from backends.launched import LaunchedServerBackend
from backends.lora import resolve_adapters, served_adapters
from backends.process.prometheus import MetricMap, PrometheusSource
from backends.process.startup import StartupLines
from backends.sim_server.landscape import LANDSCAPES
from backends.sim_server.schedule import SIM_FAULT_KINDS, SimSchedule
from sweep.core import records as R
from sweep.core.errors import ConfigError, check_choice, check_positive
from sweep.core.stream_chunks import REASONING_FIELDS

# The sim exports vLLM's metric names under a `sim:` prefix; KV-cache usage is a fraction.
SIM_METRICS: MetricMap = {
    "sim:kv_cache_usage_perc": (R.KV_CACHE_USAGE_PERCENT, 100.0),
    "sim:num_requests_running": (R.RUNNING_REQUESTS, 1.0),
    "sim:num_requests_waiting": (R.WAITING_REQUESTS, 1.0),
}
# Its latency histograms, mapped into the summary from the trial's /metrics deltas.
SIM_SERVER_SERIES = {
    R.SERVER_QUEUE: "sim:request_queue_time_seconds",
    R.SERVER_PREFILL: "sim:request_prefill_time_seconds",
    R.SERVER_TTFT: "sim:time_to_first_token_seconds",
    R.SERVER_ITL: "sim:inter_token_latency_seconds",
    R.SERVER_TPOT: "sim:request_time_per_output_token_seconds",
}


@dataclass
class SimBackendConfig(SimSchedule, LoraServerConfig):
    """The simulated OpenAI-compatible server: exact latencies, injectable faults, no model.

    `api`: `completions` (None, the default, hashes as before the field existed) or `chat`;
    a reasoning phase (`reasoning_tokens`) needs `chat`, where servers stream it apart.
    """

    name: str = "sim"
    startup_timeout_s: float = 30.0
    api: str | None = None
    # LoRA adapters are checked as a real server's are, then served by name only (a request
    # names one as its `model`; the sim has no weights to change).

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("backend", tokens_per_chunk=self.tokens_per_chunk)
        if min(self.ttft_ms, self.itl_ms, self.load_ms_per_running, self.ms_per_image) < 0:
            raise ConfigError(
                "backend.ttft_ms, itl_ms, load_ms_per_running and ms_per_image must be >= 0"
            )
        if self.tokens_per_image < 0:
            raise ConfigError(f"backend.tokens_per_image must be >= 0, got {self.tokens_per_image}")
        if self.max_num_seqs < 0:
            raise ConfigError(
                f"backend.max_num_seqs must be >= 0 (0: unlimited), got {self.max_num_seqs}"
            )
        if not 0.0 <= self.jitter <= 2.0:
            raise ConfigError(f"backend.jitter must be in [0, 2], got {self.jitter}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ConfigError(f"backend.fault_rate must be in [0, 1], got {self.fault_rate}")
        for kind in self.fault_kinds:
            check_choice("backend", "fault_kinds", kind, SIM_FAULT_KINDS)
        check_choice("backend", "reasoning_field", self.reasoning_field, REASONING_FIELDS)
        if not 0.0 <= self.tool_call_rate <= 1.0:
            raise ConfigError(
                f"backend.tool_call_rate must be in [0, 1], got {self.tool_call_rate}"
            )
        check_choice("backend", "landscape", self.landscape, LANDSCAPES)
        if self.max_num_batched_tokens < 0:
            raise ConfigError(
                f"backend.max_num_batched_tokens must be >= 0, got {self.max_num_batched_tokens}"
            )
        if self.reasoning_tokens < 0:
            raise ConfigError(f"backend.reasoning_tokens must be >= 0, got {self.reasoning_tokens}")
        if self.reasoning_tokens and self.api != "chat":
            raise ConfigError(
                "backend.reasoning_tokens streams a reasoning phase on the chat API only: "
                "set backend.api=chat"
            )


class SimBackend(LaunchedServerBackend):
    """A `sim_server` child process configured from `SimBackendConfig`."""

    scoring_unavailable: ClassVar[str | None] = (
        "the sim server has no model: its tokens are made up"
    )

    config_class: ClassVar[type] = SimBackendConfig

    launcher_name: ClassVar[str] = "sim"
    # No model to load: its process starts (imports, arguments) until it names its address, then
    # builds its app (the tokenizer, where one counts the prompts) and listens.
    startup_lines: ClassVar[StartupLines | None] = StartupLines(
        ends={R.START_PROCESS_S: r"^sim_server on http://"}
    )
    server_series: ClassVar[Mapping[str, str]] = SIM_SERVER_SERIES
    vllm_extensions: ClassVar[bool] = True  # ignore_eos, per-chunk usage

    @property
    def api(self) -> str:
        """`chat` when the config asks for it, else `completions`."""
        return self.config.api or "completions"

    @property
    def adapters(self) -> tuple[str, ...]:
        """The LoRA adapters it answers for, by name."""
        return tuple(served_adapters(self.config.lora_adapters, self.config.lora_count))

    def start(self) -> None:
        """Launch the server and wait for `/health`; raise BackendError with its log tail."""
        resolve_adapters(self.config.lora_adapters, self.config.lora_count)  # paths exist
        self._server.launch(self._argv, self.config.host, self.config.startup_timeout_s)

    def _argv(self, port: int) -> list[str]:
        schedule = {f.name: getattr(self.config, f.name) for f in fields(SimSchedule)}
        # The model's tokenizer counts the prompts, as a real server's would (its usage is then
        # checked against the client's count); a hub id or a folder without one: words.
        tokenizer = Path(self.model_path) / "tokenizer.json"
        counting = ["--tokenizer", self.model_path] if tokenizer.is_file() else []
        return [
            sys.executable, "-m", "backends.sim_server",
            "--host", self.config.host, "--port", str(port),
            "--schedule", json.dumps(schedule), *counting,
        ]  # fmt: skip

    def telemetry_sources(self) -> list[TelemetrySource]:
        """KV-cache usage and running / waiting requests from the server's `/metrics`."""
        return [PrometheusSource(f"{self.base_url}/metrics", SIM_METRICS)]
