"""The Ray driver: one task per deployment, results written as each trial comes back.

Each deployment becomes a Ray streaming-generator task submitted with the GPUs, accelerator type
and CPUs its config names. The driver waits on all of them with `ray.wait`, writes every trial's
files the moment they arrive (so a crash later loses nothing measured) and handles failures
itself, so that every trial ends up recorded exactly once:
- a task whose worker or node dies is resubmitted with its missing trials (`cluster.max_retries`
  times, then they are recorded as failed); a node that stops answering counts as dead once Ray's
  health checks declare it so, and whatever its tasks send later is ignored;
- a trial that produces nothing for `workload.trial_timeout_s` is cancelled and recorded as
  failed, and the deployment's remaining trials are resubmitted;
- a deployment that no node, alive or launchable by the cluster's autoscaler, can host is
  recorded as failed at once; one that waits for the autoscaler to add a node says so and how
  the wait goes (`sweep.driver.node_wait`: `cluster.node_setup_wait_s` while a fitting node is
  launching or being set up, `cluster.node_wait_s` while none is), and when a limit runs out its
  trials are recorded failed (`no_node`, naming the limit and the autoscaler's last word on the node
  types that would fit) while the rest of the sweep goes on;
- a trial whose files the results folder refuses (a full disk) stops the sweep with one message,
  recorded as failed where there is room for that;
- when nothing waits for resources and a GPU idles, a deployment with trials not begun gets a
  helper task that shares them from the back (`cluster.share_idle_gpus`, `sweep.driver.ledger`): the
  tail of a sweep, or trials retried after a node died, spread over the GPUs that are free.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import pyarrow as pa
import ray

from sweep.core import records as R
from sweep.core.errors import ResultsNotSaved, SweepError
from sweep.core.results import BackendLog, QualityFiles, ResultStore, TrialFiles
from sweep.driver.autoscaler_status import pending_by_type
from sweep.driver.job import forwarded_env
from sweep.driver.ledger import TrialLedger
from sweep.driver.node_types import (
    NodeType,
    autoscaler_last_word,
    launchable_node_types,
    resources_fit,
)
from sweep.driver.node_wait import NodeWait
from sweep.driver.placement import (
    custom_resources,
    longest_first,
    resources_of,
    unplaceable_reason,
    waits_for,
)
from sweep.plan.search_plan import probe_budget
from sweep.spec import Deployment
from sweep.worker.search_run import SearchDone, known_probe
from sweep.worker.trial import DeploymentStarted, failed_trial, run_deployment

log = logging.getLogger(__name__)
POLL_S = 0.5
# A local cluster runs beside what it measures, so it starts no more than the sweep needs:
# - Ray starts workers at niceness 15: the load generator and the servers it launches would
#   yield to any busy process of the node, and measure that instead;
# - no idle workers started ahead of tasks (each deployment gets its own anyway), and no Ray
#   metrics exported (nothing reads them without the dashboard): less that wakes up on the
#   cores the load generator runs on.
# A cluster's nodes start without prestarted workers too (`RAY_<name>=0` before `ray start` in
# scripts/cluster/*.yaml): on the first driver Ray would boot a Python worker per CPU of a node.
# Both read-only: a head's start writes its spilling settings into the `_system_config` dict it is
# given (ray/_private/node.py), so each start gets a copy (`dict(LOCAL_SYSTEM_CONFIG)`); a shared
# dict kept the first start's settings for the next one in the same process.
NO_PRESTART = MappingProxyType(
    {"enable_worker_prestart": False, "prestart_worker_first_driver": False}
)
LOCAL_SYSTEM_CONFIG = MappingProxyType(
    {"worker_niceness": 0, **NO_PRESTART, "enable_metrics_collection": False}
)
SHARE_POLL_S = 1.0  # how often idle resources are looked for (a call to the GCS)
NODE_POLL_S = 1.0  # how often the nodes of running tasks are checked (a call to the GCS)


class DeploymentSource(Protocol):
    """Deployments that arrive while the driver runs (the tuner's configurations)."""

    def more(self, recorded: set[str]) -> list[Deployment] | None:
        """Deployments to submit now ([] for none yet), or None when no more will come."""


@dataclass
class SweepOutcome:
    """What happened to the trials this run submitted."""

    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    failed_kinds: Counter = field(default_factory=Counter)  # error_kind -> failed trials

    def line(self) -> str:
        """The sweep's last line: trials ok and failed, the failures counted by kind."""
        kinds = ", ".join(f"{kind}: {n}" for kind, n in self.failed_kinds.most_common())
        return f"finished: {len(self.ok)} ok, {len(self.failed)} failed" + (
            f" ({kinds})" if kinds else ""
        )


@dataclass
class _Task:
    """One submitted attempt of a deployment."""

    deployment: Deployment
    generator: Any
    attempt: int
    submitted_at: float
    key: str = ""  # names the task in the trial ledger
    started_at: float | None = None
    last_progress: float = 0.0
    start_cost_s: float | None = None  # start to first result, less that trial's own time
    helper: bool = False  # shares the trials of another live task of its deployment
    node_id: str | None = None  # the Ray node it runs on, once started
    node_ip: str = ""
    wait: NodeWait | None = None  # its wait for a node, while no alive node fits it
    recorded_upto: int = 0  # its trials before this index are all recorded (`Driver.pending`)
    log_name: str = R.BACKEND_LOG  # its server's log in the deployment's folder


def connect(cluster: Any) -> bool:
    """Start a local Ray (default) or join `cluster.address`; True if we connected."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": cluster.include_dashboard,
        "log_to_driver": True,
        "logging_level": logging.WARNING,
    }
    if cluster.address:
        _check_reachable(cluster.address)
        values, unset = forwarded_env(list(cluster.forward_env))
        for name in unset:
            log.warning("cluster.forward_env: %s is not set here, so the workers will not have it",
                        name)  # fmt: skip
        runtime_env = {"env_vars": values} if values else None
        ray.init(address=cluster.address, runtime_env=runtime_env, **kwargs)
        return True
    ray.init(
        # "local" always starts a new instance: without it, Ray joins the cluster named in
        # /tmp/ray/ray_current_cluster, which a killed earlier run leaves behind.
        address="local",
        num_cpus=cluster.num_cpus,
        num_gpus=cluster.num_gpus,
        _node_ip_address=cluster.node_ip_address,
        _system_config=dict(LOCAL_SYSTEM_CONFIG),
        **kwargs,
    )
    return True


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after minutes of Ray's retries, when the cluster cannot be reached."""
    if address == "auto" or "://" in address:
        return  # found through the environment, or a Ray client address
    try:  # the address Ray will really dial (it rewrites loopback to the node's outward IP)
        from ray._private.services import canonicalize_bootstrap_address

        address = canonicalize_bootstrap_address(address) or address
    except Exception:  # a private helper: fall back to the address as given
        pass
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise SweepError(
            f"cannot reach the Ray cluster at {address} (cluster.address): {exc}"
        ) from None


def _deployment_task(  # noqa: ANN202
    deployment: Deployment, environment: dict[str, Any], ledger: Any, task_key: str, helper: bool
):
    """Ray task body: a marker once running, then one `TrialFiles` per trial it claimed."""
    from sweep.worker.environment import worker_environment

    def claim(trial_id: str) -> bool:
        return ledger.claim(trial_id, task_key)

    # CUDA numbers devices fastest first, NVML and Ray by PCI bus: on a node of mixed GPUs the
    # engine would run on one card while telemetry samples another. One order for all.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    environment = {**environment, **worker_environment()}
    yield from run_deployment(deployment, environment, claim, helper, ledger.board(task_key))


# A GPU deployment gets a worker process of its own (`max_calls=1`: Ray gives a task's function a
# fresh worker after this many calls; only `ray.remote(num_gpus=...)` sets it, `.options()` does
# not). A reused worker would keep the CUDA devices and contexts of the deployment before it.
_GPU_TASK = ray.remote(max_calls=1)(_deployment_task)
_TASK = ray.remote(_deployment_task)


class Driver:
    """Runs deployments on Ray until every trial is recorded once."""

    def __init__(
        self, store: ResultStore, environment: dict[str, Any], cluster: Any, progress: Any
    ) -> None:
        self.store = store
        self.environment = environment
        self.cluster = cluster
        self.progress = progress
        self.outcome = SweepOutcome()
        self.recorded: set[str] = set()
        self.tasks: list[_Task] = []
        self.ledger: Any = None
        self._next_share = 0.0
        self._next_node_check = 0.0
        # deployment id ("" for all) -> [sum, count] of its trials' wall times: a running mean,
        # so that a decision's cost does not grow with the trials recorded
        self.walls: dict[str, list[float]] = {}
        self.warned_niced = False
        self.start_costs: list[float] = []
        self.probes: dict[str, list[tuple[str, Any]]] = {}  # search id -> probes recorded so far
        self.node_types: list[NodeType] | None = None
        self.logged: set[str] = set()  # deployments whose first task was submitted
        self.later_tasks: Counter = Counter()  # (deployment id, task kind) -> later tasks

    def run(
        self, deployments: list[Deployment], source: DeploymentSource | None = None
    ) -> SweepOutcome:
        """Submit every deployment (longest first) and process results until all are recorded.

        With `source` (the tuner, `sweep.tune`), more deployments come while the sweep runs:
        after each step the source is asked for those to submit now, given the trial and
        search ids recorded so far, until it says it has none left (None).
        """
        self.ledger = TrialLedger()
        # A cluster we joined may grow: its autoscaler's node types count as nodes to come.
        self.node_types = launchable_node_types() if self.cluster.address else None
        try:
            self._submit_all(deployments)
            while self.tasks or source is not None:
                if self.tasks:
                    self._step()
                if source is None:
                    continue
                more = source.more(self.recorded)
                if more is None:
                    source = None
                elif more:
                    self._submit_all(more)
                elif not self.tasks:
                    raise SweepError("the tuner has configurations in flight but no task runs")
        except BaseException:
            self.cancel_all()
            raise
        finally:
            self.ledger.close()
        return self.outcome

    def _submit_all(self, deployments: list[Deployment]) -> None:
        """Submit deployments longest first; record failed at once those no node can host."""
        nodes = ray.nodes()
        for deployment in longest_first(deployments):
            reason = unplaceable_reason(deployment, nodes, self.node_types)
            if reason:
                self._fail_all(deployment.trials, "unplaceable", reason)
                self.progress.deployment_finished()
                continue
            self._submit(deployment, attempt=0, nodes=nodes)
            if wait := self.tasks[-1].wait:
                self.progress.note(f"{deployment.label} {wait.first_line()}")

    def cancel_all(self) -> None:
        """Cancel every running task (its backend stops in the worker's `finally`)."""
        for task in self.tasks:
            _cancel(task.generator, force=False)
        deadline = time.monotonic() + 15
        for task in self.tasks:
            try:
                ray.wait([task.generator], timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # the task is going away; nothing to wait for
                pass
        self.tasks = []

    def _submit(
        self, deployment: Deployment, attempt: int, helper: bool = False, nodes: list | None = None
    ) -> None:
        key = uuid.uuid4().hex[:12]
        deployment = deployment.with_trials(tuple(self._with_known(t) for t in deployment.trials))
        options: dict[str, Any] = {
            "num_cpus": deployment.num_cpus,
            "num_gpus": deployment.num_gpus,
            "num_returns": "streaming",
            "max_retries": 0,  # retries are ours: only the missing trials are re-run
        }
        if deployment.accelerator_type:
            options["accelerator_type"] = deployment.accelerator_type
        if pieces := custom_resources(deployment):
            options["resources"] = pieces  # the set-up pieces it needs on its node
        task = _GPU_TASK if deployment.num_gpus > 0 else _TASK
        generator = task.options(**options).remote(
            deployment, self.environment, self.ledger, key, helper
        )
        now = time.monotonic()
        wanted = None if helper else waits_for(deployment, ray.nodes() if nodes is None else nodes)
        wait = None
        if wanted:
            wait = NodeWait(wanted, self.cluster.node_wait_s, self.cluster.node_setup_wait_s, now)
        log_name = self._log_name(deployment.deployment_id, helper)
        self.tasks.append(
            _Task(
                deployment,
                generator,
                attempt,
                now,
                key,
                last_progress=now,
                helper=helper,
                wait=wait,
                log_name=log_name,
            )  # fmt: skip
        )

    def _log_name(self, deployment_id: str, helper: bool) -> str:
        """Where a new task's server log is kept, under a name no other task of the run has.

        The deployment's first task's is backend.log; a helper's, or a later task's (a retry, the
        rest of a hung trial), a name of its own, so that none replaces the log of a task that
        was lost or is still running.
        """
        if not helper and deployment_id not in self.logged:
            self.logged.add(deployment_id)
            return R.BACKEND_LOG
        kind = R.HELPER_TASK if helper else R.LATER_TASK
        self.later_tasks[deployment_id, kind] += 1
        return R.task_log_name(kind, self.later_tasks[deployment_id, kind])

    def pending(self, task: _Task) -> tuple:
        """The task's trials that nobody has recorded yet.

        Looked at every step, so it starts after the leading run of recorded trials (a task
        records its trials mostly in order): its cost follows the trials left, not those done.
        """
        trials = task.deployment.trials
        while task.recorded_upto < len(trials) and (
            trials[task.recorded_upto].trial_id in self.recorded
        ):
            task.recorded_upto += 1
        rest = trials[task.recorded_upto :]
        return tuple(t for t in rest if t.trial_id not in self.recorded)

    def _first_pending(self, task: _Task) -> Any:
        """The task's first trial not recorded yet (None: all are), without listing the rest."""
        trials = task.deployment.trials
        while task.recorded_upto < len(trials) and (
            trials[task.recorded_upto].trial_id in self.recorded
        ):
            task.recorded_upto += 1
        return trials[task.recorded_upto] if task.recorded_upto < len(trials) else None

    def _step(self) -> None:
        ready, _ = ray.wait([t.generator for t in self.tasks], num_returns=1, timeout=POLL_S)
        for task in [t for t in self.tasks if t.generator in ready]:
            self._advance(task)
        for task in list(self.tasks):
            self._check_hung(task)
        if time.monotonic() >= self._next_node_check:
            self._next_node_check = time.monotonic() + NODE_POLL_S
            nodes = ray.nodes() if any(t.node_id or t.wait for t in self.tasks) else []
            self._drop_tasks_on_dead_nodes(nodes)
            self._give_up_waiting_for_nodes(nodes)
        if self.cluster.share_idle_gpus and time.monotonic() >= self._next_share:
            self._next_share = time.monotonic() + SHARE_POLL_S
            self._share_idle_gpus()

    def _drop_tasks_on_dead_nodes(self, nodes: list[dict[str, Any]]) -> None:
        """Count a task lost once Ray declares its node dead, even if no error reached us.

        A node that stops answering (cut off, frozen) rather than crashing is declared dead by
        the GCS's health checks, but the owner of its tasks hears nothing until a connection
        times out, minutes later, and may still get their results if the node comes back.
        The task is given up at once: its trials not recorded run elsewhere, and anything it
        sends later is ignored (its generator is no longer read).
        """
        placed = [t for t in self.tasks if t.node_id]
        if not placed:
            return
        dead = {n["NodeID"] for n in nodes if not n["Alive"]}
        for task in placed:
            if task.node_id in dead and task in self.tasks:
                _cancel(task.generator, force=True)
                self._died(task, f"Ray declared its node {task.node_ip} dead")

    def _give_up_waiting_for_nodes(self, nodes: list[dict[str, Any]]) -> None:
        """Advance the waits of tasks no alive node fits; record failed those whose limit ran out.

        Once an alive node fits a task it is merely queued behind others for its resources,
        which is not a node that never came: its wait ends. Otherwise its clocks
        (`sweep.driver.node_wait`) run by what the autoscaler has on its way of the types that fit
        it.
        """
        waiting = [t for t in self.tasks if t.wait and t.started_at is None]
        on_its_way = pending_by_type() if waiting else {}
        now = time.monotonic()
        for task in waiting:
            if waits_for(task.deployment, nodes) is None:
                task.wait = None  # a node that fits came up
                continue
            fitting = self._fitting_types(task.deployment)
            give_up = task.wait.step(now, {n: on_its_way[n] for n in fitting if n in on_its_way})
            if give_up is None:
                if line := task.wait.note(now):
                    self.progress.note(f"{task.deployment.label} {line}")
                continue
            reason = give_up.reason(task.wait.wanted, autoscaler_last_word(fitting))
            log.warning("deployment %s: %s", task.deployment.label, reason)
            _cancel(task.generator, force=True)
            self.tasks.remove(task)
            pending = self.pending(task)
            self._release(task, pending)
            self._fail_all(pending, R.ERROR_NO_NODE, reason)
            self._deployment_may_be_done(task)

    def _fitting_types(self, deployment: Deployment) -> list[str]:
        """Names of the autoscaler's node types that could host `deployment`."""
        needed = resources_of(deployment)
        return [t.name for t in self.node_types or () if t.fits(needed)]

    def _share_idle_gpus(self) -> None:
        """Start a helper for the GPU deployment with the most trials not begun, on idle GPUs.

        Only when nothing waits for resources (every task has started), so a helper never takes
        a place a queued deployment would have had; one helper at a time, one per deployment. The
        helper gets the trials not begun in reverse order: the two tasks claim trials from
        opposite ends (the ledger keeps each to one task) and meet wherever their speeds put
        them, so no estimate decides who runs what.
        """
        if any(t.started_at is None for t in self.tasks):
            return
        live = Counter(t.deployment.deployment_id for t in self.tasks)
        candidates = []
        for task in self.tasks:
            if task.deployment.num_gpus == 0 or task.helper:
                continue  # shared CPUs would slow the first task's trials
            pending = self.pending(task)
            replicas = _replicas_wanted(pending)
            if replicas > 1 and live[task.deployment.deployment_id] < replicas:
                # A search probing `search.parallel` loads at once: a replica joins it, taking
                # the trials in the same order (each probe is claimed by one replica).
                candidates.append((len(pending), task, pending))
                continue
            if live[task.deployment.deployment_id] > 1:
                continue  # one helper at most
            not_begun = pending[1:]
            if not_begun and self._helper_pays(task, len(not_begun)):
                candidates.append((len(not_begun), task, tuple(reversed(not_begun))))
        if not candidates:
            return
        available = ray.available_resources()
        for count, task, not_begun in sorted(candidates, key=lambda c: -c[0]):
            if _fits(task.deployment, available):
                log.info(
                    "deployment %s: %d trials or searches left and a GPU idle; another task "
                    "shares them",
                    task.deployment.label,
                    count,
                )
                helper = task.deployment.with_trials(not_begun)
                self._submit(helper, task.attempt, helper=True)
                return

    def note_wall(self, deployment_id: str, wall: float) -> None:
        """Count one trial of `deployment_id` that took `wall` seconds (`_helper_pays`)."""
        for key in (deployment_id, ""):
            sums = self.walls.setdefault(key, [0.0, 0])
            sums[0], sums[1] = sums[0] + wall, sums[1] + 1

    def _helper_pays(self, task: _Task, not_begun: int) -> bool:
        """Whether starting a helper beats leaving the task's `not_begun` trials to it alone.

        With trials of `w` seconds and a start of `c`, the task alone needs n w more after the
        running trial; a helper can only take trials once started, so it gains when c < n w.
        Both from what this sweep measured: the deployment's trial times (else all trials'),
        and the task's own start (else the median start so far); unknown means no.
        """
        total, count = self.walls.get(task.deployment.deployment_id) or self.walls.get("", (0, 0))
        cost = task.start_cost_s
        if cost is None and self.start_costs:
            cost = sorted(self.start_costs)[len(self.start_costs) // 2]
        if not count or cost is None:
            return False
        return cost < not_begun * total / count

    def _advance(self, task: _Task) -> None:
        try:
            item = ray.get(next(task.generator))
        except StopIteration:
            self._finish(task)
            return
        except ray.exceptions.RayError as exc:
            self._died(task, _first_line(exc))
            return
        task.last_progress = time.monotonic()
        if isinstance(item, DeploymentStarted):
            task.started_at = task.last_progress
            task.node_id, task.node_ip = item.node_id, item.node_ip
            return
        if isinstance(item, SearchDone):
            self._search_done(task, item)
            return
        if isinstance(item, QualityFiles):
            self._record_quality(item)
            return
        if isinstance(item, BackendLog):
            self._record_log(item, task.log_name)
            return
        wall = item.summary.column(R.WALL_S)[0].as_py() or 0.0
        if task.start_cost_s is None:
            task.start_cost_s = max(0.0, task.last_progress - task.started_at - wall)
            self.start_costs.append(task.start_cost_s)
        self.note_wall(task.deployment.deployment_id, wall)
        self._record(item, task.log_name)

    def _check_hung(self, task: _Task) -> None:
        if task.started_at is None:
            return  # still queued for resources, or starting its worker
        first = self._first_pending(task)
        if first is None:
            return
        limit = first.config.workload.trial_timeout_s
        if task.last_progress > task.started_at:
            budget = limit
        else:
            budget = limit + self.cluster.start_timeout_s
        if time.monotonic() - task.last_progress <= budget:
            return
        pending = self.pending(task)
        hung = pending[0]
        log.warning("trial %s produced nothing for %.0f s; cancelling it", hung.label, budget)
        _cancel(task.generator, force=True)
        self.tasks.remove(task)
        self._fail_all(
            (hung,),
            R.ERROR_TIMEOUT,
            f"no result within {budget:.0f} s (workload.trial_timeout_s); task cancelled",
        )
        rest = pending[1:]
        self._release(task, rest)
        if rest and not self._helped_task_lives(task):
            self._submit(task.deployment.with_trials(rest), attempt=task.attempt)
        else:
            self._deployment_may_be_done(task)

    def _died(self, task: _Task, reason: str) -> None:
        self.tasks.remove(task)
        pending = self.pending(task)
        self._release(task, pending)
        if self._helped_task_lives(task):
            log.warning("a helper of %s was lost (%s)", task.deployment.label, reason)
            return  # the task it helped claims what it left
        if pending and task.attempt < self.cluster.max_retries:
            log.warning(
                "deployment %s lost (%s); retrying %d trials elsewhere",
                task.deployment.label,
                reason,
                len(pending),
            )
            self._submit(task.deployment.with_trials(pending), attempt=task.attempt + 1)
            return
        self._fail_all(pending, R.ERROR_WORKER_DIED, reason)
        self._deployment_may_be_done(task)

    def _finish(self, task: _Task) -> None:
        self.tasks.remove(task)
        left = self.pending(task)  # skipped as another task's, which was lost before running them
        if left and not self._lives(task.deployment):
            # No task of the deployment lives, so whoever claimed them is gone: a lost task's
            # worker may have claimed one after the driver released its claims (a node cut off
            # that came back), and would keep every later task from running it.
            self.ledger.release([t.trial_id for t in left], None)
            log.warning("%d trials of %s were left by a lost task; running them", len(left),
                        task.deployment.label)  # fmt: skip
            self._submit(task.deployment.with_trials(left), attempt=task.attempt)
            return
        self._deployment_may_be_done(task)

    def _release(self, task: _Task, trials: tuple) -> None:
        """Free the task's claims on `trials`, before another task retries them."""
        self.ledger.release([t.trial_id for t in trials], task.key)

    def _helped_task_lives(self, task: _Task) -> bool:
        """A helper whose deployment still has a live task: that one takes what it left."""
        return task.helper and self._lives(task.deployment)

    def _deployment_may_be_done(self, task: _Task) -> None:
        """Count the deployment finished when no task of it (original or helper) remains."""
        if not self._lives(task.deployment):
            self.progress.deployment_finished()

    def _lives(self, deployment: Deployment) -> bool:
        """Whether a task of `deployment` (original or helper) still runs."""
        return any(t.deployment.deployment_id == deployment.deployment_id for t in self.tasks)

    def _fail_all(self, trials: tuple, kind: str, reason: str) -> None:
        for spec in trials:
            self._record(failed_trial(spec, kind, reason, self.environment))

    def _with_known(self, trial: Any) -> Any:
        """A search's seed with the probes recorded so far, so a retry does not repeat them."""
        recorded = self.probes.get(trial.trial_id)
        if trial.search is None or not recorded:
            return trial
        known = dict(trial.search.known) | dict(recorded)
        search = dataclasses.replace(trial.search, known=tuple(known.items()))
        return dataclasses.replace(trial, search=search)

    def _search_done(self, task: _Task, done: SearchDone) -> None:
        """A search ended: its seed counts as recorded; say what it found (once, for replicas)."""
        if done.search_id in self.recorded:
            return
        self.recorded.add(done.search_id)
        seed = next((t for t in task.deployment.trials if t.trial_id == done.search_id), None)
        label = seed.label if seed is not None else done.search_id
        run = len(self.probes.get(done.search_id, ()))
        budget = probe_budget(seed) if seed is not None else run
        unit = "req/s" if seed is None or not seed.search.integer else "concurrent requests"
        self.progress.search_finished(label, done.capacity, max(0, budget - run), unit)

    def _record_quality(self, files: QualityFiles) -> None:
        """Write a deployment's quality scores; a refusal is a warning (the trials go on)."""
        try:
            self.store.write_quality(files)
        except (ResultsNotSaved, OSError) as exc:
            log.warning("quality scores of %s not saved: %s", files.deployment_id, exc)

    def _record_log(self, item: BackendLog, name: str) -> None:
        """Keep a task's whole backend log; a refusal is a warning (its trials are saved)."""
        try:
            self.store.write_backend_log(item.deployment_id, item.text, name)
        except (ResultsNotSaved, OSError) as exc:
            log.warning("backend log of %s not saved: %s", item.deployment_id, exc)

    def _record(self, files: TrialFiles, log_name: str = R.BACKEND_LOG) -> None:
        """Write a trial's files (with the backend log it carries, as `log_name`) and count it."""
        if files.trial_id in self.recorded:
            return  # a retried task may repeat a trial that already reached us
        row = files.summary.to_pylist()[0]
        if row.get(R.SEARCH_ID) and row.get(R.SEARCH_PROBE) is not None:
            probes = self.probes.setdefault(row[R.SEARCH_ID], [])
            probes.append((files.trial_id, known_probe(row)))
        try:
            self.store.write_trial(files)
            if files.backend_log is not None:
                self.store.write_backend_log(files.deployment_id, files.backend_log, log_name)
        except (ResultsNotSaved, OSError) as exc:
            self._not_saved(files, exc)
        self.recorded.add(files.trial_id)
        self._warn_if_niced(files)
        if row.get(R.TRIAL_STATUS) == R.STATUS_OK:
            self.outcome.ok.append(files.trial_id)
        else:
            self.outcome.failed.append(files.trial_id)
            self.outcome.failed_kinds[row.get(R.ERROR_KIND) or "unknown"] += 1
        self.progress.trial_finished(files)

    def _not_saved(self, files: TrialFiles, exc: Exception) -> None:
        """The results folder refused a trial's files: keep what fits, then stop the sweep.

        What was written of the trial is removed (nothing partial stays under a final name) and
        a failed summary naming the reason takes its place when there is room for it; resume
        runs such a trial again. Every later trial would meet the same folder, so the sweep
        stops with one message instead of measuring what it cannot keep.
        """
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.store.remove_trial(files.deployment_id, files.trial_id)
        try:
            self.store.write_trial(_not_saved_record(files, reason))
            self.outcome.failed.append(files.trial_id)
        except (ResultsNotSaved, OSError):
            self.store.remove_trial(files.deployment_id, files.trial_id)
        raise ResultsNotSaved(
            f"results not saved ({reason}); the sweep stopped ({len(self.outcome.ok)} trials "
            f"of this run saved in {self.store.display_root}). Make room there and run the same "
            "command again: it runs only the trials not saved"
        ) from None

    def _warn_if_niced(self, files: TrialFiles) -> None:
        """One warning when trials ran in niced workers (a cluster started without our setting)."""
        row = files.summary.to_pylist()[0]
        nice = row.get(R.ENV_WORKER_NICE)
        if self.warned_niced or not nice or nice <= 0:
            return
        self.warned_niced = True
        log.warning(
            "trial %s ran in a Ray worker at niceness %s: the load generator and the servers it "
            "launched yield to other processes of the node. Start the cluster's nodes with "
            "RAY_worker_niceness=0 (scripts/cluster/*.yaml do); the summary's %s says which ran so",
            row.get(R.LABEL),
            nice,
            R.ENV_WORKER_NICE,
        )


def _not_saved_record(files: TrialFiles, reason: str) -> TrialFiles:
    """The trial's summary marked failed for `reason`, every other table emptied."""
    row = files.summary.to_pylist()[0]
    row.update({R.TRIAL_STATUS: R.STATUS_FAILED, R.ERROR_KIND: R.ERROR_NOT_SAVED,
                R.ERROR_MESSAGE: f"results not saved: {reason}"})  # fmt: skip
    emptied = {
        f.name: value.schema.empty_table()
        for f in dataclasses.fields(files)
        if f.name != "summary" and isinstance(value := getattr(files, f.name), pa.Table)
    }
    summary = pa.Table.from_pylist([row])  # as the worker builds it (an unset column is null)
    return dataclasses.replace(files, summary=summary, backend_log=None, **emptied)


def _replicas_wanted(pending: tuple) -> int:
    """Tasks the deployment's current trial can use: `search.parallel` for a search, else 1."""
    if not pending or pending[0].search is None:
        return 1
    return pending[0].config.search.parallel


def _fits(deployment: Deployment, available: dict[str, float]) -> bool:
    """Whether `available` (Ray's free resources) can hold one more task of `deployment`."""
    return resources_fit(resources_of(deployment), available)


def _cancel(generator: Any, force: bool) -> None:
    try:
        ray.cancel(generator, force=force)
    except Exception as exc:  # already finished or its node is gone
        log.debug("cancel failed: %s", exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
