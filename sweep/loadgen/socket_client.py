"""The load generator's own HTTP/1.1 client: request bytes written by hand, replies parsed in C.

`SocketClient` keeps a pool of `sweep.loadgen.connection.Connection`s to one server (http or
https) and streams a request over one: it builds the request's bytes (the endpoint's headers,
its own `X-Request-Id`), stamps `sent` and writes them, and waits once for the reply while
the connection's protocol hands each read's body, stamped at the read, to the request's
`sse.StreamState`. Replies end as `http.stream_one` expects: the stream, `RequestFailed` with
the same one-line reasons aiohttp's path gives (`connection_error:`, `disconnect:`,
`timeout:`, `http_error:` through `http_error.error_line`), or an `EventError`.

A request lost to a pooled connection the server was closing (closed before any byte of an
answer) goes out again on another, up to `http_error.MAX_RESENDS` times, as aiohttp's path does
(`sweep.loadgen.wire`). The pool hands out the connection used last: the one least likely to
be at the end of the server's keep-alive. No proxy is used (aiohttp's path, without
`trust_env`, uses none either); credentials in the URL go as HTTP Basic auth.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from backends.base import COUNT_CHUNKS
from sweep.core import records as R
from sweep.core.errors import ConfigError
from sweep.loadgen.cancel import Cancelled, CancelRule
from sweep.loadgen.clock import now_s
from sweep.loadgen.connection import Connection, Disconnected, Malformed, Reply, Sink
from sweep.loadgen.http_error import (
    MAX_RESENDS,
    RequestFailed,
    TimedOut,
    endpoint_secrets,
    error_line,
)
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.sse import DRAIN_S, StreamState
from sweep.loadgen.wakeup import sleep_until

CACHE_ANSWERS = {b"hit": True, b"miss": False}  # a semantic-cache proxy's `X-Cache` header
CACHE_HEADER = R.CACHE_HEADER.lower().encode()


class _Stale(Exception):
    """A reused connection closed before any byte of an answer: the server never took it."""


class SocketClient:
    """Connections to one endpoint's server; `stream` sends one request over one of them."""

    def __init__(self, endpoint: object, timeout_s: float | None, limit: int | None = None) -> None:
        """`limit` is not enforced: the modes bound the requests in flight, one per connection."""
        url = urlsplit(endpoint.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"the load generator's client needs an http(s) URL, got {url!r}")
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.one_per_chunk = endpoint.token_counts == COUNT_CHUNKS
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.path = url.path + (f"?{url.query}" if url.query else "")
        default = 443 if self.ssl else 80
        authority = self.host if self.port == default else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal
            authority = f"[{self.host}]" if self.port == default else f"[{self.host}]:{self.port}"
        head = {"Host": authority, "Content-Type": "application/json", "Accept": "*/*"}
        if url.username is not None:
            pair = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
            head["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        head.update(endpoint.headers)
        self._head = _header_lines(head)
        self._authority = authority
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()

    async def __aenter__(self) -> SocketClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()

    async def open_pool(self, url: str, count: int) -> None:
        """Have `count` connections open and idle before the measured load (`http.open_pool`)."""
        request = f"GET {urlsplit(url).path or '/'} HTTP/1.1\r\n".encode() + self._head + b"\r\n"

        async def one() -> None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.exchange(request, _ignore, fresh=True)
            except (RequestFailed, TimeoutError):
                pass  # left for the requests to report

        await asyncio.gather(*(one() for _ in range(count)))

    def post(self, data: bytes, rid: str) -> bytes:
        """The bytes of a POST of `data` to the endpoint, with its request id."""
        return b"".join((
            f"POST {self.path} HTTP/1.1\r\nX-Request-Id: {rid}\r\n".encode(), self._head,
            f"Content-Length: {len(data)}\r\n\r\n".encode(), data,
        ))  # fmt: skip

    async def stream(
        self,
        data: bytes,
        rid: str,
        tracker: RequestTracker,
        scheduled: float,
        cancel: CancelRule | None = None,
    ) -> StreamState:
        """Send one request and read its stream into `tracker`; `cancel`: close it on purpose.

        Raises:
            RequestFailed: it failed; the message is its one-line reason (`TimedOut` after
                `timeout_s`).
            EventError: the stream carried a malformed or error event.
            Cancelled: `cancel` closed it (`sweep.loadgen.cancel`).
        """
        request = self.post(data, rid)
        cut = None if cancel is None else cancel.cut_tokens
        delay_s = None if cancel is None else cancel.cut_delay_s
        try:
            async with asyncio.timeout(self.timeout_s):
                for resend in range(MAX_RESENDS + 1):
                    stream = StreamState(self.endpoint.api, tracker, self.one_per_chunk, cut)
                    tracker.mark_sent(scheduled, now_s())
                    reply, reused = await self.exchange(request, stream.feed, tracker, delay_s)
                    try:
                        return self._outcome(reply, stream, reused)
                    except _Stale as exc:
                        if resend == MAX_RESENDS:
                            raise RequestFailed(f"disconnect: Disconnected: {exc}") from None
        except TimeoutError:
            elapsed = now_s() - tracker.sent
            raise TimedOut(
                f"timeout: TimeoutError after {elapsed:.1f} s (limit {self.timeout_s:g} s)"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def exchange(
        self,
        request: bytes,
        sink: Sink,
        tracker: RequestTracker | None = None,
        cancel_delay_s: float | None = None,
        fresh: bool = False,
    ) -> tuple[Reply, bool]:
        """Write `request` on a pooled connection (a new one if `fresh` or none is idle).

        The reply's body goes to `sink` read by read; `tracker.sent`, if given, is stamped just
        before the write. Returns the reply once it is complete, failed, or over (`[DONE]`,
        after up to `DRAIN_S` more for the body's end), and whether the connection had carried
        a request. With `cancel_delay_s`, a reply not over that long after the request was
        fully sent ends with `Cancelled` as its error, its connection closed (`_DelayCut`).

        Raises:
            RequestFailed: no connection could be opened.
        """
        conn = None if fresh else self._take()
        if conn is None:
            try:
                conn = await self._connect()
            except OSError as exc:
                raise RequestFailed(
                    f"connection_error: Cannot connect to host {self._authority}: {exc}"
                ) from None
        reply = Reply(sink)
        reply.waiter = asyncio.get_running_loop().create_future()
        reused = conn.uses > 0
        cut = None if cancel_delay_s is None else _DelayCut(conn, reply, cancel_delay_s)
        try:
            if tracker is not None:  # before the write: time lost after it (this thread
                tracker.sent = now_s()  # descheduled as the server wakes) is the request's
            conn.send(request, reply)
            await reply.waiter
            if reply.status == 200 and reply.over and not reply.complete:
                reply.waiter = asyncio.get_running_loop().create_future()
                try:  # read to the body's end so that the connection can be kept
                    async with asyncio.timeout(DRAIN_S):
                        await reply.waiter
                except TimeoutError:
                    pass
        finally:
            if cut is not None:
                cut.stop()
            if conn.release():
                self._idle.append(conn)
        return reply, reused

    def _outcome(self, reply: Reply, stream: StreamState, reused: bool) -> StreamState:
        """The stream of a finished reply, or the reason it failed."""
        tracker = stream.tracker
        if reply.status == 200:
            tracker.cache_hit = CACHE_ANSWERS.get(reply.headers.get(CACHE_HEADER))
        if reply.status == 200 and reply.over:
            tracker.closed = reply.over_at
            return stream  # whatever happened to the body after `[DONE]`
        error = reply.error
        if isinstance(error, Disconnected) and reused and not reply.answered:
            raise _Stale(str(error))
        if error is not None and not isinstance(error, Disconnected | Malformed):
            raise error  # an EventError from the stream
        if error is not None:
            raise RequestFailed(f"disconnect: {type(error).__name__}: {error}")
        if reply.status != 200:
            text = reply.error_body.decode("utf-8", "replace").strip() or reply.reason
            raise RequestFailed(error_line(reply.status, text, endpoint_secrets(self.endpoint)))
        tracker.closed = reply.at
        return stream

    def _take(self) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()  # the one used last
            if conn.idle:
                return conn
        return None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        server_hostname = self.host if self.ssl else None
        _, conn = await loop.create_connection(
            lambda: Connection(self._open.discard), self.host, self.port,
            ssl=self.ssl, server_hostname=server_hostname,
        )  # fmt: skip
        self._open.add(conn)
        return conn


class _DelayCut:
    """Closes a request's connection `delay_s` after its last byte was written (AIPerf's T2).

    The timer starts at `Reply.written`; it wakes to a tenth of a millisecond
    (`wakeup.sleep_until`). A reply already over, complete or failed by then is left alone.
    """

    def __init__(self, conn: Connection, reply: Reply, delay_s: float) -> None:
        self.conn, self.reply, self.delay_s = conn, reply, delay_s
        self.task: asyncio.Task | None = None
        reply.on_written = self.start

    def start(self, written: float) -> None:
        """Arm the cut at `written` + `delay_s`."""
        self.task = asyncio.get_running_loop().create_task(self._cut(written + self.delay_s))

    def stop(self) -> None:
        """Disarm it: the exchange is over."""
        if self.task is not None:
            self.task.cancel()

    async def _cut(self, at: float) -> None:
        await sleep_until(at)
        reply = self.reply
        if reply.over or reply.complete or reply.error is not None:
            return
        reply.error = Cancelled(now_s(), f"{self.delay_s:g} s after it was sent")
        self.conn.close()
        reply.wake()


def _ignore(body: bytes, at: float) -> bool:
    return False


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """`Name: value` lines; a name or value that would break the request is refused."""
    lines = []
    for name, value in headers.items():
        if any(c in f"{name}{value}" for c in "\r\n\0") or ":" in name:
            raise ConfigError(f"header {name!r}: a name or value with a line break or ':'")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"headers: a character HTTP/1.1 headers cannot carry: {exc}") from None
