"""When a request's first bytes reached the sim server: its arrival, not its handler's start.

aiohttp reads and parses requests in its protocol's `data_received` and runs each handler later, as
a task of the one event loop. Under a burst (hundreds of requests a second in a replayed trace at
4x) a handler starts after the handlers queued before it, so an arrival stamped there adds the
server's own queue to what the client is judged by. The listening socket's protocols are wrapped
here (`ArrivalStamps.factory`): each connection notes when the first bytes of its next request
came, and the request's handler takes that stamp (`take`). HTTP/1.1 sends a connection's next
request only once the response to the one before has been read, so each stamp belongs to one
request; a client pipelining two requests gets the second one stamped at its handler's start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class ArrivalStamps:
    """First-byte times (`time.perf_counter_ns`) of the requests not yet handled, by connection."""

    def __init__(self) -> None:
        self._first: dict[Any, int] = {}

    def factory(self, protocols: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server`: `protocols`' protocols, stamping reads."""
        return lambda: _Stamping(protocols(), self._first)

    def take(self, transport: Any) -> int:
        """The arrival of `transport`'s request now being handled (now, where none was noted)."""
        stamp = self._first.pop(transport, None) if transport is not None else None
        return time.perf_counter_ns() if stamp is None else stamp

    def __len__(self) -> int:
        return len(self._first)


class _Stamping(asyncio.Protocol):
    """One connection's protocol (aiohttp's request handler), its requests' first reads stamped."""

    def __init__(self, inner: asyncio.Protocol, first: dict[Any, int]) -> None:
        self.inner, self.first, self.transport = inner, first, None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.transport not in self.first:
            self.first[self.transport] = time.perf_counter_ns()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.first.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
