"""The Ray driver: one task per deployment, results written as each trial comes back.

Each deployment becomes a Ray streaming-generator task submitted with the GPUs, accelerator type
and CPUs its config names; the driver waits on all of them with `ray.wait`, writes every trial's
files the moment they arrive (so a crash later loses nothing measured), and records the trials
of a task that died as failed with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import ray

from sweep import records as R
from sweep.plan import Deployment, TrialSpec
from sweep.results import ResultStore, TrialFiles
from sweep.trial import failed_trial, run_deployment

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    """What happened to the trials this run submitted."""

    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def connect(cluster: Any) -> bool:
    """Start a local Ray (default) or join `cluster.address`; True if we started it."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": cluster.include_dashboard,
        "log_to_driver": True,
        "logging_level": logging.WARNING,
    }
    if cluster.address:
        ray.init(address=cluster.address, **kwargs)
        return True
    ray.init(
        num_cpus=cluster.num_cpus,
        num_gpus=cluster.num_gpus,
        _node_ip_address=cluster.node_ip_address,
        **kwargs,
    )
    return True


def _deployment_task(deployment: Deployment, environment: dict[str, Any]):  # noqa: ANN202
    """Ray task body: a generator of `TrialFiles`, one per trial."""
    from sweep.environment import worker_environment

    yield from run_deployment(deployment, {**environment, **worker_environment()})


def submit(deployment: Deployment, environment: dict[str, Any], max_retries: int) -> Any:
    """Submit one deployment pinned to the resources its config names."""
    options: dict[str, Any] = {
        "num_cpus": deployment.num_cpus,
        "num_gpus": deployment.num_gpus,
        "num_returns": "streaming",
        "max_retries": max_retries,
        "retry_exceptions": False,
    }
    if deployment.accelerator_type:
        options["accelerator_type"] = deployment.accelerator_type
    return ray.remote(_deployment_task).options(**options).remote(deployment, environment)


def run_deployments(
    deployments: list[Deployment],
    store: ResultStore,
    environment: dict[str, Any],
    max_retries: int,
    progress: Any,
) -> SweepOutcome:
    """Run every deployment to completion, writing each trial as it arrives."""
    outcome = SweepOutcome()
    running = {submit(d, environment, max_retries): d for d in deployments}
    written: dict[str, set[str]] = {d.deployment_id: set() for d in deployments}

    def record(files: TrialFiles) -> None:
        store.write_trial(files)
        written[files.deployment_id].add(files.trial_id)
        status = files.summary.column(R.TRIAL_STATUS)[0].as_py()
        (outcome.ok if status == R.STATUS_OK else outcome.failed).append(files.trial_id)
        progress.trial_finished(files)

    while running:
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for generator in ready:
            deployment = running[generator]
            try:
                record(ray.get(next(generator)))
            except StopIteration:
                del running[generator]
                progress.deployment_finished()
            except (ray.exceptions.RayError, ray.exceptions.RayTaskError) as exc:
                del running[generator]
                reason = str(exc).strip().splitlines()[0]
                missing = [
                    t
                    for t in deployment.trials
                    if t.trial_id not in written[deployment.deployment_id]
                ]
                log.warning("deployment %s died: %s", deployment.label, reason)
                for spec in missing:
                    record(_worker_died(spec, reason, environment))
                progress.deployment_finished()
    return outcome


def _worker_died(spec: TrialSpec, reason: str, environment: dict[str, Any]) -> TrialFiles:
    return failed_trial(spec, R.ERROR_WORKER_DIED, reason, environment)
