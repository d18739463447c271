"""Launching a server backend's server on a free port, or finding one already running.

`ServerLauncher` bundles what every backend that launches its own server shares: a free port
(`free_port`), the start through `ServerProcess` with retries when another process takes the
port first, the log file, and stop. `probe` checks that a server a backend attaches to instead
(an endpoint, a container) answers, so an unreachable one is one clear failed trial.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from backends.process.group import TAIL_LINES, Explain, ServerProcess
from backends.process.scratch import scratch_folder
from backends.process.startup import LogWatch, StartupLines, startup_columns
from sweep.core import records as R
from sweep.core.errors import BackendError

# A free port can be taken by someone else before the server binds it; launches try a few.
START_ATTEMPTS = 3
# A server bound to every interface is still reached by the client over loopback.
_ANY_ADDRESS = ("0.0.0.0", "")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerLauncher:
    """What every backend that launches its own server shares: port, start, log, stop.

    `launch` picks a free port, starts `argv(port)` through `ServerProcess`, waits for the health
    URL and retries when another process took the port first. The log lives in the server's
    temporary folder (`folder`, where a backend may also tell the server to keep its own files),
    which `stop` removes, so read `log_text` before stopping. The launch that answered is timed,
    its log's lines stamped as they appeared (`startup`).
    """

    def __init__(self, name: str, explain: Explain | None = None) -> None:
        self.name = name
        self.explain = explain  # None: a failed start quotes the log's tail
        self.proc: ServerProcess | None = None
        self.url: str | None = None
        self._log_dir: Path | None = None
        self._watch: LogWatch | None = None
        self._start_s: float | None = None

    @property
    def folder(self) -> Path:
        """The server's temporary folder: its log, and files it is told to keep there."""
        if self._log_dir is None:
            self._log_dir = scratch_folder(self.name)  # removed by `stop`, or once we are gone
        return self._log_dir

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr."""
        return self.folder / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """Process id of the server's leader, once launched."""
        return None if self.proc is None else self.proc.pid

    def launch(
        self,
        argv: Callable[[int], Sequence[str]],
        host: str,
        timeout_s: float,
        health_path: str = "/health",
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Start the server on a free port of `host`; return its root URL once healthy.

        Raises:
            BackendError: kind `backend_start_failed`, with the last lines of the server's log.
        """
        client_host = "127.0.0.1" if host in _ANY_ADDRESS else host
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port(host)
            t0 = time.monotonic()
            self._watch = watch = LogWatch(self.log_path, t0)  # from the log's end before us
            self.proc = ServerProcess(argv(port), self.log_path, env)
            url = f"http://{client_host}:{port}"
            try:
                self.proc.wait_healthy(url + health_path, timeout_s, self.explain, watch.poll)
            except BackendError as exc:
                if attempt == START_ATTEMPTS or "address already in use" not in str(exc).lower():
                    raise
                continue
            except BaseException:
                self.proc.stop()  # interrupted while waiting: leave no server (keep its log)
                raise
            self.url, self._start_s = url, time.monotonic() - t0
            return url
        raise AssertionError("unreachable")  # the loop returns or raises

    def stop(self) -> None:
        """Stop the server's process group and remove its log; safe to call twice."""
        if self.proc is not None:
            self.proc.stop()
        self.url = None
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def startup(self, lines: StartupLines | None) -> dict[str, Any]:
        """The start-up columns of the launch that answered (`backends.process.startup`).

        `lines`: what this server's log prints as it starts (None: the total alone); empty
        before a launch answered.
        """
        if self._start_s is None or self._watch is None:
            return {}
        return startup_columns(lines, self._watch.lines, self._start_s)

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the server's log ("" before launch)."""
        return "" if self.proc is None else self.proc.log_tail(lines)

    def log_text(self) -> str | None:
        """The server's log so far (None before launch)."""
        return None if self.proc is None else self.proc.log_text()


def probe(
    base_url: str,
    paths: Sequence[str],
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """The first of `paths` under `base_url` that answers 200: is a server we attach to there?

    Raises:
        BackendError: kind `backend_start_failed`, naming what each path answered, so an
            unreachable endpoint is one clear failed trial rather than a hang.
    """
    answers = []
    with httpx.Client(timeout=timeout_s, trust_env=False, headers=headers) as client:
        for path in paths:
            url = base_url.rstrip("/") + path
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                answers.append(f"{path}: {type(exc).__name__}: {exc}".strip())
                continue
            if response.status_code == 200:
                return response
            answers.append(f"{path}: HTTP {response.status_code}")
    raise BackendError(
        f"no server answers at {base_url} ({'; '.join(answers)})", kind=R.ERROR_BACKEND_START
    )
