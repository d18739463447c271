"""The base class of the server backends that launch their own server (`LaunchedServerBackend`).

A subclass gives its server's command line (`argv`), what the server's process imports and the
extra that installs it, and how to tell the server is idle and empty its prefix cache between
trials; the base class launches it through `backends.process.launcher.ServerLauncher` and gives
the URL, process id, log and stop. A failed start says why with the log's tail, or in one line
(`backends.process.group.failure_reason`) for backends that ask.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from backends.base import ServerBackend
from backends.process.group import TAIL_LINES, failure_reason
from backends.process.launcher import ServerLauncher
from backends.process.prometheus import MetricMap, parse_metrics
from backends.process.startup import StartupLines
from sweep.core import records as R
from sweep.core.errors import BackendError, MissingExtraError

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.25
POST_ATTEMPTS = 20  # a cache reset is refused while requests still hold blocks; it is retried


def post_until_ok(
    client: httpx.Client,
    path: str,
    accept: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
    attempts: int = POST_ATTEMPTS,
) -> bool:
    """POST `path` until `accept` takes the answer, a short pause between tries.

    For routes a busy server refuses (a cache reset while requests hold blocks). False when no
    answer within `attempts` was accepted.
    """
    for _ in range(attempts):
        try:
            if accept(client.post(path)):
                return True
        except (httpx.HTTPError, ValueError):  # no answer, or a body that is not JSON
            pass
        time.sleep(POLL_S)
    return False


class LaunchedServerBackend(ServerBackend):
    """A server backend that launches its own server through a `ServerLauncher`.

    Subclasses implement `start`: usually `self.launch()`, which checks `server_packages` and
    starts `argv` on the config's `host` within its `startup_timeout_s`; the URL, process id,
    log and stop come from the launcher. `launcher_name` names the log file and the backend in
    errors.
    """

    launcher_name: ClassVar[str] = "server"
    # The modules the server's own process imports (module -> its pip package) and the project's
    # extra that installs them: `launch` checks them first, so a missing one is one line naming
    # the extra instead of a traceback in the server's log.
    server_packages: ClassVar[Mapping[str, str]] = {}
    server_extra: ClassVar[str] = ""
    # A failed start's message: the log's tail (False), or one line (True): what happened and
    # the reason the log gives (`failure_reason`, with the first line matching `failure_detail`).
    # The whole log is kept as backend.log either way.
    one_line_failures: ClassVar[bool] = False
    failure_detail: ClassVar[str | None] = None
    # Between trials (`reset_between_trials`): the /metrics map of the server's running and
    # waiting requests, drained first (empty: no reset), then the route that empties its prefix
    # cache (None: nothing to empty), retried while the server refuses it.
    load_metrics: ClassVar[MetricMap] = {}
    cache_reset_path: ClassVar[str | None] = None
    # What the server's log prints as it starts, to split its start-up into phases (None: the
    # whole start alone, `backends.process.startup`).
    startup_lines: ClassVar[StartupLines | None] = None

    def __init__(self, config: Any, model_path: str) -> None:
        super().__init__(config, model_path)
        explain = self.explain_failure if self.one_line_failures else None
        self._server = ServerLauncher(self.launcher_name, explain)

    def launch(self, health_path: str = "/health", env: Mapping[str, str] | None = None) -> str:
        """Check the server's packages, start `argv` and wait until `health_path` answers.

        Raises:
            MissingExtraError: a module of `server_packages` is not installed.
            BackendError: kind `backend_start_failed`: the server exited or did not answer.
        """
        self.require_packages()
        c = self.config
        return self._server.launch(self.argv, c.host, c.startup_timeout_s, health_path, env)

    def startup(self) -> dict[str, Any]:
        """The launch's time to healthy, split at `startup_lines` (empty before it answered)."""
        return self._server.startup(self.startup_lines)

    def require_packages(self) -> None:
        """One line naming `server_extra` when a module of `server_packages` is missing."""
        for module, package in self.server_packages.items():
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError(package, self.server_extra)

    def argv(self, port: int) -> list[str]:
        """The server's command line for `port` (what `launch` starts)."""
        raise NotImplementedError(f"{type(self).__name__} launches no server through `launch`")

    def explain_failure(self, log_text: str) -> str | None:
        """Why the server did not start, in one line of its log (`failure_reason`)."""
        return failure_reason(log_text, self.failure_detail)

    def reset_between_trials(self) -> None:
        """Wait until no request runs or waits, then empty the prefix cache where there is one.

        Without the reset, a later trial would hit the cached prefixes of an earlier one and
        report first-token times no fresh server would give.
        """
        if not self.load_metrics:
            return
        with httpx.Client(base_url=self.base_url, timeout=10.0, trust_env=False) as client:
            self.drain(client, self.load_metrics)
            if self.resets_cache and not post_until_ok(
                client, self.cache_reset_path, self.cache_reset_done
            ):
                log.warning(
                    "%s did not empty its prefix cache; next trial starts anyway",
                    self.launcher_name,
                )

    @property
    def resets_cache(self) -> bool:
        """Whether `reset_between_trials` empties a prefix cache (`cache_reset_path` is set)."""
        return self.cache_reset_path is not None

    def cache_reset_done(self, response: httpx.Response) -> bool:
        """Whether the server took the cache reset (200 by default)."""
        return response.status_code == 200

    def drain(
        self, client: httpx.Client, load: MetricMap, timeout_s: float = DRAIN_TIMEOUT_S
    ) -> bool:
        """Wait until the server's `/metrics` shows no request running or waiting.

        `load` maps the server's families to `RUNNING_REQUESTS` and `WAITING_REQUESTS`. False,
        with a warning, when the server is still busy after `timeout_s` (or has exited).
        """
        deadline = time.monotonic() + timeout_s
        proc = self._server.proc
        while time.monotonic() < deadline and proc is not None and proc.poll() is None:
            try:
                samples = parse_metrics(client.get("/metrics").text, load)
            except (httpx.HTTPError, ValueError):  # not up, or a torn exposition: ask again
                samples = []
            busy = [v for _, m, v in samples if m in (R.RUNNING_REQUESTS, R.WAITING_REQUESTS)]
            if busy and sum(busy) == 0:
                return True
            time.sleep(POLL_S)
        log.warning(
            "%s did not drain within %.0f s; next trial starts", self.launcher_name, timeout_s
        )
        return False

    @property
    def base_url(self) -> str:
        """Root URL of the running server."""
        if self._server.url is None:
            raise BackendError(f"the {self.launcher_name} backend is not started")
        return self._server.url

    @property
    def pid(self) -> int | None:
        """Process id of the server, once launched."""
        return self._server.pid

    def stop(self) -> None:
        """Stop the server's whole process group and remove its log; safe to call twice."""
        self._server.stop()

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the server's log."""
        return self._server.log_tail(lines)

    def log_text(self) -> str | None:
        """The server's log so far (read before `stop`, which removes it)."""
        return self._server.log_text()
