"""A child server process in its own process group: start, health wait, logs, stop.

Every server backend (sim, vLLM, TGI, ...) starts its server through `ServerProcess`: an argv
list (never a shell string) in a session of its own, so that stopping kills the whole process
group, including any workers the server forked; stdout and stderr go to one log file whose tail
is quoted in failure reports. `wait_healthy` polls a health URL and fails fast, with that tail,
when the process dies or the deadline passes; `failure_reason` finds the one line of a log that
says why a server stopped. `backends.process.launcher` starts one on a free port.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from sweep.core import records as R
from sweep.core.errors import BackendError

# Enough of the log to show a traceback or the engine's last complaint, short enough to read.
TAIL_LINES = 30
# Bytes read from the end of the log to find its last lines; server logs can be large.
_TAIL_BYTES = 64 * 1024
# At most this much of a log travels back with the results (the end, where failures are).
MAX_LOG_BYTES = 8 * 2**20
# The last line of a Python traceback: `ValueError: Failed to load model from file: m.gguf`.
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)(: .*)?$")
REASON_CHARS = 400  # a reason is one line of an error message, not a paragraph

# Turns a server's log into the one line that says why it stopped (None: it does not say).
Explain = Callable[[str], str | None]


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

    def wait_healthy(
        self,
        url: str,
        timeout_s: float,
        explain: Explain | None = None,
        on_poll: Callable[[float], None] | None = None,
    ) -> None:
        """Block until `url` answers 200; see `wait_healthy`."""
        wait_healthy(url, timeout_s, self, explain=explain, on_poll=on_poll)

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
    on_poll: Callable[[float], None] | None = None,
) -> None:
    """Poll `url` until it answers 200, failing fast when `proc` exits or `timeout_s` passes.

    `on_poll`, if given, is called with `time.monotonic()` at each poll and once more as the
    server answered (`backends.process.startup.LogWatch.poll`).

    Raises:
        BackendError: kind `backend_start_failed`, with the command line and the last lines of
            the server's log; with `explain`, one line: what happened and what `explain` finds
            in the log.
    """
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=httpx.Timeout(1.0), trust_env=False) as client:
        while True:
            if on_poll is not None:
                on_poll(time.monotonic())
            code = proc.poll()
            if code is not None:
                reason = f"server exited with code {code} before {url} answered"
                _start_failed(reason, proc, explain)
            try:
                if client.get(url).status_code == 200:
                    if on_poll is not None:
                        on_poll(time.monotonic())
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
