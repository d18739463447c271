"""One namespace cluster (`sweep.tools.netns_cluster`) for the package, and helpers to watch jobs.

The cluster is built once for all tests here: a head and two worker hosts of two fake L4 GPUs
each, each host in its own network namespace. Before each test, a worker host that a fault left
dead (or cut off) is brought back, so every test starts on a whole cluster. Building it needs
root; when it cannot be built the tests fail with the reason, they are not skipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sweep.core import records as R
from sweep.tools.netns_cluster import NetnsCluster
from sweep.tools.netns_jobs import SweepJob

REPO = Path(__file__).resolve().parents[2]

# The checkout the jobs are submitted from (this one; another for trying a change in isolation).
SOURCE = Path(os.environ.get("MULTIHOST_SOURCE", REPO))


@pytest.fixture(scope="package")
def netns():
    with NetnsCluster(workers=2, gpus=2, cpus=2) as cluster:
        yield cluster


@pytest.fixture
def cluster(netns):
    """The package's cluster with every worker host up (one a fault killed is restarted)."""
    try:
        alive = netns.alive()
    except OSError:  # taken down (tests/multihost/test_teardown.py): build it again
        netns.up()
        alive = netns.alive()
    for host in netns.workers:
        netns.heal(host)
        if host.ip not in alive:
            netns.start(host)
    netns.wait_for_nodes(len(netns.hosts))
    return netns


def submit(cluster: NetnsCluster, tmp_path: Path, overrides: list[str], **kw) -> SweepJob:
    """`scripts/submit_sweep.sh OVERRIDES` from this machine; its output in tmp_path."""
    log = tmp_path / f"job-{len(list(tmp_path.glob('job-*.log')))}.log"
    return SweepJob(cluster, overrides, log, source=SOURCE, **kw)


def summaries(root: Path) -> list[dict]:
    """Every trial's summary row under a sweep's results folder."""
    return [pq.read_table(p).to_pylist()[0] for p in sorted(root.glob(f"*/*/{R.SUMMARY_FILE}"))]


def wait_until(condition, timeout_s: float, what: str, job: SweepJob | None = None):
    """Poll `condition` until it returns something true; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if job is not None and job.proc.poll() is not None:
            pytest.fail(f"the job ended before {what}: {job.text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"not {what} after {timeout_s:.0f} s" + (f": {job.text()[-3000:]}" if job else ""))


def busy_host(cluster: NetnsCluster):
    """A worker host where a sim server runs now (a trial is under way there)."""
    return next((h for h in cluster.workers if cluster.find(h, "backends.sim_server")), None)


def strays(cluster: NetnsCluster) -> list[str]:
    """Processes a sweep started that still run: sim servers and deployment-task workers."""
    found = []
    for host in cluster.hosts:
        for text in ("backends.sim_server", "ray::_deployment_task"):
            found += [f"{host.name}:{pid} {text}" for pid in cluster.find(host, text)]
    return found


def settle_strays(cluster: NetnsCluster, timeout_s: float = 20) -> list[str]:
    """The strays left once processes had `timeout_s` to go away."""
    deadline = time.monotonic() + timeout_s
    while strays(cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    return strays(cluster)
