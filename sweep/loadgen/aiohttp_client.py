"""The load generator's HTTP client on aiohttp (`workload.http_client: aiohttp`).

One `ClientSession` per trial; its connector allows as many connections as the concurrency cap
(unlimited without one). `AiohttpClient` gives `sweep.loadgen.http.stream_one` what
`sweep.loadgen.socket_client.SocketClient` gives it (`open_pool`, `stream`), with the same
one-line failures. Each network read of a body is stamped as its `iter_any` returns, which is
one loop turn after the read: the default client (`socket_client`) stamps in the read's own
callback and costs a fraction of this one's CPU per request (docs/benchmarks.md); this one stays
for what only aiohttp does (its proxy and connector machinery).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from backends.base import COUNT_CHUNKS
from sweep.core import records as R
from sweep.loadgen.cancel import Cancelled, CancelRule
from sweep.loadgen.clock import now_s
from sweep.loadgen.http_error import (
    MAX_RESENDS,
    RequestFailed,
    TimedOut,
    endpoint_secrets,
    error_line,
)
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.sse import DRAIN_S, StreamState
from sweep.loadgen.wire import Attempt, trace_config

log = logging.getLogger(__name__)

CACHE_ANSWERS = {"hit": True, "miss": False}  # a semantic-cache proxy's `X-Cache` header


class AiohttpClient:
    """One aiohttp session to one endpoint; `stream` sends one request on it."""

    def __init__(self, endpoint: object, timeout_s: float | None, limit: int | None) -> None:
        self.endpoint = endpoint
        self.one_per_chunk = endpoint.token_counts == COUNT_CHUNKS
        self._timeout = timeout_s
        self._limit = limit or 0
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpClient:
        # Total only: a read timeout as long would never fire first, yet re-arms a timer per chunk.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers=dict(self.endpoint.headers) or None,
            trace_configs=[trace_config()],
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def open_pool(self, url: str, count: int) -> None:
        """Have `count` connections open in the session's pool (`http.open_pool`)."""

        async def get() -> None:
            try:
                async with self.session.get(url) as resp:
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                pass

        await asyncio.gather(*(get() for _ in range(count)))

    async def stream(
        self,
        data: bytes,
        rid: str,
        tracker: RequestTracker,
        scheduled: float,
        cancel: CancelRule | None = None,
    ) -> StreamState:
        """Send one request and read its stream into `tracker`; `cancel`: close it on purpose.

        A request lost to a pooled connection the server was closing (`wire.Attempt.stale`)
        goes out again, up to `MAX_RESENDS` times, its send lag counting from the same
        scheduled time.

        Raises:
            RequestFailed: it failed; the message is its one-line reason (`TimedOut` after
                `timeout_s`).
            EventError: the stream carried a malformed or error event.
            Cancelled: `cancel` closed it (`sweep.loadgen.cancel`).
        """
        headers = {"Content-Type": "application/json", "X-Request-Id": rid}
        try:
            for resend in range(MAX_RESENDS + 1):
                attempt = Attempt(tracker)
                try:
                    return await self._cancellable(data, headers, attempt, scheduled, cancel)
                except aiohttp.ClientError as exc:
                    if resend == MAX_RESENDS or not attempt.stale(exc):
                        raise
                    log.info("request %s: sent again, its pooled connection was closed: %s",
                             rid, exc)  # fmt: skip
        except TimeoutError as exc:
            elapsed = now_s() - tracker.sent
            raise TimedOut(
                f"timeout: {type(exc).__name__} after {elapsed:.1f} s (limit {self._timeout:g} s)"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise RequestFailed(f"connection_error: {exc}") from None
        except aiohttp.ClientError as exc:
            raise RequestFailed(f"disconnect: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _cancellable(
        self,
        data: bytes,
        headers: dict[str, str],
        attempt: Attempt,
        scheduled: float,
        cancel: CancelRule | None,
    ) -> StreamState:
        """`_attempt`, closed `cancel.cut_delay_s` after its body went to the socket, if set.

        The timer starts at aiohttp's hook for the body's write (`wire.trace_config`), just
        before the bytes go, and wakes to the millisecond (asyncio's timer).
        """
        delay_s = None if cancel is None else cancel.cut_delay_s
        cut = None if cancel is None else cancel.cut_tokens
        if delay_s is None:
            return await self._attempt(data, headers, attempt, scheduled, cut)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as window:

                def arm() -> None:  # once: the first write of the body
                    if window.when() is None:
                        window.reschedule(loop.time() + delay_s)

                attempt.on_sent = arm
                return await self._attempt(data, headers, attempt, scheduled, cut)
        except TimeoutError:
            if window.expired():  # ours, not the session's `timeout_s`
                raise Cancelled(now_s(), f"{delay_s:g} s after it was sent") from None
            raise

    async def _attempt(
        self,
        data: bytes,
        headers: dict[str, str],
        attempt: Attempt,
        scheduled: float,
        cut: int | None = None,
    ) -> StreamState:
        """Send once and read the stream into the tracker; its connection closed if cut short."""
        tracker = attempt.tracker
        stream = StreamState(self.endpoint.api, tracker, self.one_per_chunk, cut)
        tracker.mark_sent(scheduled, now_s())  # moved to the socket write by `wire.trace_config`
        async with self.session.post(
            self.endpoint.url, data=data, headers=headers, trace_request_ctx=attempt
        ) as resp:
            attempt.answered = True
            if resp.status != 200:
                text = (await resp.text(errors="replace")).strip()
                # A server may echo the body back: the values read from the environment go.
                secrets = endpoint_secrets(self.endpoint)
                raise RequestFailed(error_line(resp.status, text or str(resp.reason), secrets))
            tracker.cache_hit = CACHE_ANSWERS.get(resp.headers.get(R.CACHE_HEADER, ""))
            try:
                await _read(resp, stream)
            except (Cancelled, asyncio.CancelledError):
                resp.close()  # the connection goes with it: the server sees the client leave
                raise
        return stream


async def _read(resp: aiohttp.ClientResponse, stream: StreamState) -> None:
    """Read the body into `stream`, whole network reads split here (half the awaits of lines)."""
    tracker = stream.tracker
    async for chunk in resp.content.iter_any():
        at = now_s()
        if stream.feed(chunk, at):
            tracker.closed = at
            await _drain(resp)
            return
    stream.feed(b"\n")  # a last line without its newline
    tracker.closed = now_s()


async def _drain(resp: aiohttp.ClientResponse) -> None:
    """Read what follows `[DONE]` (the body's end), so that its connection goes back to the pool.

    aiohttp closes the connection of a response released before its end: leaving at `[DONE]`
    made the next request open a new one whenever the body's last bytes came in a read of their
    own (2 of 48 requests of a closed loop against the sim). A server that keeps the stream
    open after `[DONE]` gets `DRAIN_S`, then loses the connection, not the request.
    """
    if resp.content.at_eof():
        return
    try:
        async with asyncio.timeout(DRAIN_S):  # a timer, not a task as `wait_for` makes
            await resp.content.read()
    except (TimeoutError, aiohttp.ClientError):
        pass
