"""What aiohttp saw of one attempt at a request, and whether a failed attempt may go out again.

`trace_config` is each session's `TraceConfig`. Its hooks write into the request's `Attempt` (the
`trace_request_ctx`): the time the body reached the socket, moved onto the tracker's `sent` so
that a send is timed without the work of building it, and whether the attempt went out on a
pooled connection.

A server closes a pooled connection it has kept idle for its keep-alive time (uvicorn's, under
vLLM and SGLang, is 5 s), and aiohttp's pool hands out its oldest idle connection first: one the
server is closing at that very moment can be picked. The request then fails with `Connection
reset by peer`, `Can not write request body` or `Server disconnected`, although the server never
took it: 1 of 1,500 requests at 15 req/s against a 50 ms keep-alive here, and 1 of a parity run's
400 against vLLM at 2 req/s. `Attempt.stale` tells that failure apart: a connection error on a
reused connection before any byte of an answer. `stream_one` then sends the request again, from
its own scheduled time, so the lost attempt shows in its send lag; a request that fails so on a
new connection, or after its answer began, is not sent again.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from sweep.loadgen.clock import now_s
from sweep.loadgen.recorder import RequestTracker

# The errors of a connection that the server closed under the request (ClientOSError covers
# `Connection reset by peer` and `Can not write request body`).
CLOSED_UNDER_US = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class Attempt:
    """One try at sending a request: whether its connection was reused and its answer began.

    `on_sent`, if set, is called as the body goes to the socket (a cancellation's timer).
    """

    __slots__ = ("tracker", "reused", "answered", "on_sent")

    def __init__(self, tracker: RequestTracker) -> None:
        self.tracker = tracker
        self.reused = False  # set by aiohttp's hook when the pool handed out an open connection
        self.answered = False  # set by `http._attempt` once the response's status line arrived
        self.on_sent: Callable[[], None] | None = None

    def stale(self, exc: BaseException) -> bool:
        """Whether `exc` is a pooled connection the server closed before it took the request."""
        return self.reused and not self.answered and isinstance(exc, CLOSED_UNDER_US)


def trace_config() -> aiohttp.TraceConfig:
    """Hooks that fill each request's `Attempt`: the socket write, the connection's reuse.

    The write's stamp matters because on Python < 3.12 aiohttp writes the body from a task of
    its own, one loop turn after the call; under load that turn, not the server, would
    otherwise be the largest part of TTFT.
    """

    async def on_chunk_sent(session: object, context: object, params: object) -> None:
        if isinstance(attempt := context.trace_request_ctx, Attempt):
            attempt.tracker.sent = now_s()
            if attempt.on_sent is not None:
                attempt.on_sent()

    async def on_reuse(session: object, context: object, params: object) -> None:
        if isinstance(attempt := context.trace_request_ctx, Attempt):
            attempt.reused = True

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(on_chunk_sent)
    trace.on_connection_reuseconn.append(on_reuse)
    return trace
