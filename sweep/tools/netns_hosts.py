"""The namespace cluster's names and the machine state it leaves: hosts, processes, links, mounts.

Everything a cluster of `sweep.tools.netns_cluster` makes is named with `PREFIX`, and every
process a host starts carries `MARKER` in its environment, so that what a crashed run left can
be found and removed (`cleanup`, `leftovers`) without touching any other Ray on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "lsw"
STATE = Path(f"/tmp/{PREFIX}")  # short: Ray's socket paths under it must stay under 108 bytes
LOCK = Path(f"/tmp/{PREFIX}.lock")
BRIDGE = f"{PREFIX}-br0"
NET = "10.213.0"
GATEWAY = f"{NET}.1"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
MARKER = "LSW_NETNS_CLUSTER"  # set for every process a host starts; its descendants inherit it
HIDDEN = ("sweep", "backends", "analysis", "conf")
# A small file system every host sees (mounted before the hosts start, so their mount namespaces
# share it): a results folder that fills up.
SMALL_FS = STATE / "small"
SMALL_FS_SIZE = "8m"
RAY = str(Path(sys.executable).with_name("ray"))
# Ray's GCS declares a node dead after `threshold` health checks in a row fail, each `period`
# after the last and given `timeout` to answer: a host that stops answering is dead after about
# threshold x (period + timeout), 8 s here instead of about a minute with Ray's defaults.
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "4",
}
HEALTH_CHECK_DEAD_S = 8.0


class ClusterError(RuntimeError):
    """A step of bringing the cluster up or down failed; the message says which."""


@dataclass(frozen=True)
class Host:
    """One host of the cluster: a namespace, an address, its own folders."""

    name: str
    ip: str
    head: bool = False

    @property
    def netns(self) -> str:
        """The host's network namespace."""
        return f"{PREFIX}-{self.name}"

    @property
    def link(self) -> str:
        """This host's end of its cable, on the bridge (set down to cut the host off)."""
        return f"{PREFIX}-{self.name}-h"

    @property
    def folder(self) -> Path:
        """The host's own folder under `STATE`."""
        return STATE / self.name

    @property
    def home(self) -> Path:
        """The host's `HOME`."""
        return self.folder / "home"

    @property
    def temp_dir(self) -> Path:
        """The host's Ray temp dir."""
        return self.folder / "ray"

    @property
    def tmp(self) -> Path:
        """The host's `TMPDIR`, removed with the cluster.

        What its processes leave there (the Ray dashboard's forkserver folder, left when the
        head is killed) goes with the cluster, not into this machine's /tmp.
        """
        return self.folder / "tmp"


def run(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command quietly; a failure raises `ClusterError` with the command's own words."""
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of `folder` until `leave_bytes` are free; returns the filler file."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free - leave_bytes
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while free > 0:
            try:
                free -= os.write(fd, b"\0" * min(free, 1 << 20))
            except OSError:  # full already
                break
    finally:
        os.close(fd)
    return filler


def cmdline(pid: int) -> str:
    """The command line of `pid`, empty once it has gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def namespaces() -> list[str]:
    """The network namespaces of this prefix."""
    names = run("ip", "netns", "list", check=False).stdout.split()
    return [n for n in names if n.startswith(f"{PREFIX}-")]


def namespace_pids(netns: str) -> list[int]:
    """The processes running in the namespace `netns`."""
    done = run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def marked_pids() -> list[int]:
    """Processes a host started, wherever they are now (they inherit `MARKER`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"{MARKER}=".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def leftovers() -> list[str]:
    """What a cluster left on this machine: processes, namespaces, links, mounts."""
    found = [f"process {p}: {cmdline(p)[:80]}" for p in sorted(set(marked_pids()))]
    found += [f"namespace {n}" for n in namespaces()]
    found += [f"link {n}" for n in links()]
    found += [f"mount {m}" for m in mounts()]
    return found


def kill_processes(pids: list[int], grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL what still runs after `grace_s`."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        live = [p for p in pids if _signal(p, sig)]
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            time.sleep(0.1)
            live = [p for p in live if _running(p)]
        if not live:
            return


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def links() -> list[str]:
    """The network links of this prefix."""
    out = run("ip", "-o", "link", "show", check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n.startswith(f"{PREFIX}-")]


def mounts() -> list[str]:
    """Mount points under STATE in this mount namespace (deepest first)."""
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return sorted((p for p in points if p.startswith(f"{STATE}/")), key=len, reverse=True)


def cleanup() -> None:
    """Remove everything a cluster (this run's or a crashed one's) left, in dependency order."""
    pids = set(marked_pids())
    for netns in namespaces():
        pids.update(namespace_pids(netns))
    kill_processes(sorted(pids))
    for point in mounts():
        run("umount", "-l", point, check=False)
    for netns in namespaces():
        run("ip", "netns", "del", netns, check=False)
    for link in links():
        run("ip", "link", "del", link, check=False)
    if os.environ.get("LSW_KEEP_FILES") != "1":
        shutil.rmtree(STATE, ignore_errors=True)
    left = leftovers()
    if left:
        raise ClusterError("could not remove: " + "; ".join(left))
