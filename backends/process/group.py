"""Launching and stopping the child server process of a server backend.

Every server backend (sim, vLLM, TGI, ...) starts its server through `ServerProcess`: an argv
list (never a shell string) in a session of its own, so that stopping kills the whole process
group, including any workers the server forked; stdout and stderr go to one log file whose tail
is quoted in failure reports. `wait_healthy` polls a health URL and fails fast, with that tail,
when the process dies or the deadline passes. `free_port` picks a loopback port.
`ServerLauncher` bundles these for a backend: free port, start with retries, log file, stop;
`LaunchedServerBackend` is the base of the backends that launch one (URL, pid, log, stop, the
check that the server's packages are installed, waiting for it to drain between trials). A failed
start says why with the log's tail, or in one line (`failure_reason`) for backends that ask.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx

from backends.base import ServerBackend
from backends.prometheus import MetricMap, parse_metrics
from sweep.core import records as R
from sweep.core.errors import BackendError, MissingExtraError

log = logging.getLogger(__name__)

# Enough of the log to show a traceback or the engine's last complaint, short enough to read.
TAIL_LINES = 30
# Bytes read from the end of the log to find its last lines; server logs can be large.
_TAIL_BYTES = 64 * 1024
# At most this much of a log travels back with the results (the end, where failures are).
MAX_LOG_BYTES = 8 * 2**20
# A free port can be taken by someone else before the server binds it; launches try a few.
START_ATTEMPTS = 3
# A server bound to every interface is still reached by the client over loopback.
_ANY_ADDRESS = ("0.0.0.0", "")
# The last line of a Python traceback: `ValueError: Failed to load model from file: m.gguf`.
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)(: .*)?$")
REASON_CHARS = 400  # a reason is one line of an error message, not a paragraph
DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.25
POST_ATTEMPTS = 20  # a cache reset is refused while requests still hold blocks; it is retried

# Turns a server's log into the one line that says why it stopped (None: it does not say).
Explain = Callable[[str], str | None]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A child server process in its own process group, logging to `log_path`.

    The process starts when the object is made; `stop` (also run at interpreter exit, so an
    interrupted driver does not leak the server) terminates the whole group.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(argv, str):
            raise TypeError("ServerProcess takes an argv list, not a shell string")
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # The child keeps its own copy of the descriptor; ours can close right away.
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._stopped = False
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        """Process id of the server (also its process group id)."""
        return self._popen.pid

    def poll(self) -> int | None:
        """The exit code, or None while the server runs."""
        return self._popen.poll()

    def wait_healthy(self, url: str, timeout_s: float, explain: Explain | None = None) -> None:
        """Block until `url` answers 200; see `wait_healthy`."""
        wait_healthy(url, timeout_s, self, explain=explain)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        self._signal_group(signal.SIGTERM)
        try:
            self._popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # Also after a clean exit of the leader: a forked worker may still hold the GPU or port.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=grace_s)

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last `lines` lines of the server's log ("" when there is none)."""
        return log_tail(self.log_path, lines)

    def log_text(self) -> str:
        """The server's whole log, or its last `MAX_LOG_BYTES` when it is longer."""
        text = _read_end(self.log_path, MAX_LOG_BYTES)
        if len(text.encode()) >= MAX_LOG_BYTES:
            return f"[... log truncated to its last {MAX_LOG_BYTES // 2**20} MiB ...]\n{text}"
        return text

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: be killed when the worker that launched us dies (Linux only).

    A worker killed with SIGKILL (a cancelled hung trial, a lost node) runs no cleanup; without
    this its server would live on, holding the GPU and the port.
    """
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def log_tail(path: str | os.PathLike[str], lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a text file, decoded leniently ("" if it does not exist)."""
    return "\n".join(_read_end(path, _TAIL_BYTES).splitlines()[-lines:])


def _read_end(path: str | os.PathLike[str], max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def wait_healthy(
    url: str,
    timeout_s: float,
    proc: ServerProcess,
    poll_s: float = 0.1,
    explain: Explain | None = None,
) -> None:
    """Poll `url` until it answers 200, failing fast when `proc` exits or `timeout_s` passes.

    Raises:
        BackendError: kind `backend_start_failed`, with the command line and the last lines of
            the server's log; with `explain`, one line: what happened and what `explain` finds
            in the log.
    """
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=httpx.Timeout(1.0), trust_env=False) as client:
        while True:
            code = proc.poll()
            if code is not None:
                reason = f"server exited with code {code} before {url} answered"
                _start_failed(reason, proc, explain)
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                _start_failed(f"server did not answer {url} within {timeout_s:g} s", proc, explain)
            time.sleep(poll_s)


def _start_failed(reason: str, proc: ServerProcess, explain: Explain | None = None) -> None:
    tail = proc.log_tail()
    proc.stop()
    if explain is not None:
        why = explain(_read_end(proc.log_path, _TAIL_BYTES))
        raise BackendError(f"{reason}: {why}" if why else reason, kind=R.ERROR_BACKEND_START)
    message = f"{reason}: {' '.join(proc.argv)}"
    if tail:
        message = f"{message}\n--- server log tail ---\n{tail}"
    raise BackendError(message, kind=R.ERROR_BACKEND_START)


def failure_reason(log_text: str, detail: str | None = None) -> str | None:
    """The one line of a server's log that says why it stopped, or None when it says nothing.

    That is the last exception line of a traceback, else the last line that mentions an error,
    else the last line. With `detail` (a pattern), the first line matching it follows in
    parentheses: an engine's own complaint, printed before the traceback that reports it.
    """
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    if not lines:
        return None
    reason = next((line for line in reversed(lines) if EXCEPTION_LINE.match(line)), None)
    if reason is None:
        errors = (line for line in reversed(lines) if "error" in line.lower())
        reason = next(errors, lines[-1])
    if detail is not None:
        found = next((line for line in lines if re.search(detail, line)), None)
        if found is not None and found not in reason:
            reason = f"{reason} ({found})"
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 3] + "..."


class ServerLauncher:
    """What every backend that launches its own server shares: port, start, log, stop.

    `launch` picks a free port, starts `argv(port)` through `ServerProcess`, waits for the health
    URL and retries when another process took the port first. The log lives in a temporary
    directory that `stop` removes, so read `log_text` before stopping.
    """

    def __init__(self, name: str, explain: Explain | None = None) -> None:
        self.name = name
        self.explain = explain  # None: a failed start quotes the log's tail
        self.proc: ServerProcess | None = None
        self.url: str | None = None
        self._log_dir: Path | None = None

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        return self._log_dir / f"{self.name}.log"

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
            self.proc = ServerProcess(argv(port), self.log_path, env)
            url = f"http://{client_host}:{port}"
            try:
                self.proc.wait_healthy(url + health_path, timeout_s, self.explain)
            except BackendError as exc:
                if attempt == START_ATTEMPTS or "address already in use" not in str(exc).lower():
                    raise
                continue
            except BaseException:
                self.proc.stop()  # interrupted while waiting: leave no server (keep its log)
                raise
            self.url = url
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

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of the server's log ("" before launch)."""
        return "" if self.proc is None else self.proc.log_tail(lines)

    def log_text(self) -> str | None:
        """The server's log so far (None before launch)."""
        return None if self.proc is None else self.proc.log_text()


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
