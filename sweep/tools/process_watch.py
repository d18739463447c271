"""Child processes confined to CPUs, and where their whole process trees ran.

`sweep.tools.parity` runs each client round as a child process (ours: `python -m
sweep`, with the Ray it starts; theirs: vLLM's client) on the CPUs it was given, and reports which
processes ran, on which CPUs and at what niceness, and kills any left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

WATCH_INTERVAL_S = 1.0
STOP_GRACE_S = 30.0


def cpu_ids(text: str) -> set[int]:
    """CPU ids written as `taskset -c` takes them: `1`, `0,2`, `0-3`."""
    ids: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        ids.update(range(int(low), int(high or low) + 1))
    return ids


class TreeWatch:
    """Samples, from this process, where a child's whole process tree runs, once a second.

    Ray's daemons and workers are descendants of the `python -m sweep` process that starts them,
    so the tree is everything a client round ran.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, tuple[str, frozenset[int], int]] = {}  # pid: name, CPUs, nice
        self.procs: dict[int, psutil.Process] = {p.pid: p for p in process_tree(pid)}
        self.lingered = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._done.wait(WATCH_INTERVAL_S):
                return

    def sample(self) -> None:
        """Record where each process of the tree runs now."""
        for proc in process_tree(self.pid):
            try:
                with proc.oneshot():
                    self.seen[proc.pid] = (proc.name(), frozenset(proc.cpu_affinity()), proc.nice())
                self.procs.setdefault(proc.pid, proc)
            except psutil.Error:
                pass  # gone between listing and reading

    def stop(self, grace_s: float) -> None:
        """Stop sampling; wait up to `grace_s` for every process seen to exit, then kill the rest.

        Ray's daemons are reparented when the sweep exits and may outlive it: a round must not
        run beside the last one's, nor leave any behind.
        """
        self._done.set()
        self._thread.join()
        start = time.perf_counter()
        _, alive = psutil.wait_procs(list(self.procs.values()), timeout=grace_s)
        waited = time.perf_counter() - start
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        if alive:
            names = ", ".join(sorted({self.seen.get(p.pid, ("?",))[0] for p in alive}))
            self.lingered = f"; killed {len(alive)} processes left {grace_s:.0f} s after ({names})"
        elif waited > 1.0:
            self.lingered = f"; its processes outlived it by {waited:.0f} s"

    def summary(self, allowed: set[int] | None) -> str:
        """`N processes (names) on CPUs [..], nice <= k`, naming any that ran outside `allowed`."""
        names = ", ".join(sorted({name for name, _, _ in self.seen.values()}))
        cpus = sorted(set().union(*(c for _, c, _ in self.seen.values())))
        text = f"{len(self.seen)} processes ({names}) on CPUs {cpus}, nice <= "
        text += str(max(n for _, _, n in self.seen.values()))
        outside = sorted({name for name, c, _ in self.seen.values() if allowed and c - allowed})
        text += f"; OUTSIDE {sorted(allowed)}: {', '.join(outside)}" if outside else ""
        return text + self.lingered


def process_tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and all its descendants (none once it has exited)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def thread_cpus(pid: int) -> tuple[int, int, set[int]]:
    """Processes, threads, and the CPUs any thread of the tree of `pid` may run on."""
    procs, threads, cpus = 0, 0, set()
    for proc in process_tree(pid):
        try:
            tids = [t.id for t in proc.threads()]
            cpus.update(*(os.sched_getaffinity(tid) for tid in tids))
        except (psutil.Error, OSError):
            continue
        procs, threads = procs + 1, threads + len(tids)
    return procs, threads, cpus


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) each process of the tree of `pid` has used, by name and pid."""
    used: dict[str, float] = {}
    for proc in process_tree(pid):
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                used[f"{proc.name()}:{proc.pid}"] = times.user + times.system
        except psutil.Error:
            continue
    return used


def steal_seconds(cpus: set[int]) -> float:
    """Seconds the hypervisor has taken from `cpus` so far (`/proc/stat`'s steal column)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            total += int(fields[7])
    return total / ticks


def run_child(what: str, argv: list[str], log: Path, cwd: Path) -> tuple[float, TreeWatch]:
    """Run `argv` in `cwd`, output to `log`; its wall seconds and the watch of its tree.

    The child inherits this process's CPU affinity. Interrupted, it gets SIGINT (the sweep then
    shuts its Ray down); whatever of its tree is left `STOP_GRACE_S` after it exits is killed.
    """
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    watch = TreeWatch(proc.pid)
    try:
        code = proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
        raise
    finally:
        wall_s = time.perf_counter() - start
        watch.stop(STOP_GRACE_S)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"{what} exited with code {code} (log: {log}):\n{tail}")
    return wall_s, watch
