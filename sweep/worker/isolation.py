"""Keeping the load generator off the cores that Ray's daemons and a launched server use.

A trial's timings are taken by the load generator, which runs in the deployment's Ray worker.
Ray's daemons (raylet, its agents, and on the head node the GCS) and the server the deployment
launched wake up on whatever core the kernel picks; when one lands on the load generator's core
it delays a send or the read of a token by as long as it runs. Where the node has cores to spare
(`cluster.isolate_client`: `auto` from MIN_CPUS_AUTO allowed cores, `on`, `off`), the worker keeps
the last quarter of its cores for itself (every thread, and the shard processes it forks later)
and moves the daemons and the server it launched onto the others. `restore` puts everything back
when the deployment ends, so a reused worker or a later deployment starts as it found the node.
All deployments of a node share the same client cores, and the daemons are shared too: a file in
the node's Ray session folder (`REGISTRY_FILE`, under a lock) lists the deployments measuring
and the daemons' affinities from before the first of them moved them, so they are put back only
when the last one ends.

On a node too small to split, a deployment with no GPU is pinned instead (`pin_quietest`,
`cluster.pin_cpu_deployments`): its worker, engine threads included, runs on as many cores as it
asked Ray for, the quietest of the node when it starts that no other deployment of the node holds.
Ray counts CPUs but does not pin them; unpinned, a CPU engine's thread moves between a quiet core
and a busy one from trial to trial, and its timings with it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

ISOLATE_MODES = ("auto", "on", "off")
MIN_CPUS_AUTO = 4
DAEMON_NAMES = ("gcs_server", "dashboard", "log_monitor", "monitor.py")
REGISTRY_FILE = "llm_sweep_isolation.json"  # in the node's Ray session folder
PIN_SAMPLE_S = 0.5  # how long each core's load is sampled before choosing the quietest


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
    before: dict[int, set[int]] = field(default_factory=dict)  # own children: pid -> affinity
    own: set[int] = field(default_factory=set)  # this worker's affinity before
    registry: Path | None = None  # the node's list of measuring deployments and daemons
    daemons: dict[int, set[int]] = field(default_factory=dict)  # moved here, without a registry
    pinned: frozenset[int] | None = None  # this worker's cores, `pin_quietest`

    @property
    def client_cpus(self) -> str | None:
        """The client's cores as text for the trial's record (`0,1`), None when not isolated."""
        cores = self.split.client if self.split is not None else self.pinned
        if cores is None:
            return None
        return ",".join(str(c) for c in sorted(cores))


def isolate(
    mode: str, daemons: list[psutil.Process] | None = None, registry: Path | None = None
) -> Isolation:
    """Move Ray's daemons and this worker's children off the client cores; confine this worker.

    Args:
        mode: `cluster.isolate_client`.
        daemons: the node's shared processes to move (default: Ray's, `ray_daemons`).
        registry: the node's file of measuring deployments (default: in Ray's session folder;
            None outside Ray, where nothing is shared).
    """
    allowed = os.sched_getaffinity(0)
    chosen = split(allowed, mode)
    if daemons is None:
        daemons = ray_daemons()
        registry = registry or _registry_path()
    state = Isolation(chosen, own=set(allowed), registry=registry)
    if chosen is None:
        return state
    for proc in psutil.Process().children(recursive=True):
        try:
            state.before[proc.pid] = set(proc.cpu_affinity())
            _set_all_threads(proc, chosen.rest)
        except psutil.Error:  # gone meanwhile: nothing to move back
            state.before.pop(proc.pid, None)
    with _registered(registry) as shared:
        shared["users"] = [*_alive(shared.get("users", [])), os.getpid()]
        originals = shared.setdefault("before", {}) if len(shared["users"]) > 1 else {}
        shared["before"] = originals
        for proc in daemons:
            try:
                affinity = set(proc.cpu_affinity())
                _set_all_threads(proc, chosen.rest)
            except psutil.Error:  # gone meanwhile, or not ours to move: it stays where it was
                continue
            originals.setdefault(str(proc.pid), sorted(affinity))
            if registry is None:
                state.daemons[proc.pid] = affinity
    _set_all_threads(psutil.Process(), chosen.client)
    log.info("load generator on CPUs %s; Ray and the server on %s", sorted(chosen.client),
             sorted(chosen.rest))  # fmt: skip
    return state


def quietest(
    allowed: set[int] | frozenset[int], loads: dict[int, float], held: set[int], count: int
) -> frozenset[int]:
    """The `count` cores of `allowed` with the least load, cores another deployment holds last."""
    order = sorted(allowed, key=lambda cpu: (cpu in held, loads.get(cpu, 0.0), cpu))
    return frozenset(order[:count])


def core_loads(sample_s: float = PIN_SAMPLE_S) -> dict[int, float]:
    """Each core's busy percentage over the next `sample_s` seconds."""
    return dict(enumerate(psutil.cpu_percent(interval=sample_s, percpu=True)))


def pin_quietest(
    count: int, registry: Path | None = None, loads: dict[int, float] | None = None
) -> Isolation:
    """Confine this worker to its `count` quietest cores that no other deployment holds.

    Each core's load is sampled for PIN_SAMPLE_S (unless `loads` gives them). The cores chosen
    are written to the node's registry (default: in Ray's session folder; none outside Ray)
    until `restore`. Nothing is pinned when `count` covers every allowed core.
    """
    allowed = os.sched_getaffinity(0)
    state = Isolation(own=set(allowed), registry=registry or _registry_path())
    if count >= len(allowed):
        return state
    loads = core_loads() if loads is None else loads
    with _registered(state.registry) as shared:
        holders = {pid: cores for pid, cores in shared.get("pinned", {}).items()
                   if psutil.pid_exists(int(pid))}  # fmt: skip
        held = {cpu for cores in holders.values() for cpu in cores}
        state.pinned = quietest(allowed, loads, held, count)
        holders[str(os.getpid())] = sorted(state.pinned)
        shared["pinned"] = holders
    _set_all_threads(psutil.Process(), state.pinned)
    log.info("CPU deployment on CPUs %s (the quietest; loads %s)", sorted(state.pinned),
             {cpu: loads.get(cpu) for cpu in sorted(allowed)})  # fmt: skip
    return state


def restore(state: Isolation) -> None:
    """Give this worker and its children their affinity back; the daemons theirs if last.

    The daemons go back only when no other deployment of the node is still measuring.
    """
    if state.pinned is not None:
        _set_all_threads(psutil.Process(), state.own)
        with _registered(state.registry) as shared:
            shared.get("pinned", {}).pop(str(os.getpid()), None)
        return
    if state.split is None:
        return
    _set_all_threads(psutil.Process(), state.own)
    moved_back = dict(state.before)
    with _registered(state.registry) as shared:
        others = [pid for pid in _alive(shared.get("users", [])) if pid != os.getpid()]
        shared["users"] = others
        if state.registry is None:
            moved_back.update(state.daemons)
        elif not others:
            moved_back.update({int(k): set(v) for k, v in shared.get("before", {}).items()})
            shared["before"] = {}
    for pid, cpus in moved_back.items():
        try:
            _set_all_threads(psutil.Process(pid), cpus)
        except psutil.Error:
            continue


@contextmanager
def _registered(path: Path | None) -> Iterator[dict]:
    """The node's shared isolation record, read and written under an exclusive lock."""
    if path is None:
        yield {}
        return
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        try:
            data = json.loads(handle.read() or "{}")
        except ValueError:  # a torn write by a killed worker: start over
            data = {}
        yield data
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(data))
        handle.flush()


def _alive(pids: list[int]) -> list[int]:
    """The pids of `pids` still running (a killed worker never deregistered)."""
    return [pid for pid in pids if psutil.pid_exists(pid)]


def _registry_path() -> Path | None:
    """The registry file in this node's Ray session folder; None outside a Ray worker."""
    me = psutil.Process()
    raylet = next((p for p in me.parents() if "raylet" in p.name()), None)
    session = _session_dir(raylet) if raylet is not None else None
    return Path(session) / REGISTRY_FILE if session and Path(session).is_dir() else None


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
