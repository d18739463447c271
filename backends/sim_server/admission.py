"""The sim server's admission: at most `max_num_seqs` requests running, the rest waiting.

A continuous-batching engine runs a bounded batch and queues what does not fit; `Admission`
gives the sim server (`backends.sim_server`) the same capacity, so the knee of a load sweep
against it is the server's, not the client's. Waiting requests are admitted first in, first out,
as running ones end. A limit of 0 admits every request on arrival. Kept without locks: the
server's event loop is its only user.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Admission(Generic[T]):
    """The running set and the FIFO queue of one server."""

    def __init__(self, max_num_seqs: int) -> None:
        self.limit = max_num_seqs  # 0: unlimited
        self.running: set[T] = set()
        self.waiting: deque[T] = deque()

    def arrive(self, item: T) -> bool:
        """Run `item` now if a slot is free and no one waits (True), else queue it (False)."""
        if self.limit and (self.waiting or len(self.running) >= self.limit):
            self.waiting.append(item)
            return False
        self.running.add(item)
        return True

    def leave(self, item: T) -> list[T]:
        """`item` has ended: free its slot or its place in line; return those admitted now.

        Safe to call more than once for the same item.
        """
        if item not in self.running:
            with contextlib.suppress(ValueError):
                self.waiting.remove(item)
            return []
        self.running.discard(item)
        admitted: list[T] = []
        while self.waiting and len(self.running) < self.limit:
            admitted.append(nxt := self.waiting.popleft())
            self.running.add(nxt)
        return admitted
