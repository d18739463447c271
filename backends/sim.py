"""The sim backend: launches `backends.sim_server` on a free loopback port.

The simulated server has an exact, configured latency schedule and injectable faults, so it is
the ground truth for measuring the load generator itself, and it lets any sweep run end to end
on a laptop (`backend=sim`). Its `/metrics` feed the trial's timeseries like a real server's.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from backends.base import ServerBackend, TelemetrySource
from backends.prometheus import MetricMap, prometheus_source
from backends.server_process import ServerProcess, free_port
from sweep import records as R
from sweep.errors import BackendError

# The sim exports vLLM's metric names under a `sim:` prefix; KV-cache usage is a fraction.
SIM_METRICS: MetricMap = {
    "sim:kv_cache_usage_perc": (R.KV_CACHE_USAGE_PERCENT, 100.0),
    "sim:num_requests_running": (R.RUNNING_REQUESTS, 1.0),
    "sim:num_requests_waiting": (R.WAITING_REQUESTS, 1.0),
}
# A free port can be taken by someone else before the server binds it; try a few.
START_ATTEMPTS = 3


class SimBackend(ServerBackend):
    """A `sim_server` child process configured from `SimBackendConfig`."""

    def __init__(self, config: object, model_path: str) -> None:
        super().__init__(config, model_path)
        self._proc: ServerProcess | None = None
        self._url: str | None = None
        self._log_dir: Path | None = None

    @property
    def base_url(self) -> str:
        """Root URL of the running sim server."""
        if self._url is None:
            raise BackendError("the sim backend is not started")
        return self._url

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="sim-backend-"))
        return self._log_dir / "sim_server.log"

    def start(self) -> None:
        """Launch the server and wait for `/health`; raise BackendError with its log tail."""
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port(self.config.host)
            self._proc = ServerProcess(self._argv(port), self.log_path)
            url = f"http://{self.config.host}:{port}"
            try:
                self._proc.wait_healthy(f"{url}/health", self.config.startup_timeout_s)
            except BackendError as exc:
                if attempt == START_ATTEMPTS or "address already in use" not in str(exc).lower():
                    raise
                continue
            self._url = url
            return

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
        ]

    def stop(self) -> None:
        """Stop the server's process group and remove its log; safe to call twice."""
        if self._proc is not None:
            self._proc.stop()
        self._url = None
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    @property
    def pid(self) -> int | None:
        """Process id of the server, while one was started."""
        return None if self._proc is None else self._proc.pid

    def telemetry_sources(self) -> list[TelemetrySource]:
        """KV-cache usage and running / waiting requests from the server's `/metrics`."""
        return [prometheus_source(f"{self.base_url}/metrics", SIM_METRICS)]

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        return "" if self._proc is None else self._proc.log_tail(lines)

    def log_text(self) -> str | None:
        """The server's log so far (read before `stop`, which removes it)."""
        return None if self._proc is None else self._proc.log_text()
