"""Placement decisions made before anything is submitted: order, and what can never be placed.

Deployments are submitted longest first so the sweep's makespan stays close to the ideal (a long
deployment started last would run alone at the end). A deployment that no alive node can ever
host (no node with its accelerator type, or too few GPUs or CPUs on every such node) is reported
at once instead of waiting forever in Ray's queue.
"""

from __future__ import annotations

from typing import Any

from backends import backend_class
from sweep.core.pieces import PIECE_PREFIX
from sweep.driver.node_types import NodeType, resources_fit
from sweep.spec import Deployment

ACCELERATOR_PREFIX = "accelerator_type:"


def estimated_work(deployment: Deployment) -> float:
    """A relative size of a deployment: output tokens it must generate, per unit of parallelism."""
    total = 0.0
    for trial in deployment.trials:
        workload = trial.config.workload
        parallel = workload.streams or 1
        total += workload.num_requests * workload.output_len / parallel + 1
    return total


def trial_seconds(trial: Any) -> float | None:
    """A trial's length known before it runs: its `duration_s`, or its requests at its rate.

    None for a closed loop or a batch without a duration: the server sets its pace.
    """
    workload = trial.config.workload
    known = None
    if workload.duration_s is not None:
        known = workload.duration_s
    elif workload.request_rate:
        known = (workload.num_requests + workload.warmup_requests) / workload.request_rate
    if known is None:
        return None
    return max(known, workload.min_duration_s)


def longest_first(deployments: list[Deployment]) -> list[Deployment]:
    """Deployments ordered by estimated work, largest first (stable for ties)."""
    return sorted(deployments, key=estimated_work, reverse=True)


def pieces_of(deployment: Deployment) -> tuple[str, ...]:
    """The set-up pieces (`sweep.core.pieces`) a deployment needs on its node.

    Only GPU deployments on a cluster the driver joins: a local machine has what it has.
    """
    if deployment.num_gpus <= 0 or not deployment.config.cluster.address:
        return ()
    backend = deployment.config.backend
    return tuple(backend_class(backend.name).pieces(backend))


def resources_of(deployment: Deployment) -> dict[str, float]:
    """What one task of `deployment` asks Ray for, as node resource names."""
    needed = {"GPU": float(deployment.num_gpus), "CPU": float(deployment.num_cpus)}
    if deployment.accelerator_type:
        needed[f"{ACCELERATOR_PREFIX}{deployment.accelerator_type}"] = 0.001  # any amount
    for piece in pieces_of(deployment):
        needed[f"{PIECE_PREFIX}{piece}"] = 0.001
    return {k: v for k, v in needed.items() if v > 0}


def custom_resources(deployment: Deployment) -> dict[str, float]:
    """The resources a task asks for by name (Ray's `resources=`): the pieces it needs."""
    return {k: v for k, v in resources_of(deployment).items() if k.startswith(PIECE_PREFIX)}


def unplaceable_reason(
    deployment: Deployment,
    nodes: list[dict[str, Any]],
    node_types: list[NodeType] | None = None,
) -> str | None:
    """Why no node, alive or launchable, can ever run `deployment`; None when one can.

    Args:
        deployment: the deployment to place.
        nodes: `ray.nodes()` entries (only alive ones are considered).
        node_types: what the cluster's autoscaler may still launch (`sweep.driver.node_types`); None
            when there is no autoscaler, so the alive nodes are all there will be.
    """
    needed = resources_of(deployment)
    alive = [n for n in nodes if n.get("Alive")]
    if any(resources_fit(needed, n.get("Resources", {})) for n in alive):
        return None
    if any(t.fits(needed) for t in node_types or ()):
        return None
    reason = _why_not(deployment, alive, node_types or [])
    if node_types == []:
        reason += "; the cluster's autoscaler may launch no worker node (its config's max_workers)"
    return reason


def waits_for(deployment: Deployment, nodes: list[dict[str, Any]]) -> str | None:
    """The node a deployment waits for when no alive node fits it; None when one does.

    "node of type L4 with 1 GPU, 0.5 CPU": one the autoscaler must add.
    """
    needed = resources_of(deployment)
    if any(resources_fit(needed, n.get("Resources", {})) for n in nodes if n.get("Alive")):
        return None
    what = ", ".join(f"{v:g} {k}" for k, v in needed.items() if k in ("GPU", "CPU")) + "".join(
        f", {k[len(PIECE_PREFIX) :]}" for k in needed if k.startswith(PIECE_PREFIX)
    )
    where = f" of type {deployment.accelerator_type}" if deployment.accelerator_type else ""
    return f"node{where} with {what}"


def _why_not(
    deployment: Deployment, alive: list[dict[str, Any]], node_types: list[NodeType]
) -> str:
    accelerator = deployment.accelerator_type
    offered = [n.get("Resources", {}) for n in alive] + [t.resources or {} for t in node_types]
    if accelerator:
        key = f"{ACCELERATOR_PREFIX}{accelerator}"
        typed = [r for r in offered if key in r]
        if not typed:
            types = sorted(
                {
                    k[len(ACCELERATOR_PREFIX) :]
                    for r in offered
                    for k in r
                    if k.startswith(ACCELERATOR_PREFIX)
                }
            )
            which = "no node, alive or launchable by the autoscaler," if node_types else "no node"
            return (
                f"{which} has accelerator type {accelerator} "
                f"(cluster has: {', '.join(types) or 'none'})"
            )
        offered = typed
    for piece in pieces_of(deployment):
        key = f"{PIECE_PREFIX}{piece}"
        if not any(key in r for r in offered):
            kinds = [f"{t.name}: {_pieces_text(t.resources or {})}" for t in node_types]
            return (
                f"needs the set-up piece {piece} ({deployment.config.backend.name}), which no "
                f"node, alive or launchable, has ({'; '.join(kinds) or 'no node types'}); "
                f"declare {key!r} in the resources of a node type that installs it"
            )
    most = max((r.get("GPU", 0) for r in offered), default=0)
    where = f" of type {accelerator}" if accelerator else ""
    return (
        f"needs {deployment.num_gpus} GPUs and {deployment.num_cpus} CPUs on one node, but the "
        f"largest node{where} has {most:g} GPUs"
    )


def _pieces_text(resources: dict[str, float]) -> str:
    names = [k[len(PIECE_PREFIX) :] for k in resources if k.startswith(PIECE_PREFIX)]
    return ", ".join(names) or "no pieces"


def room_for(deployment: Deployment, nodes: list[dict[str, Any]]) -> int:
    """How many tasks of `deployment` the alive nodes hold at once, all else idle (at least 1)."""
    needed = resources_of(deployment)
    room = 0
    for node in nodes:
        offered = node.get("Resources", {}) if node.get("Alive") else {}
        if not resources_fit(needed, offered):
            continue
        whole = [float(offered[k]) // v for k, v in needed.items() if v >= 1]
        room += int(min(whole)) if whole else 1
    return max(1, room)
