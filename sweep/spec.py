"""What the planner hands the worker: trial specs, deployments, and the rules of their ids.

A `TrialSpec` is one grid point and repeat, a `Deployment` what is launched once and the trials
run against it; a search's seed carries a `SearchSeed` with the `Probe`s already known. The
planner (`sweep.plan.plan`, `sweep.plan.search_plan`) builds them and the worker
(`sweep.worker.trial`, `sweep.worker.search_run`) runs them: both import this module and neither
imports the other.

`trial_id` hashes the resolved trial config (sorted keys; output, cluster, tracking, SLO and sweep
settings excluded, `hash_tree`) plus the repeat index, so the same experiment always gets the same
ids; that is what makes resume, de-duplication and cross-sweep comparison work. `deployment_id`
hashes exactly what is launched once: model, backend and hardware (`deployment_id`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sweep.core import records as rec
from sweep.core.config import ADDED_LATER, Config, flatten

# `quality` is measured once per deployment, not by a trial: it moves no trial id.
NOT_IN_TRIAL_ID = (
    "sweep", "output", "cluster", "tracking", "slo", "search", "reference", "quality",
)  # fmt: skip
NOT_IN_FLAT = ("sweep", "output", "cluster", "tracking", "search", "reference", "quality")
DEPLOYMENT_KEYS = rec.DEPLOYMENT_GROUPS
# The workload value a search varies, per workload mode; other modes have no load to raise.
LOAD_AXES = {"open_loop": "workload.request_rate", "closed_loop": "workload.concurrency"}


@dataclass(frozen=True)
class Probe:
    """One probe's outcome: its offered load, the SLO verdict, and the rate it achieved.

    Attributes:
        load: the offered load (req/s, or concurrency).
        passed: whether the trial met the SLO.
        margin: the verdict's margin (> 0 inside the SLO); None when unknown.
        achieved: the request rate the server delivered; None when unknown.
        reason: the verdict's reason, quoted by `sweep.worker.search.capacity`.
    """

    load: float
    passed: bool
    margin: float | None = None
    achieved: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class SearchSeed:
    """One search of the plan: its mode, the axis it varies and the probes already known."""

    mode: str
    axis: str
    known: tuple[tuple[str, Probe], ...] = ()  # (probe trial id, its outcome), in probe order

    @property
    def integer(self) -> bool:
        """Whether loads are whole numbers (concurrency)."""
        return self.axis == LOAD_AXES["closed_loop"]


@dataclass(frozen=True)
class TrialSpec:
    """One grid point and repeat: everything a worker needs to run and describe a trial."""

    trial_id: str
    deployment_id: str
    sweep_name: str
    repeat: int
    label: str
    config: Config
    flat: dict[str, Any]  # the summary's config columns, with the group choices as JSON
    search: SearchSeed | None = None  # set on a search's seed: the worker turns it into probes


@dataclass(frozen=True)
class Deployment:
    """What is launched once (model + backend + resources) and the trials run against it."""

    deployment_id: str
    label: str
    config: Config
    trials: tuple[TrialSpec, ...]

    @property
    def num_gpus(self) -> int:
        """GPUs the deployment's Ray task asks for."""
        return self.config.backend.num_gpus

    @property
    def num_cpus(self) -> float:
        """CPUs the deployment's Ray task asks for."""
        return self.config.backend.num_cpus

    @property
    def accelerator_type(self) -> str | None:
        """Ray accelerator type the task is pinned to (None on CPU-only deployments)."""
        return self.config.hardware.accelerator_type if self.num_gpus > 0 else None

    def with_trials(self, trials: tuple[TrialSpec, ...]) -> Deployment:
        """The same deployment restricted to `trials`."""
        return dataclasses.replace(self, trials=trials)


def stable_hash(value: Any) -> str:
    """A short hash of a JSON-able value with sorted keys; identical across runs and machines."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def hash_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """The part of a trial's config tree its id hashes.

    `NOT_IN_TRIAL_ID` is left out, and so is every field of `ADDED_LATER` that holds the default
    it was added with: a new option leaves the ids of trials that do not use it where they were,
    so resume and cross-sweep comparison keep working across upgrades.
    """
    hashed = {k: v for k, v in tree.items() if k not in NOT_IN_TRIAL_ID}
    for dotted, default in ADDED_LATER.items():
        group, _, key = dotted.partition(".")
        if not key:  # a whole group added later (`proxy`): gone while it holds its default
            if hashed.get(group) == default:
                del hashed[group]
            continue
        section = hashed.get(group)
        if isinstance(section, dict) and key in section and section[key] == default:
            hashed[group] = {k: v for k, v in section.items() if k != key}
    return hashed


def deployment_id(tree: dict[str, Any]) -> str:
    """The id of what a trial's config tree launches: its `DEPLOYMENT_KEYS`, hashed."""
    # Through hash_tree too: a backend field added later (ADDED_LATER) moves no deployment id.
    return stable_hash(hash_tree({k: tree[k] for k in DEPLOYMENT_KEYS}))


def flat_columns(tree: dict[str, Any], choices: dict[str, str]) -> dict[str, Any]:
    """The summary's config columns of a trial's config tree, with the group choices."""
    flat = flatten({k: v for k, v in tree.items() if k not in NOT_IN_FLAT})
    flat[rec.GROUP_CHOICES] = json.dumps(choices, sort_keys=True)
    return flat
