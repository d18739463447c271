"""The tasks `scripts.bench.start_costs` runs in fresh Ray workers.

A module of its own that imports nothing heavy: a worker imports a task's module before the task
begins, so what this module imported would count as the worker's boot.
"""

import sys

import psutil
import ray


def own_cpu_s() -> float:
    """This process's CPU time so far (user + system)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


@ray.remote(num_gpus=1)
def boot() -> float:
    """The worker's CPU when a one-GPU task begins: its boot."""
    return own_cpu_s()


@ray.remote(num_gpus=1)
def import_runner() -> float:
    """The CPU that importing the deployment task's module adds in a fresh worker."""
    if "sweep.driver.driver" in sys.modules:  # then there would be nothing left to measure
        raise RuntimeError("the worker had imported sweep.driver.driver already")
    before = own_cpu_s()
    import sweep.driver.driver  # noqa: F401

    return own_cpu_s() - before
