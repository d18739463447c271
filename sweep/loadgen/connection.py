"""One kept-alive HTTP/1.1 connection as an asyncio `Protocol`, its replies parsed by `httptools`.

The load generator's own client (`sweep.loadgen.socket_client`) writes each request's bytes
itself and reads the reply here: `data_received` stamps every network read with the one clock
(`sweep.loadgen.clock`) as it returns, and `httptools` (llhttp, the C parser under uvloop and
uvicorn) undoes the chunked encoding in the same call, handing each piece of body with that
read's stamp to the request's `sink` (`sse.StreamState.feed`). No task wakes per chunk: the
request's coroutine is woken once, at `[DONE]` or at the reply's end, which is what made aiohttp's
per-read awaits the client's largest cost under bursts.

A `Reply` is what one request gets back: its status, the headers it keeps, an error body, and
how it ended. A connection carries one request at a time, as HTTP/1.1 without pipelining does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httptools

from sweep.loadgen.clock import now_s

# (bytes of the body, the time their read returned) -> True once the stream is over ([DONE]).
Sink = Callable[[bytes, float], bool]
# Lower-case names a reply keeps; the last two tell a body that ends with the connection.
KEPT_HEADERS = frozenset({b"x-cache", b"content-type", b"content-length", b"transfer-encoding"})


class Disconnected(ConnectionError):
    """The server closed the connection before the reply was complete."""


class Malformed(ConnectionError):
    """The bytes were not an HTTP/1.1 reply (a bad chunk size, a bad status line)."""


class Reply:
    """What one request got back, filled by its connection's callbacks.

    `answered` turns true at the first byte of the reply: a request whose connection closed
    before it was never taken by the server (`SocketClient`'s resend rule). `over` is set once
    the sink said `[DONE]`; `complete` at the end of the reply's body. `written` is when the
    request's last byte went to the kernel, and `on_written`, if set, is called with it.
    """

    __slots__ = (
        "sink", "status", "reason", "headers", "error_body", "answered", "over", "over_at",
        "complete", "error", "waiter", "at", "written", "on_written",
    )  # fmt: skip

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.status = 0
        self.reason = ""
        self.headers: dict[bytes, bytes] = {}
        self.error_body = bytearray()  # the body of a reply other than 200
        self.answered = False
        self.over = False
        self.over_at: float | None = None
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.at = 0.0  # the stamp of the read being parsed
        self.written: float | None = None
        self.on_written: Callable[[float], None] | None = None

    def wake(self) -> None:
        """Resolve the request's waiter, once."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def mark_written(self, at: float) -> None:
        """The request's bytes were all handed to the kernel at `at` (the first time counts)."""
        if self.written is None:
            self.written = at
            if self.on_written is not None:
                self.on_written(at)


class Connection(asyncio.Protocol):
    """A connection to one server; `reply` is the request it carries now, if any."""

    def __init__(self, on_lost: Callable[[Connection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reply: Reply | None = None
        self.uses = 0  # requests it has carried: a reused connection may be one being closed
        self.lost = False
        self._on_lost = on_lost

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport
        # Paused whenever a write leaves bytes behind, resumed once they are all in the
        # kernel's buffer: `resume_writing` is when a large request was fully sent.
        transport.set_write_buffer_limits(high=0)

    def pause_writing(self) -> None:  # noqa: D102
        pass  # `send` writes a request at once; only when it was all sent matters

    def resume_writing(self) -> None:  # noqa: D102
        if self.reply is not None:
            self.reply.mark_written(now_s())

    def data_received(self, data: bytes) -> None:  # noqa: D102
        reply = self.reply
        if reply is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        reply.at = now_s()  # the read's time, before any parsing
        reply.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            pass  # the callback kept its own error in `reply.error`
        except httptools.HttpParserError as exc:
            reply.error = Malformed(str(exc))
        if reply.error is not None:
            self.close()
            reply.wake()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.lost = True
        self._on_lost(self)
        reply = self.reply
        if reply is not None and not reply.complete and reply.error is None:
            if reply.status and _ends_with_connection(reply.headers):
                self.on_message_complete()  # HTTP/1.0's body, or 1.1's without a length
                return
            why = f" ({exc})" if exc else ""
            part = "body" if reply.status else "status line and headers"
            reply.error = Disconnected(f"the server closed the connection before the reply's end "
                                       f"(in its {part}){why}")  # fmt: skip
            reply.wake()

    # httptools callbacks
    def on_status(self, reason: bytes) -> None:  # noqa: D102
        self.reply.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:  # noqa: D102
        name = name.lower()
        if name in KEPT_HEADERS:
            self.reply.headers[name] = value

    def on_headers_complete(self) -> None:  # noqa: D102
        self.reply.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:  # noqa: D102
        reply = self.reply
        if reply.status != 200:
            reply.error_body += body
            return
        if reply.over or reply.error is not None:
            return  # what follows `[DONE]` is read to keep the connection, not parsed
        try:
            if reply.sink(body, reply.at):
                reply.over, reply.over_at = True, reply.at
                reply.wake()
        except Exception as exc:  # a malformed event: the request fails, the connection goes
            reply.error = exc
            raise

    def on_message_complete(self) -> None:  # noqa: D102
        reply = self.reply
        if reply.status == 200 and not reply.over and reply.error is None:
            try:
                reply.sink(b"\n", reply.at)  # a last line without its newline
            except Exception as exc:
                reply.error = exc
        reply.complete = True
        if not self.parser.should_keep_alive():
            self.close()
        reply.wake()

    # ours
    @property
    def idle(self) -> bool:
        """Whether it may carry a new request."""
        return not self.lost and self.reply is None

    def send(self, data: bytes, reply: Reply) -> None:
        """Write one request's bytes; its reply goes to `reply`, `reply.written` when sent."""
        self.reply = reply
        self.uses += 1
        self.transport.write(data)
        if not self.transport.get_write_buffer_size():  # all in the kernel's buffer already
            reply.mark_written(now_s())

    def release(self) -> bool:
        """End the current request; whether the connection may carry another."""
        reply, self.reply = self.reply, None
        if reply is None or not reply.complete or reply.error is not None:
            self.close()
            return False
        return not self.lost

    def close(self) -> None:
        """Close the socket now (pending bytes dropped); it carries no further request."""
        self.lost = True  # before `connection_lost`, which comes a loop turn later
        if self.transport is not None:
            self.transport.abort()


def _ends_with_connection(headers: dict[bytes, bytes]) -> bool:
    """Whether a reply's body is all it sends until it closes (no length, not chunked)."""
    return b"content-length" not in headers and b"transfer-encoding" not in headers
