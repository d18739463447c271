"""A node started by a shipped start command joins a head and runs an L4 deployment.

The worker start commands of scripts/cluster/kuberay-l4.yaml and l4-aws.yaml, built as KubeRay
and Ray's launcher build them (tests/cluster/start_commands.py), run for real on a worker host of
the namespace cluster, in place of its own Ray: the node must join the head with the resources
its group or type declares (GPUs and the L4 accelerator type declared, not real) and run a sweep
of the sim backend pinned to `accelerator_type:L4`. The other worker hosts are stopped meanwhile,
so the deployment can only land on that node; the package's fixture restarts them afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from sweep.core import records as R
from sweep.tools.netns_hosts import kill_processes, namespace_pids
from tests.cluster.start_commands import kuberay_command, ray_up_commands
from tests.multihost.conftest import submit, summaries

pytestmark = pytest.mark.slow
CLUSTER = Path(__file__).resolve().parents[2] / "scripts" / "cluster"


def shipped_worker(platform: str, head_ip: str):
    """The argv, environment and declared resources of the shipped L4 worker's start."""
    if platform == "kuberay":
        manifest = yaml.safe_load((CLUSTER / "kuberay-l4.yaml").read_text())
        group = manifest["spec"]["workerGroupSpecs"][0]["groupName"]
        command = kuberay_command(manifest, group, head_host=head_ip)
        return command.argv, command.env, command.declared
    config = yaml.safe_load((CLUSTER / "l4-aws.yaml").read_text())
    commands = ray_up_commands(config, "l4_x1", head_ip)
    # Ray's updater runs the lines one after another in one container: here, in one shell.
    script = " && ".join(c.argv[-1] for c in commands)
    return ["/bin/bash", "-c", script], {}, commands[0].declared


def newest_node(cluster, ip: str) -> dict:
    nodes = [n for n in cluster.nodes() if n["node_ip"] == ip and n["state"] == "ALIVE"]
    assert len(nodes) == 1, nodes
    return nodes[0]


@pytest.mark.parametrize("platform", ["kuberay", "ray-up"])
def test_a_node_started_by_the_shipped_command_joins_and_runs_an_l4_deployment(
    cluster, tmp_path, platform
):
    host = cluster.workers[0]
    for worker in cluster.workers:
        kill_processes(namespace_pids(worker.netns))
    for worker in cluster.workers:
        cluster.wait_for_state(worker, "DEAD")
    argv, env, declared = shipped_worker(platform, cluster.head.ip)
    started = cluster.launch(host, argv, env)
    try:
        cluster.wait_for_state(host, "ALIVE", timeout_s=120)
        node = newest_node(cluster, host.ip)
        offered = {k: float(v) for k, v in node["resources_total"].items()}
        assert {k: offered.get(k) for k in declared} == declared

        name = f"shipped-{platform}"
        job = submit(cluster, tmp_path, [
            "+experiment=sim_cluster", f"sweep.name={name}", "sweep.grid.backend.ttft_ms=[5]",
            "sweep.grid.workload.concurrency=[2]", "workload.num_requests=8",
            "workload.output_len=4",
        ])  # fmt: skip
        assert job.wait(300) == 0, job.text()[-3000:]
        rows = summaries(cluster.results_home / "llm-sweep-results" / name)
        assert [(r[R.TRIAL_STATUS], r["env.node_ip"]) for r in rows] == [(R.STATUS_OK, host.ip)]
    finally:
        kill_processes(namespace_pids(host.netns))
        started.wait(timeout=30)
        cluster.wait_for_state(host, "DEAD")
        time.sleep(0.5)
