"""Launching and stopping the child server process of a server backend.

Every server backend (sim, vLLM, TGI, ...) starts its server through `ServerProcess`: an argv
list (never a shell string) in a session of its own, so that stopping kills the whole process
group, including any workers the server forked; stdout and stderr go to one log file whose tail
is quoted in failure reports. `wait_healthy` polls a health URL and fails fast, with that tail,
when the process dies or the deadline passes. `free_port` picks a loopback port.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from sweep import records as R
from sweep.errors import BackendError

# Enough of the log to show a traceback or the engine's last complaint, short enough to read.
TAIL_LINES = 30
# Bytes read from the end of the log to find its last lines; server logs can be large.
_TAIL_BYTES = 64 * 1024
# At most this much of a log travels back with the results (the end, where failures are).
MAX_LOG_BYTES = 8 * 2**20


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

    def wait_healthy(self, url: str, timeout_s: float) -> None:
        """Block until `url` answers 200; see `wait_healthy`."""
        wait_healthy(url, timeout_s, self)

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


def wait_healthy(url: str, timeout_s: float, proc: ServerProcess, poll_s: float = 0.1) -> None:
    """Poll `url` until it answers 200, failing fast when `proc` exits or `timeout_s` passes.

    Raises:
        BackendError: kind `backend_start_failed`, with the last lines of the server's log.
    """
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=httpx.Timeout(1.0), trust_env=False) as client:
        while True:
            code = proc.poll()
            if code is not None:
                _start_failed(f"server exited with code {code} before {url} answered", proc)
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                _start_failed(f"server did not answer {url} within {timeout_s:g} s", proc)
            time.sleep(poll_s)


def _start_failed(reason: str, proc: ServerProcess) -> None:
    tail = proc.log_tail()
    proc.stop()
    message = f"{reason}: {' '.join(proc.argv)}"
    if tail:
        message = f"{message}\n--- server log tail ---\n{tail}"
    raise BackendError(message, kind=R.ERROR_BACKEND_START)
