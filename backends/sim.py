"""The sim backend: launches `backends.sim_server` on a free loopback port.

The simulated server has an exact, configured latency schedule and injectable faults, so it is
the ground truth for measuring the load generator itself, and it lets any sweep run end to end
on a laptop (`backend=sim`). Its `/metrics` feed the trial's timeseries like a real server's.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from backends.base import TelemetrySource
from backends.prometheus import MetricMap, PrometheusSource
from backends.server_process import LaunchedServerBackend
from sweep import records as R

# The sim exports vLLM's metric names under a `sim:` prefix; KV-cache usage is a fraction.
SIM_METRICS: MetricMap = {
    "sim:kv_cache_usage_perc": (R.KV_CACHE_USAGE_PERCENT, 100.0),
    "sim:num_requests_running": (R.RUNNING_REQUESTS, 1.0),
    "sim:num_requests_waiting": (R.WAITING_REQUESTS, 1.0),
}


class SimBackend(LaunchedServerBackend):
    """A `sim_server` child process configured from `SimBackendConfig`."""

    launcher_name: ClassVar[str] = "sim"

    def start(self) -> None:
        """Launch the server and wait for `/health`; raise BackendError with its log tail."""
        self._server.launch(self._argv, self.config.host, self.config.startup_timeout_s)

    def _argv(self, port: int) -> list[str]:
        c = self.config
        return [
            sys.executable, "-m", "backends.sim_server",
            "--host", c.host, "--port", str(port),
            "--ttft-ms", str(c.ttft_ms), "--itl-ms", str(c.itl_ms),
            "--tokens-per-chunk", str(c.tokens_per_chunk),
            "--load-ms-per-running", str(c.load_ms_per_running),
            "--fault-rate", str(c.fault_rate), "--fault-kinds", ",".join(c.fault_kinds),
            "--seed", str(c.seed), "--usage-skew", str(c.usage_skew),
        ]  # fmt: skip

    def telemetry_sources(self) -> list[TelemetrySource]:
        """KV-cache usage and running / waiting requests from the server's `/metrics`."""
        return [PrometheusSource(f"{self.base_url}/metrics", SIM_METRICS)]
