"""Resume: which planned trials still need to run, given what the results folder holds.

A trial whose summary exists is done: re-running the same command skips it. Failed trials are
skipped too unless `sweep.retry_failed=true`; `sweep.overwrite=true` re-runs everything. A search
gets the probes it recorded (failed ones only without `retry_failed`): it is done when they
already answer it, and otherwise goes on from them instead of starting again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sweep.core import records as R
from sweep.core.results import ResultStore
from sweep.plan.plan import SweepPlan
from sweep.spec import Deployment
from sweep.worker.search_run import known_probe, search_finished


@dataclass(frozen=True)
class ResumeState:
    """Deployments restricted to their missing trials, and what was skipped."""

    deployments: list[Deployment]
    skipped_ok: int
    skipped_failed: int

    @property
    def pending(self) -> int:
        """Trials that will run."""
        return sum(len(d.trials) for d in self.deployments)


def select_pending(plan: SweepPlan, store: ResultStore) -> ResumeState:
    """Drop trials already complete (and failed ones unless retried) from the plan."""
    sweep = plan.base.sweep
    deployments, skipped_ok, skipped_failed = [], 0, 0
    for deployment in plan.deployments:
        keep = []
        # one read of the deployment's folder, not one per trial
        statuses = {} if sweep.overwrite else store.trial_statuses(deployment.deployment_id)
        for trial in deployment.trials:
            if trial.search is not None and not sweep.overwrite:
                trial = with_recorded_probes(trial, store, sweep.retry_failed)
                if search_finished(trial):
                    skipped_ok += 1
                    continue
            status = statuses.get(trial.trial_id)
            if status == R.STATUS_OK:
                skipped_ok += 1
            elif status is not None and not sweep.retry_failed:
                skipped_failed += 1
            else:
                keep.append(trial)
        if keep:
            deployments.append(deployment.with_trials(tuple(keep)))
    return ResumeState(deployments, skipped_ok, skipped_failed)


def with_recorded_probes(seed: Any, store: ResultStore, retry_failed: bool) -> Any:
    """`seed` with the probes its search already recorded in `store` as known."""
    known = []
    for row in store.probe_rows(seed.deployment_id, seed.trial_id):
        if retry_failed and row.get(R.TRIAL_STATUS) != R.STATUS_OK:
            continue
        known.append((row[R.TRIAL_ID], known_probe(row)))
    if not known:
        return seed
    return dataclasses.replace(seed, search=dataclasses.replace(seed.search, known=tuple(known)))
