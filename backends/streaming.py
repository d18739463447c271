"""Token bookkeeping that every in-process engine shares: exact counts and the batch loop.

`TokenCounter` turns an engine's per-step token ids into the contract's `on_token` calls: it
counts each request's tokens, stops a request at its own `max_tokens`, and, when EOS is not
ignored, ends it at EOS without counting the EOS token (as servers do). Engines tell it which row
a token belongs to; it tells them when a row is done, so engines that generate a batch to the
longest limit can stop or drop the rows that already have enough. `one_at_a_time` is the batch
loop of engines that serve one sequence at a time (llama.cpp's binding, HF's `per_request`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from backends.base import GenRequest, GenResult, TokenCallback


class TokenCounter:
    """Counts the new tokens of one batch, row by row, and forwards them to the callback."""

    def __init__(
        self, requests: Sequence[GenRequest], eos_ids: Iterable[int], on_token: TokenCallback
    ) -> None:
        self.requests = list(requests)
        self.eos_ids = frozenset(eos_ids)
        self.on_token = on_token
        self.counts = [0] * len(self.requests)
        self.done = [request.max_tokens <= 0 for request in self.requests]

    def add(self, row: int, token_id: int) -> bool:
        """Record one new token of `row`; returns True once the row needs no more tokens."""
        if self.done[row]:
            return True
        request = self.requests[row]
        if not request.ignore_eos and token_id in self.eos_ids:
            self.done[row] = True
            return True
        self.counts[row] += 1
        self.on_token(request.idx, 1)
        if self.counts[row] >= request.max_tokens:
            self.done[row] = True
        return self.done[row]

    @property
    def all_done(self) -> bool:
        """Every row has its tokens (or met EOS)."""
        return all(self.done)

    @property
    def longest(self) -> int:
        """The largest `max_tokens` of the batch: how far a batch-at-once engine must run."""
        return max(request.max_tokens for request in self.requests)

    def results(self) -> list[GenResult]:
        """The engine-side counts, one per request, in request order."""
        return [
            GenResult(request.idx, count)
            for request, count in zip(self.requests, self.counts, strict=True)
        ]


def one_at_a_time(
    requests: Sequence[GenRequest], generate: Callable[[Sequence[GenRequest]], list[GenResult]]
) -> list[GenResult]:
    """Serve a batch as consecutive single requests: no inter-request batching at all.

    Every request after the first waits for all earlier ones, so its TTFT includes their whole
    generation time: that is what such an engine really does with concurrent requests.
    """
    results: list[GenResult] = []
    for request in requests:
        results.extend(generate([request]))
    return results
