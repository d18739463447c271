"""What one tuned configuration came to, read from the results folder once its seed is recorded.

A capacity-measured configuration (objective `capacity` or `cost_per_mtok`) is its capacity
search's probes, judged again by `sweep.worker.search.capacity` with the settings it ran with
(its `stop_below` included): complete with the capacity and its bracket (the interval), pruned
when a probe proved it below the best found, failed when no probe ran (the deployment failed).
A summary-column objective is its one trial's value. Its deployment time is what its probes took
plus its server's start-up, as the results folder recorded them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweep.core import records as R
from sweep.core.results import ResultStore
from sweep.spec import TrialSpec
from sweep.worker.search import capacity
from sweep.worker.search_run import known_probe

COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"


@dataclass(frozen=True)
class Outcome:
    """A configuration's result: its state, objective value and capacity interval."""

    state: str
    value: float | None
    capacity: float | None = None
    low: float | None = None  # the highest load that met the SLO
    high: float | None = None  # the lowest that failed above it
    probes: int = 0
    deployment_s: float = 0.0
    start_s: float = 0.0  # its server's start-up, in deployment_s
    reason: str = ""


def read_outcome(store: ResultStore, seed: TrialSpec, objective: str) -> Outcome:
    """The outcome of `seed` (a capacity search's seed, or one trial) from `store`."""
    if seed.search is None:
        return _one_trial(store, seed, objective)
    rows = store.probe_rows(seed.deployment_id, seed.trial_id)
    if not rows:
        row = store.trial_row(seed.deployment_id, seed.trial_id) or {}
        return Outcome(FAILED, None, reason=str(row.get(R.ERROR_MESSAGE) or "nothing recorded"))
    found = capacity(
        seed.config.search, [known_probe(r) for r in rows], integer=seed.search.integer
    )
    seconds, start = _deployment_s(rows)
    common = {"capacity": found.load, "low": found.passed_load, "high": found.failed_load,
              "probes": len(rows), "deployment_s": seconds, "start_s": start,
              "reason": found.reason}  # fmt: skip
    if found.pruned:
        return Outcome(PRUNED, None, **common)
    if objective == "capacity":
        return Outcome(COMPLETE, found.load, **common)
    at = [r for r in rows if r.get(R.SEARCH_LOAD) == found.passed_load]
    cost = _number(at[0].get(R.COST_PER_1M_OUTPUT)) if at else None
    if cost is None:
        return Outcome(FAILED, None, **{**common, "reason": f"no cost at capacity: {found.reason}"})
    return Outcome(COMPLETE, cost, **common)


def _one_trial(store: ResultStore, seed: TrialSpec, objective: str) -> Outcome:
    row = store.trial_row(seed.deployment_id, seed.trial_id) or {}
    seconds, start = _deployment_s([row]) if row else (0.0, 0.0)
    value = _number(row.get(objective))
    if row.get(R.TRIAL_STATUS) != R.STATUS_OK or value is None:
        reason = str(row.get(R.ERROR_MESSAGE) or f"no {objective} recorded")
        return Outcome(FAILED, None, probes=1 if row else 0, deployment_s=seconds, start_s=start,
                       reason=reason)  # fmt: skip
    return Outcome(COMPLETE, value, probes=1, deployment_s=seconds, start_s=start)


def _deployment_s(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Its trials' wall times plus its server's start-up (in each row; counted once), and that."""
    walls = sum(_number(r.get(R.WALL_S)) or 0.0 for r in rows)
    start = max((_number(r.get(R.SERVER_START_S)) or 0.0 for r in rows), default=0.0)
    return walls + start, start


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)
