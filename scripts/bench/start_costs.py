"""What one deployment's start costs in CPU on an idle node, step by step (`--start-costs`).

The makespan benchmark's six deployments start together on this machine's two cores, so their
first trials wait for the CPU these steps take, six times over. Each step runs `repeats` times:
- `ray worker boot`: the CPU a fresh Ray worker for a one-GPU task (Ray gives every GPU task a
  worker of its own, as it does the deployment task) has used when the task's body begins;
- `trial runner import`: what importing the deployment task's module (`sweep.driver.driver`) adds in
  such a worker;
- `sim server start`: the CPU the sim server's process has used when it first answers `/health`,
  and the wall time to that answer.

A Ray cluster of its own on 127.0.0.1: a head with no CPU and one node with one fake GPU.
"""

from __future__ import annotations

import statistics
import time

import pandas as pd
import psutil
import ray
from ray.cluster_utils import Cluster

from analysis.report.sections import markdown_table
from backends.sim import SimBackend, SimBackendConfig
from scripts.bench.start_probe import boot, import_runner


def sim_start() -> tuple[float, float]:
    """CPU of the sim server's process when it first answers, and the wall time to that."""
    backend = SimBackend(SimBackendConfig(), "unused")
    started = time.monotonic()
    backend.start()
    wall = time.monotonic() - started
    try:
        times = psutil.Process(backend.pid).cpu_times()
        return times.user + times.system, wall
    finally:
        backend.stop()


def row(step: str, values: list[float]) -> dict:
    """A table row: the step, its runs and their median and range (s)."""
    return {
        "step": step,
        "runs": len(values),
        "median_s": round(statistics.median(values), 3),
        "min_s": round(min(values), 3),
        "max_s": round(max(values), 3),
    }


def run(repeats: int = 5) -> str:
    """The table of the steps' costs (markdown)."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    boots, imports = [], []
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        ray.get(boot.remote())  # the node's first worker also warms its caches: not counted
        for _ in range(repeats):
            boots.append(ray.get(boot.remote()))
            imports.append(ray.get(import_runner.remote()))
    finally:
        ray.shutdown()
        cluster.shutdown()
    sims = [sim_start() for _ in range(repeats)]
    rows = [
        row("ray worker boot (CPU)", boots),
        row("trial runner import (CPU)", imports),
        row("sim server start (CPU)", [cpu for cpu, _ in sims]),
        row("sim server start (wall)", [wall for _, wall in sims]),
    ]
    return markdown_table(pd.DataFrame(rows))
