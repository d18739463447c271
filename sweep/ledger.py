"""Which task runs which trial, so that two tasks of one deployment can share its trials.

When GPUs fall idle while a deployment still has trials it has not begun (the tail of a sweep,
or trials retried after a node died), the driver starts a helper task for the same deployment
on an idle GPU (`sweep.driver`). The original task runs its trials from the front, the helper
from the back; each claims a trial in the ledger before running it, and a trial the other task
claimed first is skipped. So every trial runs once, and the deployment finishes on two GPUs at
the price of one more backend start. When a task dies, the driver releases its unfinished claims
before retrying them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
class TrialLedger:
    """Trial id -> the task that claimed it. One per sweep, on the driver's node."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}

    def claim(self, trial_id: str, task_key: str) -> bool:
        """True if `task_key` may run `trial_id`: nobody claimed it yet, or it did."""
        return self.owners.setdefault(trial_id, task_key) == task_key

    def release(self, trial_ids: Iterable[str], task_key: str) -> None:
        """Forget `task_key`'s claims on `trial_ids` (it died before finishing them)."""
        for trial_id in trial_ids:
            if self.owners.get(trial_id) == task_key:
                del self.owners[trial_id]


def new_ledger() -> object:
    """A ledger on the driver's own node: the nodes that run trials may die, that one may not."""
    here = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    return TrialLedger.options(scheduling_strategy=strategy).remote()


def claimer(ledger: object, task_key: str) -> Callable[[str], bool]:
    """A `claim(trial_id)` function for one task, asking `ledger` (a TrialLedger handle)."""

    def claim(trial_id: str) -> bool:
        return ray.get(ledger.claim.remote(trial_id, task_key))

    return claim
