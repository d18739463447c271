"""The overnight path from `min_workers: 0`: deployments wait for the autoscaler, nodes are added.

A cluster is started as `ray up` leaves it: only a CPU head, with an autoscaler whose GPU node
types are those of scripts/cluster/l4-aws.yaml (`min_workers: 0`). The nodes it adds are Ray's
fake multi-node provider's: real raylets on this machine declaring the node type's resources (the
GPUs and the L4 accelerator type are simulated; the sim backend needs none). The head and every
process it starts are ours alone: started in a process group and a temporary folder of their
own and killed by them, never with `ray stop`, which would stop every Ray of the machine.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from sweep.core import records as R
from sweep.driver.driver import NO_PRESTART
from tests.helpers import own_processes

pytestmark = pytest.mark.slow  # its sweeps start clusters and servers: scheduled first

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "scripts" / "cluster" / "l4-aws.yaml"
# A type every launch of which the cloud refuses (tests/e2e/fake_cloud.py), as AWS's provider
# answers a quota or a stock-out: a node the autoscaler keeps asking for and never gets.
NEVER_TYPE = "gpu_t4_never"
REFUSAL = "InsufficientInstanceCapacity: no T4 capacity in this zone"
NODE_WAIT_S = 20
# A type whose nodes take SLOW_S to be set up (tests/e2e/fake_cloud.py): about twice the sweep's
# node_wait_s, as a first boot pulling a 15 GB node image outlasts 20 minutes.
SLOW_TYPE = "gpu_h100_slow"
SLOW_S = 2 * NODE_WAIT_S
CACHE = Path.home() / ".cache" / "llm-sweep"
# The type Ray's fake provider gives the head it did not launch. Under any other name the
# autoscaler ignores the head's CPU and keeps launching and removing a node of the head's type
# for the driver's CPU demand: 15 raylets started and stopped in one test, most of its CPU.
HEAD_TYPE = "ray.head.default"
# Fields the autoscaler's monitor reads that `ray up` would fill in from the provider defaults.
EMPTY_FIELDS = {
    "auth": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
    "rsync_filter": [], "file_mounts_sync_continuously": False, "initialization_commands": [],
    "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
    "head_start_ray_commands": [], "worker_start_ray_commands": [],
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours(folder: str) -> list[psutil.Process]:
    """Every process whose command line names the cluster's temporary folder."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(folder in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def group(pgid: int) -> list[psutil.Process]:
    """Every process of a process group (the cluster's: Ray's agents and client server name no
    folder, and a renamed Ray process's environment is overwritten by its title)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def sweep_left(folder: str, grace_s: float = 5.0) -> list[str]:
    """What a sweep on the cluster of `folder` left running after `grace_s` (one ending as it
    is listed is not left over): its driver, a worker of its deployments' tasks (a child of one
    of the cluster's raylets: a renamed Ray process's environment holds no run tag), a server
    one launched. Matched by command-line words, never by the checkout's path (a clone in a
    folder named llm-sweep has "sweep" in its Ray daemons' command lines)."""
    listed = own_processes("-m sweep") + own_processes("backends.sim_server")
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "ray::_deployment_task" in " ".join(proc.info["cmdline"] or []):
                raylet = proc.parent()
                if raylet is not None and any(folder in part for part in raylet.cmdline()):
                    listed.append(proc)
        except psutil.Error:
            continue  # gone meanwhile
    _, alive = psutil.wait_procs(listed, timeout=grace_s)
    return [" ".join(p.info.get("cmdline") or []) or str(p.pid) for p in alive]


def autoscaling_config(folder: Path, port: int) -> Path:
    shipped = yaml.safe_load(SHIPPED.read_text())
    gpu_types = {
        name: {
            "resources": spec["resources"],
            "min_workers": spec["min_workers"],
            "max_workers": 1,  # the shipped types, one node each: six raylets are too many here
            "node_config": {},
        }
        for name, spec in shipped["available_node_types"].items()
        if spec["resources"].get("GPU")
    }
    config = {
        "cluster_name": "fake",
        "max_workers": 3,
        "upscaling_speed": 10,
        "idle_timeout_minutes": 5,
        "provider": {
            # Ray's fake multi-node provider, but SLOW_TYPE takes SLOW_S to set up and
            # NEVER_TYPE is refused.
            "type": "external",
            "module": "tests.e2e.fake_cloud.FakeCloudProvider",
            "slow_node_types": {SLOW_TYPE: SLOW_S},
            "refused_node_types": {NEVER_TYPE: REFUSAL},
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{port}",
        },
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": 1}, "max_workers": 0, "node_config": {}},
            **gpu_types,
            NEVER_TYPE: {
                "resources": {"CPU": 1, "GPU": 1, "accelerator_type:T4": 1},
                "min_workers": 0,
                "max_workers": 1,
                "node_config": {},
            },
            SLOW_TYPE: {
                "resources": {"CPU": 1, "GPU": 1, "accelerator_type:H100": 1},
                "min_workers": 0,
                "max_workers": 1,
                "node_config": {},
            },
        },
        "head_node_type": HEAD_TYPE,
        **EMPTY_FIELDS,
    }
    path = folder / "home" / "autoscaling.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    return path


def start_head(folder: str) -> tuple[subprocess.Popen, dict, str]:
    """`ray start --head` as `ray up` leaves the head, in a session of its own (every process
    Ray starts stays in its process group, which the tear-down kills whole); the process, the
    environment sweeps join it with, and its output."""
    port = free_port()
    env = {
        **os.environ,
        # The monitor gets `--autoscaling-config=~/...` as written, as `ray up` starts it (no
        # docker to rewrite it): the driver must expand `~` as the monitor does. The home is
        # the cluster's own; the project's caches stay where they are.
        "HOME": str(Path(folder) / "home"),
        "SWEEP_CACHE_DIR": os.environ.get("SWEEP_CACHE_DIR", str(CACHE)),
        # The autoscaler's monitor imports its provider from this checkout (FakeCloudProvider).
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_AUTH_MODE": "disabled",
        "RAY_ADDRESS": f"127.0.0.1:{port}",
        **{f"RAY_{name}": "0" for name in NO_PRESTART},  # as scripts/cluster/*.yaml start nodes
    }
    config = autoscaling_config(Path(folder), port)
    # Every port Ray would otherwise take at a fixed default (8265, 10001, 52365) is a free one:
    # another cluster of the test run may hold the defaults.
    ports = [f"--{name}={free_port()}" for name in ("dashboard-port", "ray-client-server-port",
             "dashboard-agent-listen-port", "metrics-export-port")]  # fmt: skip
    start = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head",
         f"--autoscaling-config=~/{config.name}", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=1", "--num-gpus=0", f"--temp-dir={folder}/ray", "--include-dashboard=false",
         *ports],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = start.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(start.pid, signal.SIGKILL)  # what it started so far goes with it
        raise
    return start, env, output


def stop_all(start: subprocess.Popen, folder: str) -> None:
    """Kill every process of the cluster and remove its folder."""
    for proc in group(start.pid) + ours(folder):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(group(start.pid) + ours(folder), timeout=20)
    shutil.rmtree(folder, ignore_errors=True)  # Ray's session logs, the home


@pytest.fixture(scope="module")
def cluster():
    # A second try, with other ports, when the first start fails; the first failure is reported
    # as a warning with its output's tail. Seen in full runs at the suite's busiest minute: Ray's
    # "node timed out during startup" (its wait for the raylet is a fixed 30 s). A port another
    # cluster of the run takes between its choice and Ray's bind would fail the same way.
    for attempt in (1, 2):
        folder = tempfile.mkdtemp(prefix="llmsw-as-", dir="/tmp")  # Ray's sockets: short paths
        start, env, output = start_head(folder)
        if start.returncode == 0:
            break
        stop_all(start, folder)
        tail = " | ".join(output.strip().splitlines()[-8:])
        if attempt == 2:
            pytest.fail(f"ray start --head exited {start.returncode}: {tail}", pytrace=False)
        message = f"ray start --head exited {start.returncode}, started again: {tail}"
        warnings.warn(message, stacklevel=1)
    try:
        yield env, folder
    finally:
        stop_all(start, folder)


def sim_cluster_sweep(env, out, *overrides, timeout=600):
    """`python -m sweep +experiment=sim_cluster` joined to the fake-autoscaler cluster.

    No report at the end (`sweep.report=false`): these tests check where and whether trials ran.
    """
    return subprocess.run(
        [sys.executable, "-m", "sweep", "+experiment=sim_cluster", "cluster=auto",
         f"output.dir={out}", "sweep.report=false", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_a_sweep_from_zero_gpu_nodes_waits_for_the_autoscaler(cluster, tmp_path):
    env, folder = cluster
    out = tmp_path / "results"
    started = time.monotonic()
    done = sim_cluster_sweep(env, out, "sweep.grid.workload.concurrency=[2]",
                             "workload.num_requests=8")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [pq.read_table(p).to_pylist()[0] for p in out.glob(f"sim_cluster/*/*/{R.SUMMARY_FILE}")]
    assert len(rows) == 6  # every trial recorded
    assert len({r[R.TRIAL_ID] for r in rows}) == 6  # once each
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}, [r[R.ERROR_MESSAGE] for r in rows]
    assert "waits for a node of type L4" in done.stderr
    # They ran on the nodes the autoscaler added, not on the CPU-only head.
    nodes = {r["env.ray_node_id"] for r in rows}
    assert all(n.startswith("fffffffffffffffffffffffffffffff") for n in nodes), nodes
    assert time.monotonic() - started < 600


def test_a_deployment_no_launchable_node_fits_is_unplaceable_at_once(cluster, tmp_path):
    env, _ = cluster
    out = tmp_path / "results"
    done = sim_cluster_sweep(
        env,
        out,
        "sweep.grid.workload.concurrency=[2]",
        "sweep.grid.backend.ttft_ms=[10]",
        "hardware=a100_80g",
        "workload.num_requests=4",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [pq.read_table(p).to_pylist()[0] for p in out.glob(f"sim_cluster/*/*/{R.SUMMARY_FILE}")]
    assert [r[R.ERROR_KIND] for r in rows] == ["unplaceable"]
    assert (
        "no node, alive or launchable by the autoscaler, has accelerator type"
        in rows[0][R.ERROR_MESSAGE]
    )


def test_a_deployment_whose_node_never_comes_is_given_up_after_node_wait_s(cluster, tmp_path):
    env, folder = cluster
    out = tmp_path / "results"
    started = time.monotonic()
    done = sim_cluster_sweep(
        env,
        out,
        "sweep.grid.workload.concurrency=[2,4]",
        "sweep.grid.backend.ttft_ms=[10]",
        "+sweep.grid.hardware=[l4,t4]",
        "workload.num_requests=8",
        f"cluster.node_wait_s={NODE_WAIT_S}",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [pq.read_table(p).to_pylist()[0] for p in out.glob(f"sim_cluster/*/*/{R.SUMMARY_FILE}")]
    by_hardware = {}
    for row in rows:
        by_hardware.setdefault(row["hardware.name"], []).append(row)
    assert {r[R.TRIAL_STATUS] for r in by_hardware["l4"]} == {R.STATUS_OK}
    never = by_hardware["t4"]
    assert len(never) == 2 and {r[R.ERROR_KIND] for r in never} == {R.ERROR_NO_NODE}
    message = never[0][R.ERROR_MESSAGE]
    assert message.startswith("no node of type T4 with 1 GPU"), message
    assert f"came within {NODE_WAIT_S} s (cluster.node_wait_s)" in message, message
    # The autoscaler's word on the type that would fit: the cloud's refusal.
    assert f"{NEVER_TYPE}: InsufficientInstanceCapacity" in message, message
    assert "(no_node: 2)" in done.stdout, done.stdout[-2000:]
    # The sweep ended on its own: the wait, then at most a minute (the L4 trials run meanwhile).
    assert elapsed < NODE_WAIT_S + 60 + 60, elapsed  # + a minute for Python, Ray and the plan
    # Nothing of the sweep is left: no driver, no worker of its job, no server.
    assert sweep_left(folder) == []


def test_a_node_slower_to_set_up_than_node_wait_s_is_waited_for(cluster, tmp_path):
    """Its node takes SLOW_S to be set up, twice node_wait_s: the deployment waits for it under
    node_setup_wait_s, says so, and its trial runs there (only that type has an H100)."""
    env, _ = cluster
    out = tmp_path / "results"
    started = time.monotonic()
    done = sim_cluster_sweep(
        env,
        out,
        "sweep.grid.workload.concurrency=[2]",
        "sweep.grid.backend.ttft_ms=[10]",
        "hardware=h100",
        "workload.num_requests=4",
        f"cluster.node_wait_s={NODE_WAIT_S}",
        f"cluster.node_setup_wait_s={4 * SLOW_S}",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [pq.read_table(p).to_pylist()[0] for p in out.glob(f"sim_cluster/*/*/{R.SUMMARY_FILE}")]
    assert [r[R.TRIAL_STATUS] for r in rows] == [R.STATUS_OK], [r[R.ERROR_MESSAGE] for r in rows]
    assert elapsed > SLOW_S  # it waited through the set-up, past node_wait_s
    # The progress said what it waited for, as soon as the autoscaler had one on its way.
    line = re.search(r"waiting for a node of type H100 with 1 GPU.*: (launching|being set up), "
                     r"\d+ s \(of [^:]+: cluster\.node_setup_wait_s\)", done.stderr)  # fmt: skip
    assert line, done.stderr[-3000:]
