"""Where the test suite's CPU goes: each test unit run alone, its processes' CPU by kind.

The suite is CPU-bound on two cores, so a unit's cost is the CPU of everything it starts (Ray
nodes, workers, servers, engines), not its wall time. For each unit (a file or folder), one
after another, this runs pytest on it alone and samples its processes every `SAMPLE_S`: the CPU
a process used while the unit ran, summed by kind (`KINDS`, read from its command line). Its
processes are those that inherit the tag this sets in the command's environment (`TAG_VAR`):
Ray's daemons, which `ray start` leaves without a parent, are found by it too, and another
program running on the machine is not counted. A process that lives less than one interval is
missed, so the kinds add up to a little less than the machine's own count (`/proc/stat`, which
counts everything), printed beside them.

    .venv/bin/python scripts/bench_suite_cpu.py tests/e2e/test_cluster.py tests/multihost [--top 6]
    .venv/bin/python scripts/bench_suite_cpu.py --whole [--timeline /tmp/timeline.jsonl]
        [--processes /tmp/processes.jsonl]

With `--whole`, the README's test command is run once instead, and every kind is listed with
its share of the machine's CPU and how many processes of it there were, and the failed tests.
With `--timeline FILE`, each test's start and end are written there too
(`sweep.bench.suite_timeline`), and the `alone` tests' time with what ran beside them, then the
run's tail (from when the first worker had no test left) with its tests, are printed, then the
CPU by test file: its tests' in pytest's process, plus that of every process started for it (a
process inherits the running test's name, `TEST_VAR`, from the process that started it). With
`--whole --timeline`, last, the idle cores by test file: the machine's idle core-seconds between
samples, shared among the tests running then (`suite_timeline.idle_by_file`).

Run it on a quiet machine: the machine's CPU counts whatever else runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sweep.bench import suite_timeline

SAMPLE_S = 0.25
# (substring of the command line's first `NAME_WORDS` words, kind), first match wins: Ray's
# workers rename themselves `ray::<task>` once a task runs and `ray::IDLE` after it, so a worker
# is named by the last task it was seen running.
KINDS = (
    ("ray::_deployment_task", "Ray worker: deployment"),
    ("ray::IDLE", "Ray worker: idle"),
    ("default_worker.py", "Ray worker: booting"),
    ("ray::DashboardAgent", "Ray dashboard agent"),
    ("ray::RuntimeEnvAgent", "Ray runtime env agent"),
    ("ray::", "Ray worker: other task"),
    ("raylet", "Ray raylet"),
    ("gcs_server", "Ray GCS"),
    ("dashboard", "Ray dashboard"),
    ("log_monitor", "Ray log monitor"),
    ("autoscaler", "Ray autoscaler"),
    ("ray.util.client", "Ray client server"),
    ("bin/ray ", "ray CLI"),
    ("backends.sim_server", "sim server"),
    ("VLLM", "vLLM engine"),
    ("vllm", "vLLM server"),
    ("llama_cpp", "llama.cpp server"),
    ("wandb", "wandb"),
    ("-m sweep", "python -m sweep"),
    ("exec(eval(sys.stdin.readline()))", "pytest: xdist worker"),
    ("pytest", "pytest"),
)
WHOLE = ["scripts/test.sh", "-q"]  # the README's test command
TAG_VAR = "SWEEP_SUITE_CPU_TAG"  # set in a measured command's environment; its processes inherit it
# pytest names the running test in its process's environment, so a process a test starts (and
# all that process starts: a sweep's Ray daemons and their workers) inherits the test's name.
TEST_VAR = "PYTEST_CURRENT_TEST"

# Only a command line's first words are read: a raylet's later arguments hold the command lines
# of the processes it starts (Ray workers among them), which once counted raylets as workers.
NAME_WORDS = 4  # `python -u -c CODE`: an xdist worker's is its fourth


LISTED_WORDS = 8  # words of a command line `--processes` keeps (each cut to `LISTED_CHARS`)
LISTED_CHARS = 80


def _listed(cmdline: list[str]) -> str:
    return " ".join(word[:LISTED_CHARS] for word in cmdline[:LISTED_WORDS])


def kind(cmdline: list[str]) -> str:
    """The kind of a process, from its program and first arguments."""
    words = " ".join(cmdline[:NAME_WORDS])
    return next((name for text, name in KINDS if text in words), "other")


def machine_busy_s() -> float:
    """CPU seconds the machine's cores have spent busy since boot (`/proc/stat`)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]  # steal and guest left out
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def started_for(proc: psutil.Process, tag: str) -> str | None:
    """The test file `proc` was started for, or None if it is not the measured command's.

    "" when it was started for none (pytest itself, its workers); None when it did not inherit
    `tag` (`TAG_VAR` in its environment) or cannot be read.
    """
    try:
        env = proc.environ()
    except psutil.Error:  # gone meanwhile, or another user's
        return None
    if env.get(TAG_VAR) != tag:
        return None
    return suite_timeline.test_file(env.get(TEST_VAR, ""))


@dataclass
class Sampler:
    """The CPU of the processes tagged `tag` since the sampler started, summed by kind."""

    tag: str
    # (pid, create time) -> [its CPU when first seen, its CPU now, its kind]
    seen: dict = field(default_factory=dict)
    # (pid, create time) -> the test file it was started for (`TEST_VAR` in its environment)
    units: dict = field(default_factory=dict)
    others: set = field(default_factory=set)  # (pid, create time) of processes not tagged
    # (pid, create time) -> its command line's first `LISTED_WORDS` words, as it last read
    commands: dict = field(default_factory=dict)
    # (time, CPU-s the machine's cores had been busy) at each sample, every process's
    machine: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self, first: bool) -> None:
        """Read every tagged process once; on the first pass, what each had used before counts 0.

        The machine's busy CPU is read too (`machine`), for the idle cores beside each test.
        """
        self.machine.append((time.time(), machine_busy_s()))
        for proc in psutil.process_iter(["cmdline", "cpu_times", "create_time"]):
            times, cmd = proc.info["cpu_times"], proc.info["cmdline"] or []
            if times is None:
                continue
            used = times.user + times.system
            key = (proc.pid, proc.info["create_time"])
            if key in self.others:
                continue
            if key not in self.seen:
                unit = started_for(proc, self.tag)  # read once: its environment as it began
                if unit is None:
                    self.others.add(key)
                    continue
                self.seen[key] = [used if first else 0.0, used, kind(cmd)]
                self.units[key] = unit
                self.commands[key] = _listed(cmd)
            else:
                entry = self.seen[key]
                entry[1] = used
                now = kind(cmd)
                task = cmd and cmd[0].startswith("ray::")
                if task and now != "Ray worker: idle":  # a task's worker stays one
                    entry[2] = now
                    self.commands[key] = _listed(cmd)

    def run(self) -> None:
        """Sample until stopped."""
        first = True
        while not self.stop.is_set():
            self.sample(first)
            first = False
            self.stop.wait(SAMPLE_S)

    def counts(self) -> collections.Counter:
        """Processes seen, by kind."""
        return collections.Counter(name for _start, _used, name in self.seen.values())

    def by_unit(self) -> collections.Counter:
        """CPU seconds used while sampling by the processes each test file started."""
        totals: collections.Counter = collections.Counter()
        for key, (start, used, _name) in self.seen.items():
            totals[self.units[key]] += used - start
        return totals

    def processes(self) -> list[dict]:
        """Every process seen: its kind, command line (first words), test file and CPU."""
        return [
            {"kind": name, "command": self.commands[key], "test_file": self.units[key],
             "cpu_s": round(used - start, 3)}
            for key, (start, used, name) in self.seen.items()
        ]  # fmt: skip

    def by_kind(self) -> collections.Counter:
        """CPU seconds used while sampling, by kind."""
        totals: collections.Counter = collections.Counter()
        for start, used, name in self.seen.values():
            totals[name] += used - start
        return totals


def measure(unit: str, pytest_args: list[str]) -> dict:
    """Run pytest on `unit` alone; its wall time, outcome and CPU by kind."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *pytest_args, unit]
    return measure_command(unit, command)


def measure_command(label: str, command: list[str]) -> dict:
    """Run `command`, sampling its processes meanwhile; its wall time, outcome and CPU by kind."""
    sampler = Sampler(uuid.uuid4().hex)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    busy, started = machine_busy_s(), time.monotonic()
    env = {**os.environ, TAG_VAR: sampler.tag}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall, busy = time.monotonic() - started, machine_busy_s() - busy
    sampler.stop.set()
    thread.join()
    lines = [line for line in done.stdout.strip().splitlines() if " in " in line]
    summary = [line for line in lines if "passed" in line or "failed" in line]
    return {
        "unit": label,
        "wall_s": wall,
        "machine_cpu_s": busy,
        "outcome": (summary or [f"exited {done.returncode}"])[-1].strip("= "),
        "failures": [  # pytest's short summary: which tests failed, and the first line of why
            line for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))
        ],
        "kinds": sampler.by_kind(),
        "counts": sampler.counts(),
        "units": sampler.by_unit(),
        "processes": sampler.processes(),
        "machine": sampler.machine,
    }


def table(rows: list[dict], top: int) -> str:
    """One line per unit, its `top` kinds by CPU."""
    out = ["| unit | wall s | machine CPU-s | CPU-s by kind (largest first) | outcome |",
           "|---|---:|---:|---|---|"]  # fmt: skip
    for row in rows:
        kinds = ", ".join(f"{name} {cpu:.1f}" for name, cpu in row["kinds"].most_common(top))
        out.append(f"| {row['unit']} | {row['wall_s']:.1f} | {row['machine_cpu_s']:.1f} | "
                   f"{kinds} | {row['outcome']} |")  # fmt: skip
    return "\n".join(out)


def kinds_table(row: dict) -> str:
    """Every kind of one measured command: its CPU, its share of the machine's and its processes."""
    head = f"{row['unit']}: {row['wall_s']:.1f} s wall, {row['machine_cpu_s']:.1f} machine CPU-s"
    out = [f"{head}, {row['outcome']}", *row.get("failures", [])]
    out += ["", "| kind | CPU-s | share | processes |"]
    out.append("|---|---:|---:|---:|")
    for name, cpu in row["kinds"].most_common():
        share = cpu / row["machine_cpu_s"] if row["machine_cpu_s"] else 0.0
        out.append(f"| {name} | {cpu:.1f} | {share:.0%} | {row['counts'][name]} |")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`scripts/bench_suite_cpu.py`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("units", nargs="*", help="test files or folders, each run alone")
    parser.add_argument(
        "--whole", action="store_true", help=f"the whole suite instead: {' '.join(WHOLE)}"
    )
    parser.add_argument("--top", type=int, default=6, help="kinds shown per unit")
    parser.add_argument("--top-files", type=int, default=25,
                        help="test files shown by CPU (with --timeline)")  # fmt: skip
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, one string")
    parser.add_argument(
        "--processes",
        metavar="FILE",
        help="write every process measured there, one JSON line each (kind, command, CPU)",
    )
    parser.add_argument(
        "--timeline",
        metavar="FILE",
        help="write each test's start and end there; print the alone tests and the tail",
    )
    return parser


def run(args: argparse.Namespace) -> None:
    """Measure each unit in turn and print the table (or the whole suite, by kind)."""
    if args.whole == bool(args.units):
        raise SystemExit("error: name test units, or --whole for the whole suite, not both")
    pytest_args = args.pytest_args.split()
    if args.timeline:
        Path(args.timeline).unlink(missing_ok=True)  # the plugin appends
        os.environ[suite_timeline.TIMELINE_VAR] = str(Path(args.timeline).resolve())
        pytest_args += ["-p", suite_timeline.PLUGIN]
    if args.whole:
        rows = [measure_command("the whole suite", [*WHOLE, *pytest_args])]
        print(kinds_table(rows[0]))
    else:
        rows = [measure_unit(unit, pytest_args) for unit in args.units]
        print(table(rows, args.top))
    if args.processes:
        with open(args.processes, "w") as out:
            for row in rows:
                for process in row["processes"]:
                    out.write(json.dumps({"unit": row["unit"], **process}) + "\n")
    if args.timeline:
        timeline = suite_timeline.read_timeline(args.timeline)
        print("\n" + suite_timeline.timeline_table(timeline))
        started = sum((row["units"] for row in rows), collections.Counter())
        print("\n" + suite_timeline.files_table(timeline, started, args.top_files))
        if args.whole:  # units run one by one have the machine to themselves
            machine, cores = rows[0]["machine"], os.cpu_count() or 1
            print("\n" + suite_timeline.idle_table(timeline, machine, cores, args.top_files))


def measure_unit(unit: str, pytest_args: list[str]) -> dict:
    """`measure` with a line on stderr as each unit ends."""
    row = measure(unit, pytest_args)
    print(f"{unit}: {row['wall_s']:.1f} s, {row['machine_cpu_s']:.1f} CPU-s", file=sys.stderr,
          flush=True)  # fmt: skip
    return row
