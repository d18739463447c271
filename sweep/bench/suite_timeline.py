"""When each test ran: the suite's `alone` tests, what ran beside them, and its tail.

A pytest plugin (`-p sweep.bench.suite_timeline`) that appends each test's start and end, its
pytest-xdist worker, whether it is marked `alone` or `light` and the CPU its pytest process used
meanwhile (`cpu_s`; the processes it started are `sweep.bench.suite_cpu`'s), as a JSON line to
the file named by `TIMELINE_VAR` when the session starts; and the reading of that file: how
long the `alone` tests ran and what ran beside them (`light` tests only, tests/conftest.py: any
other there is a scheduling fault), and the run's tail, from when the first worker had no test
left to the end, with the tests in it: files with an `alone` test are handed out last, so the
tail is mostly the alone tests, one at a time, and a test in it that need not be alone belongs
in a file without one.

    .venv/bin/python scripts/bench_suite_cpu.py --whole --timeline /tmp/timeline.jsonl
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

TIMELINE_VAR = "SWEEP_TEST_TIMELINE"  # the file the plugin appends to
PLUGIN = __name__


def pytest_configure(config: Any) -> None:
    """Record this session's tests where they run: in an xdist worker, or a run without xdist.

    The xdist controller hears every worker's tests again, and writes nothing.
    """
    path = os.environ.get(TIMELINE_VAR)
    worker = getattr(config, "workerinput", {}).get("workerid")
    controller = worker is None and getattr(config.option, "numprocesses", None)
    if path and not controller:
        config.pluginmanager.register(Recorder(path, worker or "main"), "suite-timeline-recorder")


class Recorder:
    """Appends each test's start, end, worker and `alone` mark to `path` as a JSON line.

    One per session (a pytest run inside a test has its own), so nothing is shared between them.
    """

    def __init__(self, path: str, worker: str) -> None:
        self.path, self.worker = path, worker
        self.seen: dict[str, list] = {}  # nodeid -> [start, mark, this process's CPU then]

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        """Note when a test (its set-up, call and tear-down) starts."""
        self.seen[nodeid] = [time.time(), "", time.process_time()]

    def pytest_runtest_setup(self, item: Any) -> None:
        """Note whether the test is marked `alone` or `light` (its start was noted just before)."""
        if item.nodeid in self.seen:
            marks = [m for m in ("alone", "light") if item.get_closest_marker(m) is not None]
            self.seen[item.nodeid][1] = marks[0] if marks else ""

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        """Append the test's row."""
        start, mark, cpu = self.seen.pop(nodeid, [time.time(), "", time.process_time()])
        row = {"test": nodeid, "worker": self.worker, "start": start, "end": time.time(),
               "alone": mark == "alone", "light": mark == "light",
               "cpu_s": time.process_time() - cpu}  # fmt: skip
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def test_file(nodeid: str) -> str:
    """The file of a pytest test name (`tests/x.py::test_y[1]`, or pytest's `... (call)`)."""
    return nodeid.split("::")[0]


def read_timeline(path: str | Path) -> list[dict]:
    """The rows the plugin wrote, in order of start."""
    lines = Path(path).read_text().splitlines()
    return sorted((json.loads(line) for line in lines if line.strip()), key=lambda r: r["start"])


def tail(rows: list[dict]) -> tuple[float, float]:
    """(start, end) of the run's tail: from when the first worker had no test left to the end.

    A worker with nothing left waits for the others: the tail is time only part of the machine
    is used by tests.
    """
    last: dict[str, float] = {}
    for row in rows:
        last[row["worker"]] = max(last.get(row["worker"], row["end"]), row["end"])
    return min(last.values()), max(last.values())


def beside_alone(rows: list[dict]) -> tuple[float, float, float]:
    """Seconds of `alone` tests, and of `light` and other tests run beside them.

    Beside: while an `alone` test ran, on another worker.
    """
    alone = [r for r in rows if r["alone"]]
    light = other = 0.0
    for row in rows:
        if row["alone"]:
            continue
        overlap = sum(
            max(0.0, min(row["end"], a["end"]) - max(row["start"], a["start"]))
            for a in alone
            if a["worker"] != row["worker"]
        )
        light, other = (light + overlap, other) if row.get("light") else (light, other + overlap)
    return sum(r["end"] - r["start"] for r in alone), light, other


def timeline_table(rows: list[dict], shortest_s: float = 0.5) -> str:
    """The suite's span, its `alone` tests and what ran beside them, and its tail.

    The tests of the tail are listed, those of at least `shortest_s`.
    """
    first = min(r["start"] for r in rows)
    begin, end = tail(rows)
    alone, light, other = beside_alone(rows)
    workers = len({r["worker"] for r in rows})
    out = [f"{len(rows)} tests over {end - first:.1f} s on {workers} workers; alone tests "
           f"{alone:.1f} s, beside them light tests {light:.1f} s and others {other:.1f} s; "
           f"the tail from {begin - first:.1f} s, once a worker had no test left: "
           f"{end - begin:.1f} s", "",
           "| starts at s | s | worker | mark | test |", "|---:|---:|---|---|---|"]  # fmt: skip
    for row in rows:
        if row["end"] > begin and row["end"] - row["start"] >= shortest_s:
            mark = "alone" if row["alone"] else "light" if row.get("light") else ""
            out.append(f"| {row['start'] - first:.1f} | {row['end'] - row['start']:.1f} | "
                       f"{row['worker']} | {mark} | {row['test']} |")  # fmt: skip
    return "\n".join(out)


def wall_by_file(rows: list[dict]) -> dict[str, float]:
    """Test file -> the seconds its tests ran, summed."""
    wall: dict[str, float] = {}
    for row in rows:
        unit = test_file(row["test"])
        wall[unit] = wall.get(unit, 0.0) + row["end"] - row["start"]
    return wall


def files_table(rows: list[dict], started: dict[str, float], top: int = 25) -> str:
    """The `top` test files by CPU, in pytest's process and in the processes they started.

    In pytest's process: the timeline's `cpu_s` of its tests; `started`: test file -> CPU-s of
    the processes started for it (`sweep.bench.suite_cpu`).
    """
    wall = wall_by_file(rows)
    inside: dict[str, float] = {}
    for row in rows:
        unit = test_file(row["test"])
        inside[unit] = inside.get(unit, 0.0) + row.get("cpu_s", 0.0)
    units = set(wall) | {u for u in started if u}
    total = {u: inside.get(u, 0.0) + started.get(u, 0.0) for u in units}
    out = [f"CPU by test file: {sum(total.values()):.1f} CPU-s in all, the {top} largest", "",
           "| test file | tests' s | CPU-s | in pytest | in processes it started |",
           "|---|---:|---:|---:|---:|"]  # fmt: skip
    for unit in sorted(units, key=lambda u: -total[u])[:top]:
        out.append(f"| {unit} | {wall.get(unit, 0.0):.1f} | {total[unit]:.1f} | "
                   f"{inside.get(unit, 0.0):.1f} | {started.get(unit, 0.0):.1f} |")  # fmt: skip
    return "\n".join(out)


def idle_by_file(
    rows: list[dict], machine: list[tuple[float, float]], cores: int
) -> tuple[dict[str, float], float, float]:
    """The cores the machine left idle while each test file's tests ran.

    `machine`: (time, CPU-s the machine's cores had been busy) samples (`sweep.bench.suite_cpu`).
    Between two samples, the idle core-seconds are shared equally among the tests running then
    (at the interval's middle); intervals with no test running (collection, the end) count for
    none. Returns (test file -> idle core-s, idle core-s over the tests, core-s over the tests):
    a file high in it left the cores idle, waiting on something, or ran beside one that did.
    """
    idle: dict[str, float] = {}
    free_total = span_total = 0.0
    for (t0, busy0), (t1, busy1) in itertools.pairwise(machine):
        if t1 <= t0:
            continue
        middle = (t0 + t1) / 2
        running = [test_file(r["test"]) for r in rows if r["start"] <= middle < r["end"]]
        if not running:
            continue
        free = max(0.0, cores * (t1 - t0) - (busy1 - busy0))
        free_total, span_total = free_total + free, span_total + cores * (t1 - t0)
        for unit in running:
            idle[unit] = idle.get(unit, 0.0) + free / len(running)
    return idle, free_total, span_total


def idle_table(rows: list[dict], machine: list[tuple[float, float]], cores: int, top: int) -> str:
    """The `top` test files by the idle core-seconds beside them (`idle_by_file`)."""
    idle, free, span = idle_by_file(rows, machine, cores)
    wall = wall_by_file(rows)
    share = free / span if span else 0.0
    out = [f"Idle cores by test file: {free:.1f} of {span:.1f} core-s idle while tests ran "
           f"({share:.0%}), the {top} files with most", "",
           "| test file | tests' s | idle core-s | idle cores while it ran |",
           "|---|---:|---:|---:|"]  # fmt: skip
    for unit in sorted(idle, key=lambda u: -idle[u])[:top]:
        cores_idle = idle[unit] / wall[unit] if wall.get(unit) else 0.0
        out.append(f"| {unit} | {wall.get(unit, 0.0):.1f} | {idle[unit]:.1f} | {cores_idle:.2f} |")
    return "\n".join(out)
