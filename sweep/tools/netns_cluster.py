"""A Ray cluster of network namespaces on one machine: a head and worker hosts, for real.

`scripts/netns_cluster.py up|down|status` (as root) runs `NetnsCluster`. Each host is a network
namespace with its own address on a private bridge (10.213.0.0/24: the head is 10.213.0.10, worker N
is 10.213.0.1N; this machine is 10.213.0.1 on the bridge and reaches the head's job endpoint at
http://10.213.0.10:8265), its own working directory, home and Ray temp dir under /tmp/lsw/HOST.
Namespaces have no route anywhere else. Every host runs in a mount namespace of its own where the
checkout's code folders (`sweep`, `backends`, `analysis`, `conf`) are hidden behind empty mounts:
code reaches the driver and the workers only through a job's runtime environment
(`scripts/submit_sweep.sh` ships it with `--working-dir`), as on a real cluster.

Worker hosts declare fake GPUs of one accelerator type (`--num-gpus`, resource
`accelerator_type:L4`, as the shipped cluster YAMLs do), so `hardware=l4` deployments of the
`sim` backend land on them. The head runs Ray's health checks fast (a node that stops answering
is dead after about `HEALTH_CHECK_DEAD_S`), so faults show within seconds.

Everything is named with the prefix `lsw` (namespaces `lsw-HOST`, links `lsw-*`, files and mounts
under /tmp/lsw: `sweep.tools.netns_hosts`), so `down`, and every `up`, removes what a crashed run
left (and any cluster of this prefix: there is one per machine; tests and `scripts.bench.chaos` hold
/tmp/lsw.lock while they use it, so two of them take turns). Ray is never stopped with `ray stop`
(it would stop every Ray of the machine): processes are found by their namespace (`ip netns pids`)
and by a variable every process started here inherits.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sweep.tools import REPO
from sweep.tools.netns_hosts import (
    BRIDGE,
    DASHBOARD_PORT,
    GATEWAY,
    GCS_PORT,
    HEALTH_CHECK,
    HIDDEN,
    LOCK,
    MARKER,
    NET,
    PREFIX,
    RAY,
    SMALL_FS,
    SMALL_FS_SIZE,
    STATE,
    ClusterError,
    Host,
    cleanup,
    cmdline,
    kill_processes,
    namespace_pids,
    namespaces,
    run,
)


class NetnsCluster:
    """One head and `workers` worker hosts; `with NetnsCluster() as c:` holds it for a block."""

    def __init__(
        self, workers: int = 2, gpus: int = 2, cpus: int = 2, accelerator: str = "L4"
    ) -> None:
        self.head = Host("head", f"{NET}.10", head=True)
        self.workers = [Host(f"w{i}", f"{NET}.{10 + i}") for i in range(1, workers + 1)]
        self.gpus, self.cpus, self.accelerator = gpus, cpus, accelerator
        self._lock: int | None = None

    @property
    def hosts(self) -> list[Host]:
        """The head, then the worker hosts."""
        return [self.head, *self.workers]

    @property
    def dashboard(self) -> str:
        """The job endpoint, reachable from this machine (`RAY_ADDRESS` for `ray job`)."""
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    @property
    def results_home(self) -> Path:
        """Where `~` is for the driver: `~/llm-sweep-results` is under it, on the head."""
        return self.head.home

    def __enter__(self) -> NetnsCluster:
        self.lock()
        try:
            self.up()
        except BaseException:
            self.down()
            self.unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.down()
        finally:
            self.unlock()

    def lock(self, wait_s: float = 900) -> None:
        """Hold the machine's one namespace cluster (another test run waits for it)."""
        self._lock = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    busy = f"another run uses the namespace cluster (it holds {LOCK})"
                    raise ClusterError(busy) from None
                time.sleep(1)

    def unlock(self) -> None:
        """Let another run have the cluster."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def up(self, timeout_s: float = 120) -> None:
        """Remove leftovers, build the network, start the head and the workers, wait for them."""
        if os.geteuid() != 0:
            raise ClusterError("a namespace cluster needs root (ip netns, veth, mount)")
        cleanup()
        STATE.mkdir(parents=True)
        SMALL_FS.mkdir()
        run("mount", "-t", "tmpfs", "-o", f"size={SMALL_FS_SIZE}", f"{PREFIX}-small", str(SMALL_FS))
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for host in self.hosts:
            self._plug(host)
        self.start(self.head)
        for host in self.workers:
            self.start(host)
        self.wait_for_nodes(len(self.workers) + 1, timeout_s)

    def down(self) -> None:
        """Stop every process and remove namespaces, links, mounts and files."""
        cleanup()

    def _plug(self, host: Host) -> None:
        """A namespace with one cable to the bridge; no route but the private network."""
        inner = f"{PREFIX}-{host.name}-n"
        run("ip", "netns", "add", host.netns)
        run("ip", "link", "add", host.link, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", host.netns)
        ns = ("ip", "-n", host.netns)
        run(*ns, "link", "set", inner, "name", "eth0")
        run(*ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        run(*ns, "link", "set", "eth0", "up")
        run(*ns, "link", "set", "lo", "up")
        run("ip", "link", "set", host.link, "master", BRIDGE, "up")
        for folder in (host.home, host.temp_dir, host.tmp, host.folder / "work"):
            folder.mkdir(parents=True, exist_ok=True)

    def environment(self, host: Host) -> dict[str, str]:
        """The environment Ray starts with on `host`: its own, as on a machine of its own."""
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(host.home),
            "TMPDIR": str(host.tmp),
            "WORKDIR": str(host.folder / "work"),
            "LANG": "C.UTF-8",
            MARKER: host.name,
            "RAY_AUTH_MODE": "disabled",
            "RAY_worker_niceness": "0",
            "RAY_prestart_worker_first_driver": "0",  # as scripts/cluster/*.yaml start nodes
            "RAY_enable_worker_prestart": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            **HEALTH_CHECK,
        }

    def start(self, host: Host) -> None:
        """Start Ray on `host` (again, after it was killed: what is left of it is stopped)."""
        kill_processes(namespace_pids(host.netns))
        common = [f"--node-ip-address={host.ip}", f"--temp-dir={host.temp_dir}",
                  "--object-store-memory=100000000", "--disable-usage-stats"]  # fmt: skip
        if host.head:
            dashboard = [f"--dashboard-host={host.ip}", f"--dashboard-port={DASHBOARD_PORT}"]
            args = ["--head", f"--port={GCS_PORT}", "--num-cpus=1", "--num-gpus=0", *dashboard]
        else:
            accelerator = json.dumps({f"accelerator_type:{self.accelerator}": 1})
            args = [f"--address={self.head.ip}:{GCS_PORT}", f"--num-cpus={self.cpus}",
                    f"--num-gpus={self.gpus}", f"--resources={accelerator}"]  # fmt: skip
        hide = " && ".join(
            f"mount -t tmpfs -o ro,size=4k,mode=555 {PREFIX}-hidden {REPO / d}" for d in HIDDEN
        )
        script = f'mount --make-rprivate / && {hide} && cd "$WORKDIR" && exec "$@"'
        env = self.environment(host)
        log = host.folder / "ray-start.log"
        with log.open("a") as out:
            done = subprocess.run(
                ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation",
                 "private", "--", "sh", "-ec", script, "sh", RAY, "start", *common, *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, timeout=120,
            )  # fmt: skip
        if done.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ClusterError(f"ray start on {host.name} failed: {' | '.join(tail)}")

    def launch(self, host: Host, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Run a platform's start command (`argv`, with the platform's `env`) on `host`.

        As `start` runs Ray (the host's namespace, code folders hidden, the host's environment),
        but the command is the caller's, left running (KubeRay's `ray start --block` lives as
        long as its node). Two things differ from a machine of its own: `ray stop`, which would
        stop every Ray of this machine, does nothing (a `ray` first on PATH passes the rest to
        Ray), and Ray's temp root is the host's (RAY_TMPDIR). Stop it with `kill_processes`.
        """
        kill_processes(namespace_pids(host.netns))
        shims = host.folder / "bin"
        shims.mkdir(parents=True, exist_ok=True)
        shim = shims / "ray"
        shim.write_text(f'#!/bin/sh\n[ "$1" = stop ] && exit 0\nexec "{RAY}" "$@"\n')
        shim.chmod(0o755)
        base = self.environment(host)
        environment = {**base, **env, "PATH": f"{shims}:{base['PATH']}",
                       "RAY_TMPDIR": str(host.temp_dir)}  # fmt: skip
        hide = " && ".join(
            f"mount -t tmpfs -o ro,size=4k,mode=555 {PREFIX}-hidden {REPO / d}" for d in HIDDEN
        )
        script = f'mount --make-rprivate / && {hide} && cd "$WORKDIR" && exec "$@"'
        with (host.folder / "ray-start.log").open("a") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation",
                 "private", "--", "sh", "-ec", script, "sh", *argv],
                env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def nodes(self) -> list[dict]:
        """The cluster's nodes as the head's GCS sees them (`ray list nodes`: state, address)."""
        url = f"{self.dashboard}/api/v0/nodes?limit=100&detail=true"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.load(answer)["data"]["result"]["result"]

    def alive(self) -> set[str]:
        """Addresses of the nodes alive now."""
        return {n["node_ip"] for n in self.nodes() if n["state"] == "ALIVE"}

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        """Until `count` nodes are alive (the head answers first, then each worker joins)."""
        deadline = time.monotonic() + timeout_s
        last: Exception | str = "no answer"
        while time.monotonic() < deadline:
            try:
                alive = self.alive()
                if len(alive) >= count:
                    return
                last = f"alive: {sorted(alive)}"
            except OSError as exc:
                last = exc
            time.sleep(0.5)
        raise ClusterError(f"{count} nodes not alive after {timeout_s:.0f} s ({last})")

    def wait_for_state(self, host: Host, state: str, timeout_s: float = 60) -> None:
        """Until the GCS calls the newest node of `host`'s address `state` (ALIVE or DEAD)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [n["state"] for n in self.nodes() if n["node_ip"] == host.ip]
            if states and (state in states if state == "ALIVE" else "ALIVE" not in states):
                return
            time.sleep(0.3)
        raise ClusterError(f"{host.name} not {state} after {timeout_s:.0f} s")

    def cut(self, host: Host) -> None:
        """Unplug `host`: its cable's end on the bridge goes down, so nothing reaches it."""
        run("ip", "link", "set", host.link, "down")

    def heal(self, host: Host) -> None:
        """Plug `host` back in."""
        run("ip", "link", "set", host.link, "up")

    def pids(self, host: Host) -> list[int]:
        """The processes running in `host`'s namespace."""
        return namespace_pids(host.netns)

    def find(self, host: Host, text: str) -> list[int]:
        """Processes of `host` whose command line holds `text`."""
        return [p for p in self.pids(host) if text in cmdline(p)]

    def raylet(self, host: Host) -> int:
        """The pid of `host`'s raylet."""
        found = [p for p in self.pids(host) if cmdline(p).split(" ", 1)[0].endswith("/raylet")]
        if not found:
            raise ClusterError(f"no raylet runs on {host.name}")
        return found[0]

    def status(self) -> str:
        """Each host's address, node state and process count, as lines of text."""
        lines = [f"job endpoint {self.dashboard} (RAY_ADDRESS for scripts/submit_sweep.sh)"]
        try:
            # a host restarted has a dead node and an alive one at its address: show the latter
            nodes = sorted(self.nodes(), key=lambda n: n["state"] == "ALIVE")
            states = {n["node_ip"]: n["state"] for n in nodes}
        except OSError as exc:
            states = {}
            lines.append(f"the head does not answer: {exc}")
        for host in self.hosts:
            if host.netns not in namespaces():
                lines.append(f"{host.name:5} {host.ip:12} no namespace")
                continue
            procs = len(self.pids(host))
            state = states.get(host.ip, "not a node")
            lines.append(f"{host.name:5} {host.ip:12} {state:10} {procs} processes")
        return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The options of `scripts/netns_cluster.py`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=2, help="fake GPUs per worker host")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs per worker host")
    parser.add_argument("--accelerator", default="L4")
    return parser


def run_action(args: argparse.Namespace) -> int:
    """`up`, `down` or `status` of the machine's one cluster; the exit status."""
    cluster = NetnsCluster(args.workers, args.gpus, args.cpus, args.accelerator)
    try:
        if args.action != "status":
            cluster.lock(wait_s=0)  # not while a test or the benchmark uses it
        if args.action == "up":
            try:
                cluster.up()
            except (ClusterError, KeyboardInterrupt):
                cluster.down()  # nothing half-built stays
                raise
            print(cluster.status())
            print(f"submit: RAY_ADDRESS={cluster.dashboard} scripts/submit_sweep.sh "
                  "+experiment=sim_cluster; results under "
                  f"{cluster.results_home}/llm-sweep-results")  # fmt: skip
        elif args.action == "down":
            cluster.down()
            print("removed")
        else:
            print(cluster.status())
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the cluster was removed", file=sys.stderr)
        return 130
    finally:
        cluster.unlock()
    return 0
