"""Which requests the client cancels, and when: `workload.cancel_rate`, as AIPerf does it.

A share of the measured requests (`cancel_rate`, rounded to whole requests) is chosen up front
from `workload.seed`, so a trial run again cancels the same requests. Each chosen request is sent
whole, then its connection is closed, which the server sees as a client disconnect:

- `delay`: `cancel_delay_s` after the request was fully sent (AIPerf's timer: its last byte
  handed to the socket; 0 closes it at once, while the server is still reading or prefilling);
- `first_token`: as soon as the read that brought its first output token is parsed;
- `tokens`: once `cancel_after_tokens` output tokens arrived (a chunk of several tokens may
  carry it past the count: it is cut at the first chunk that reaches it).

A request that ends before its cut (a short answer, an error) is recorded as it ended: only one
the client closed is `cancelled`. Both clients cut the same way (`socket_client`,
`aiohttp_client`): the token rules in `sse.StreamState.feed`, event by event, so events after the
cut in the same read are never counted; the delay by a timer started at the send.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DELAY = "delay"
FIRST_TOKEN = "first_token"
TOKENS = "tokens"
# Mixed into the seed, so the choice is not the arrival schedule's draws (same `seed`).
SEED_STREAM = 0xCA7CE1


class Cancelled(Exception):
    """The client closed a request on purpose (`RequestTracker.cancel`); `at`: when, `now_s`."""

    def __init__(self, at: float, why: str) -> None:
        """`why` says which rule cut it, e.g. `after 3 output tokens`."""
        super().__init__(why)
        self.at = at


@dataclass(frozen=True)
class CancelRule:
    """When one chosen request is closed (`workload.cancel_after` and its value)."""

    after: str
    delay_s: float = 0.0
    tokens: int = 1

    @property
    def cut_tokens(self) -> int | None:
        """The output tokens at which its stream is cut; None: a delay cuts it."""
        if self.after == FIRST_TOKEN:
            return 1
        return self.tokens if self.after == TOKENS else None

    @property
    def cut_delay_s(self) -> float | None:
        """Seconds after the request was fully sent at which it is cut; None: tokens cut it."""
        return self.delay_s if self.after == DELAY else None


def chosen(count: int, rate: float, seed: int) -> frozenset[int]:
    """The indexes in `range(count)` to cancel: `rate` of them, rounded half up, from `seed`."""
    size = min(count, math.floor(rate * count + 0.5))
    if size <= 0:
        return frozenset()
    rng = np.random.default_rng([seed, SEED_STREAM])
    return frozenset(int(i) for i in rng.choice(count, size=size, replace=False))


def cancel_rules(workload: object, count: int) -> dict[int, CancelRule]:
    """Each cancelled request's rule, by its index among the `count` measured requests."""
    rate = workload.cancel_rate
    if not rate:
        return {}
    rule = CancelRule(
        workload.cancel_after, workload.cancel_delay_s, workload.cancel_after_tokens or 1
    )
    return dict.fromkeys(sorted(chosen(count, rate, workload.seed)), rule)
