"""Which task runs which trial, so that two tasks of one deployment can share its trials.

When a GPU falls idle while a deployment still has trials it has not begun (the tail of a sweep,
or trials retried after a node died), the driver starts a helper task for the same deployment
on it (`sweep.driver.driver`). The original task runs its trials from the front, the helper from the
back; each claims a trial in the ledger before running it, and a trial the other claimed first
is skipped. So every trial runs once. When a task dies, the driver releases its unfinished
claims before retrying them; when trials are left unrun because a lost task's worker claimed
them after that (its node came back), the driver releases them once no task of the deployment
lives, and runs them again.

The ledger lives in the Ray cluster's key-value store (in the GCS, on the head node), whose
put-if-absent is atomic: no actor process to start and keep alive, nothing on a node that may
die. Keys are scoped to one driver run and removed when it ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from ray.experimental import internal_kv

NAMESPACE = "llm-sweep-ledger"


class TrialLedger:
    """Trial id -> the task that claimed it, for one run of the driver. Picklable: tasks get it."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex

    def _key(self, trial_id: str) -> str:
        return f"{self.run}/{trial_id}"

    def claim(self, trial_id: str, task_key: str) -> bool:
        """True if `task_key` may run `trial_id`: nobody had claimed it, or it had."""
        key = self._key(trial_id)
        existed = internal_kv._internal_kv_put(key, task_key, overwrite=False, namespace=NAMESPACE)
        if not existed:
            return True
        return internal_kv._internal_kv_get(key, namespace=NAMESPACE) == task_key.encode()

    def release(self, trial_ids: Iterable[str], task_key: str | None = None) -> None:
        """Forget `task_key`'s claims on `trial_ids` (it died before finishing them).

        Without `task_key`, any claim on them goes: the driver knows no live task holds one.
        """
        for trial_id in trial_ids:
            key = self._key(trial_id)
            held = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
            if held is not None and (task_key is None or held == task_key.encode()):
                internal_kv._internal_kv_del(key, namespace=NAMESPACE)

    def board(self, task_key: str) -> LedgerBoard:
        """The view of one task, where replicas share a search's probes (`worker.search_run`)."""
        return LedgerBoard(self, task_key)

    def publish(self, trial_id: str, text: str) -> None:
        """Keep a probe's outcome for the other replicas of its search."""
        internal_kv._internal_kv_put(self._key(f"outcome/{trial_id}"), text, namespace=NAMESPACE)

    def fetch(self, trial_id: str) -> str | None:
        """A probe's outcome as published, None before."""
        value = internal_kv._internal_kv_get(self._key(f"outcome/{trial_id}"), namespace=NAMESPACE)
        return value.decode() if value is not None else None

    def close(self) -> None:
        """Remove this run's claims from the cluster's store."""
        internal_kv._internal_kv_del(f"{self.run}/", del_by_prefix=True, namespace=NAMESPACE)


class LedgerBoard:
    """One task's view of the ledger: claims in its name, outcomes shared with the others."""

    def __init__(self, ledger: TrialLedger, task_key: str) -> None:
        self.ledger, self.task_key = ledger, task_key

    def claim(self, trial_id: str) -> bool:
        """True if this task may run `trial_id`."""
        return self.ledger.claim(trial_id, self.task_key)

    def publish(self, trial_id: str, text: str) -> None:
        """Share the outcome of a probe this task ran."""
        self.ledger.publish(trial_id, text)

    def fetch(self, trial_id: str) -> str | None:
        """The outcome another task published, None while it runs."""
        return self.ledger.fetch(trial_id)
