"""Placement decisions made before anything is submitted: order, and what can never be placed.

Deployments are submitted longest first so the sweep's makespan stays close to the ideal (a long
deployment started last would run alone at the end). A deployment that no alive node can ever
host (no node with its accelerator type, or too few GPUs or CPUs on every such node) is reported
at once instead of waiting forever in Ray's queue.
"""

from __future__ import annotations

from typing import Any

from sweep.plan import Deployment

ACCELERATOR_PREFIX = "accelerator_type:"


def estimated_work(deployment: Deployment) -> float:
    """A relative size of a deployment: output tokens it must generate, per unit of parallelism."""
    total = 0.0
    for trial in deployment.trials:
        workload = trial.config.workload
        parallel = workload.streams or 1
        total += workload.num_requests * workload.output_len / parallel + 1
    return total


def longest_first(deployments: list[Deployment]) -> list[Deployment]:
    """Deployments ordered by estimated work, largest first (stable for ties)."""
    return sorted(deployments, key=estimated_work, reverse=True)


def unplaceable_reason(deployment: Deployment, nodes: list[dict[str, Any]]) -> str | None:
    """Why no alive node can run `deployment`, or None when one can.

    Args:
        deployment: the deployment to place.
        nodes: `ray.nodes()` entries (only alive ones are considered).
    """
    alive = [n for n in nodes if n.get("Alive")]
    accelerator = deployment.accelerator_type
    if accelerator:
        key = f"{ACCELERATOR_PREFIX}{accelerator}"
        alive = [n for n in alive if key in n.get("Resources", {})]
        if not alive:
            types = sorted(
                {
                    k[len(ACCELERATOR_PREFIX) :]
                    for n in nodes
                    for k in n.get("Resources", {})
                    if k.startswith(ACCELERATOR_PREFIX)
                }
            )
            return (
                f"no node has accelerator type {accelerator} "
                f"(cluster has: {', '.join(types) or 'none'})"
            )
    gpus = deployment.num_gpus
    cpus = deployment.num_cpus
    fitting = [
        n
        for n in alive
        if n["Resources"].get("GPU", 0) >= gpus and n["Resources"].get("CPU", 0) >= cpus
    ]
    if not fitting:
        most = max((n["Resources"].get("GPU", 0) for n in alive), default=0)
        where = f" of type {accelerator}" if accelerator else ""
        return (
            f"needs {gpus} GPUs and {cpus} CPUs on one node, but the largest node{where} "
            f"has {most:g} GPUs"
        )
    return None
