"""Tests marked `light`: run in pytest's own process and start no other, so that under
pytest-xdist they may run beside an `alone` test (tests/conftest.py).

An `alone` test must pass beside a busy loop on the other core (the suite passes with a CPU
burner beside it), and a light test asks no more of the machine than that: one core at most,
for Python, no server, no Ray, no engine. What keeps the mark true is `no_process_started`: a
light test that starts a process fails, naming the call. Beside that busy loop, a light test
makes two: an `alone` test that cannot pass so is marked `alone(company=False)`, and no light
test runs beside it.
"""

from __future__ import annotations

import _posixsubprocess
import contextlib
import os
import subprocess

# Every way the standard library starts a process ends in one of these: `subprocess` (its own
# name for fork_exec, or posix_spawn), `multiprocessing` (fork_exec or os.fork), `os.system`.
_STARTERS = (
    (subprocess, "_fork_exec"),
    (_posixsubprocess, "fork_exec"),
    (os, "fork"),
    (os, "forkpty"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "system"),
)


class ProcessStarted(RuntimeError):
    """A test marked `light` started a process."""


def _message(call: str) -> str:
    return (
        f"a test marked `light` started a process ({call}): light tests may run beside an "
        "`alone` test, so they start none; take the mark off (tests/light.py)"
    )


@contextlib.contextmanager
def no_process_started():
    """Within the block any start of a process raises `ProcessStarted`; and after it, if one was
    tried, even where the test caught the error (a test of a failure it expected)."""
    tried: list[str] = []

    def refusing(call: str):
        def refuse(*args, **kwargs):
            tried.append(call)
            raise ProcessStarted(_message(call))

        return refuse

    saved = [(module, name, getattr(module, name)) for module, name in _STARTERS]
    for module, name, _ in saved:
        setattr(module, name, refusing(f"{module.__name__}.{name}"))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
    if tried:
        raise ProcessStarted(_message(tried[0]))
