"""A launched server's start-up, timed by phase (`records.SERVER_START_S` and its phases).

While `wait_healthy` polls a starting server, a `LogWatch` reads the lines its log gained since
the last poll and stamps each with the time it was first seen, on the same clock as the launch
and the health check's first 200. A backend names the lines that end each phase
(`StartupLines`: vLLM's "Starting to load model", "Loading weights took", "init engine ...
took"); the phases run from one such line to the next, the last until the server answered, so
they add up to the whole start. The resolution is the poll's, a tenth of a second: a server logs
each line as it happens (Python's logging flushes every record).

Beside our clock, the durations the server reports itself (`StartupLines.reported`: the weights'
load, the engine's set-up, torch.compile, CUDA graphs) and whether its compile cache was cold or
warm, from the lines that say it compiled or loaded a compiled graph. `vllm bench startup` answers
the same question, cold (fresh caches) and warm, from inside one process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.core import records as R

# The phases in order; the last one ends when the server answers its health check.
PHASES = R.START_PHASES
# Lines longer than this are not searched (a dumped config, a traceback's locals).
MAX_LINE = 4096


@dataclass(frozen=True)
class StartupLines:
    """What a server's log says as it starts, as regular expressions searched line by line.

    `ends` maps a phase of `PHASES` (all but the last) to the line that ends it, its first
    match counting. `reported` maps a column of `records.START_REPORTED` to a pattern whose
    first group that matched is seconds; the first line that matches counts (each of a
    tensor-parallel server's workers prints its own).
    `cold` and `warm`: a line that says the compile cache missed, or was read; `stale`, one that
    says a cache was found but could not be read (the server compiled again).
    """

    ends: dict[str, str] = field(default_factory=dict)
    reported: dict[str, str] = field(default_factory=dict)
    cold: str | None = None
    warm: str | None = None
    stale: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.ends) - set(PHASES[:-1]) | set(self.reported) - set(R.START_REPORTED)
        if unknown:
            raise ValueError(f"StartupLines names no phase or reported column: {sorted(unknown)}")


class LogWatch:
    """The lines a log file gains, each stamped with when it was first seen (`poll`).

    Starts at the file's end as it is when made: a retried launch appends to the same log.
    """

    def __init__(self, path: str | os.PathLike[str], t0: float) -> None:
        self.path = Path(path)
        self.t0 = t0
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.partial = b""
        self.lines: list[tuple[float, str]] = []  # (seconds since t0, line)

    def poll(self, now: float) -> None:
        """Read what the log gained; stamp its complete lines `now`."""
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        for line in complete:
            self.lines.append((now - self.t0, line[:MAX_LINE].decode("utf-8", errors="replace")))


def startup_columns(
    lines: StartupLines | None, seen: list[tuple[float, str]], total_s: float
) -> dict[str, Any]:
    """The start-up columns of one launch that answered `total_s` after it began.

    `seen`: the log's lines with the seconds since the launch at which each was seen; with
    `lines` None (a server whose log says nothing we read), the total alone.
    """
    columns: dict[str, Any] = {R.SERVER_START_S: total_s}
    if lines is None:
        return columns
    ends = {phase: _first(seen, pattern) for phase, pattern in lines.ends.items()}
    begun = 0.0
    for phase in PHASES[:-1]:
        end = ends.get(phase)
        if end is None or end < begun:  # not printed, or printed out of order: merged onward
            columns[phase] = None
            continue
        columns[phase], begun = end - begun, end
    columns[PHASES[-1]] = max(0.0, total_s - begun)
    text = [line for _, line in seen]
    for column in R.START_REPORTED:
        pattern = lines.reported.get(column)
        columns[column] = None if pattern is None else _seconds(text, pattern)
    columns[R.START_CACHE] = _cache(text, lines)
    return columns


def _first(seen: list[tuple[float, str]], pattern: str) -> float | None:
    found = re.compile(pattern)
    return next((t for t, line in seen if found.search(line)), None)


def _seconds(text: list[str], pattern: str) -> float | None:
    found = re.compile(pattern)
    for line in text:
        if match := found.search(line):
            return float(next(group for group in match.groups() if group is not None))
    return None


def _cache(text: list[str], lines: StartupLines) -> str | None:
    """`stale`, `cold` where the server compiled, `warm` where it only loaded compiled graphs."""
    if lines.stale is not None and any(re.search(lines.stale, line) for line in text):
        return R.CACHE_STALE
    if lines.cold is not None and any(re.search(lines.cold, line) for line in text):
        return R.CACHE_COLD
    if lines.warm is not None and any(re.search(lines.warm, line) for line in text):
        return R.CACHE_WARM
    return None
