"""Keeping the load generator off the cores that Ray's daemons and a launched server use.

A trial's timings are taken by the load generator, which runs in the deployment's Ray worker.
Ray's daemons (raylet, its agents, and on the head node the GCS) and the server the deployment
launched wake up on whatever core the kernel picks; when one lands on the load generator's core
it delays a send or the read of a token by as long as it runs. Where the node has cores to spare
(`cluster.isolate_client`: `auto` from MIN_CPUS_AUTO allowed cores, `on`, `off`), the worker keeps
the last quarter of its cores for itself (every thread, and the shard processes it forks later)
and moves the daemons and the server it launched onto the others. `restore` puts everything back
when the deployment ends, so a reused worker or a later deployment starts as it found the node.
All deployments of a node share the same client cores.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import psutil

log = logging.getLogger(__name__)

ISOLATE_MODES = ("auto", "on", "off")
MIN_CPUS_AUTO = 4
DAEMON_NAMES = ("gcs_server", "dashboard", "log_monitor", "monitor.py")


@dataclass(frozen=True)
class CpuSplit:
    """The load generator's cores and the cores everything else was moved to."""

    client: frozenset[int]
    rest: frozenset[int]


def split(allowed: set[int] | frozenset[int], mode: str) -> CpuSplit | None:
    """The client's cores (the highest quarter, at least one) and the rest; None: no split."""
    if mode == "off" or len(allowed) < 2 or (mode == "auto" and len(allowed) < MIN_CPUS_AUTO):
        return None
    ordered = sorted(allowed)
    count = max(1, len(ordered) // 4)
    return CpuSplit(frozenset(ordered[-count:]), frozenset(ordered[:-count]))


@dataclass
class Isolation:
    """What `isolate` changed, so that `restore` can undo it."""

    split: CpuSplit | None = None
    before: dict[int, set[int]] = field(default_factory=dict)  # process pid -> its affinity
    own: set[int] = field(default_factory=set)  # this worker's affinity before

    @property
    def client_cpus(self) -> str | None:
        """The client's cores as text for the trial's record (`0,1`), None when not isolated."""
        if self.split is None:
            return None
        return ",".join(str(c) for c in sorted(self.split.client))


def isolate(mode: str) -> Isolation:
    """Move Ray's daemons and this worker's children off the client cores; confine this worker."""
    allowed = os.sched_getaffinity(0)
    chosen = split(allowed, mode)
    state = Isolation(chosen, own=set(allowed))
    if chosen is None:
        return state
    others = [*ray_daemons(), *psutil.Process().children(recursive=True)]
    for proc in others:
        try:
            state.before[proc.pid] = set(proc.cpu_affinity())
            _set_all_threads(proc, chosen.rest)
        except psutil.Error:  # gone meanwhile, or not ours to move: it stays where it was
            state.before.pop(proc.pid, None)
    _set_all_threads(psutil.Process(), chosen.client)
    log.info("load generator on CPUs %s; Ray and the server on %s", sorted(chosen.client),
             sorted(chosen.rest))  # fmt: skip
    return state


def restore(state: Isolation) -> None:
    """Give every process `isolate` moved its affinity back."""
    if state.split is None:
        return
    _set_all_threads(psutil.Process(), state.own)
    for pid, cpus in state.before.items():
        try:
            _set_all_threads(psutil.Process(pid), cpus)
        except psutil.Error:
            continue


def ray_daemons() -> list[psutil.Process]:
    """Ray's own processes on this node: the raylet above this worker, its agents, the GCS."""
    me = psutil.Process()
    raylet = next((p for p in me.parents() if "raylet" in p.name()), None)
    if raylet is None:
        return []  # not in a Ray worker (a test calling the trial runner directly)
    found = [raylet]
    for child in raylet.children():
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if child.pid != me.pid and (not title.startswith("ray::") or "Agent" in title):
            found.append(child)  # an agent; workers (other load generators) keep their cores
    session = _session_dir(raylet)
    if session is None:
        return found
    for proc in psutil.process_iter(["pid", "cmdline"]):
        text = " ".join(proc.info["cmdline"] or [])
        if proc.pid not in (p.pid for p in found) and session in text:
            if any(name in text for name in DAEMON_NAMES):
                found.append(proc)  # the GCS, dashboard and monitors of this cluster's head
    return found


def _session_dir(raylet: psutil.Process) -> str | None:
    """The Ray session folder named on the raylet's command line (tells this cluster's daemons)."""
    try:
        for arg in raylet.cmdline():
            if "session_" in arg:
                part = arg.split("=", 1)[-1]
                return part[: part.index("session_")] + part[part.index("session_") :].split("/")[0]
    except psutil.Error:
        return None
    return None


def _set_all_threads(proc: psutil.Process, cpus: set[int] | frozenset[int]) -> None:
    """Set the affinity of every thread of `proc` (the kernel sets it per thread)."""
    for thread in proc.threads():
        try:
            os.sched_setaffinity(thread.id, cpus)
        except (ProcessLookupError, PermissionError):
            continue  # the thread ended, or is not ours
