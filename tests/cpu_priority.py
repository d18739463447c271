"""Under pytest-xdist, the worker running an `alone` test gets the CPU first; the others go on.

Each worker runs in a cgroup of its own (Linux's `cpu` controller, cgroup v1), made beneath a
group of the run's (`sweep-tests-RUN`) when the run starts; every process a test starts (a Ray
node, a server, a sweep, a double-forked daemon too) is in its worker's group. While an `alone`
test runs, the other workers' groups are made idle (`cpu.idle`, the kernel's SCHED_IDLE for a
group): whenever a process of the test wakes it takes a CPU from them at once, and they run
their own tests on the CPU time it leaves, instead of waiting. A mere weight was not enough: the
kernel splits a group's weight over the CPUs by the group's recent load on each, so a process of
the test waking on the other CPU had little of it there, and arrivals the tests time to 20 ms
came 600 ms late beside a vLLM start (three workers, `cpu.shares` 8:1:1). Priorities, not a set
of CPUs: what a process counts (`os.sched_getaffinity`, Ray's CPUs, torch's threads) does not
change under it.

When the group cannot be made (not root, no cgroup v1 `cpu` hierarchy, `SWEEP_TEST_PRIORITY=0`)
the run says so once and falls back to taking the machine alone (tests/conftest.py's share).
"""

from __future__ import annotations

import os
from pathlib import Path

GROUP_VAR = "SWEEP_TEST_CPU_GROUP"  # the run's group, for the workers (they inherit it)
SWITCH_VAR = "SWEEP_TEST_PRIORITY"  # "0": no groups, the machine taken alone instead
SHARES = 1024  # the kernel's default weight of a group


def _cpu_hierarchy() -> Path | None:
    """Where this process's group of the cgroup v1 `cpu` controller is, if it has one."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    mount = next(
        (
            Path(fields[1])
            for fields in (line.split() for line in mounts)
            if fields[2] == "cgroup" and "cpu" in fields[3].split(",")
        ),
        None,
    )
    if mount is None:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return mount / path.lstrip("/")
    return None


def why_not() -> str:
    """Why a run here cannot give an `alone` test the CPU first, or "" where it can."""
    if os.environ.get(SWITCH_VAR) == "0":
        return f"{SWITCH_VAR}=0"
    parent = _cpu_hierarchy()
    if parent is None:
        return "no cgroup v1 `cpu` controller mounted"
    if not (parent / "cpu.idle").exists():
        return "the kernel's `cpu` controller has no `cpu.idle` (Linux 5.15 or later)"
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable (not root)"
    return ""


def workers() -> int:
    """pytest-xdist workers for the suite here (scripts/test.sh): three where an `alone` test has
    the CPU first, two where it takes the machine alone (three then failed tests that time a
    server: docs/benchmarks.md)."""
    return 2 if why_not() else 3


def make_run_group(run: str, workers: int) -> tuple[Path | None, str]:
    """The run's group beneath this process's, weighing as much as `workers` processes did before
    (so the run's share against the rest of the machine is unchanged); or None and why not."""
    why = why_not()
    if why:
        return None, why
    try:
        parent = _cpu_hierarchy()
        group = parent / f"sweep-tests-{run}"
        group.mkdir(exist_ok=True)
        (group / "cpu.shares").write_text(str(SHARES * workers))
    except OSError as error:
        return None, f"cannot make a cgroup ({error.strerror}: {error.filename})"
    return group, ""


def join(group: Path, worker: str) -> Path:
    """Move this process (every thread) into the worker's group beneath the run's."""
    own = group / worker
    own.mkdir(exist_ok=True)
    (own / "cpu.shares").write_text(str(SHARES))
    (own / "cgroup.procs").write_text(str(os.getpid()))
    return own


def prefer(own: Path, first: bool) -> None:
    """Give the worker's group the CPU first (while an `alone` test runs: the other workers'
    groups idle), or an equal share."""
    for other in own.parent.iterdir():
        if other.is_dir() and other != own:
            (other / "cpu.idle").write_text("1" if first else "0")


def remove_run_group(group: Path, outer: Path | None = None) -> list[int]:
    """Remove the run's groups (a worker's, and any a run inside a test left in it) once its
    workers have ended; the processes still in them (none when every test stopped what it
    started) are moved out first and returned."""
    outer = outer or group.parent
    left = []
    for inner in sorted(p for p in group.iterdir() if p.is_dir()):
        left += remove_run_group(inner, outer)
    for pid in (group / "cgroup.procs").read_text().split():
        left.append(int(pid))
        try:
            (outer / "cgroup.procs").write_text(pid)
        except ProcessLookupError:
            pass  # it ended meanwhile
    group.rmdir()
    return left


if __name__ == "__main__":
    print(workers())
