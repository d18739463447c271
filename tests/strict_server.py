"""A strict OpenAI-compatible test server: 400 to any body field it does not know, as OpenAI does.

It serves `GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions` on 127.0.0.1
(a free port, its own event loop in a thread) and streams standard chunks: `tokens_per_chunk`
words each, a `finish_reason` on the last, then a usage-only chunk when `stream_options` asks
for it, never per-chunk usage. An unknown field, top level or inside `stream_options`, gets
OpenAI's error object naming it in `param`. Options: headers every request must carry (401
otherwise), chat refusing `max_tokens` as newer OpenAI models do, an end of sequence after
`eos_after` tokens, `vllm=True` to take vLLM's `ignore_eos` and per-chunk usage as vLLM's
server does, `echo=True` to quote a refused value back, `close_after` seconds between the
last token and the end of the stream (a busy server's), `hold_after_done` seconds of an open
stream after `[DONE]`, `keepalive_s` before an idle connection is closed, and `drop` to close
a connection under a request, unanswered (on a reused connection, or always). Every request's
headers and body are kept, to check what arrived.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

from aiohttp import web

from backends.process.launcher import free_port

MODEL = "strict-model"
COMMON = {
    "model", "stream", "stream_options", "temperature", "top_p", "n", "stop", "seed", "user",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "max_tokens",
}  # fmt: skip
KNOWN = {
    "completions": COMMON | {"prompt", "echo", "best_of", "suffix"},
    "chat": COMMON | {"messages", "max_completion_tokens", "metadata", "response_format"},
}
STREAM_OPTIONS = {"include_usage"}
VLLM_FIELDS = {"ignore_eos"}
VLLM_STREAM_OPTIONS = {"continuous_usage_stats"}


@dataclass
class Seen:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: dict
    dropped: bool = False  # closed unanswered (`StrictServer.drop`)


@dataclass
class StrictServer:
    """The server's options and what it has seen; `url` once started."""

    required_headers: dict[str, str] = field(default_factory=dict)
    tokens_per_chunk: int = 1
    refuse_max_tokens: bool = False  # chat: "Use 'max_completion_tokens' instead"
    eos_after: int | None = None  # the model's own end, unless ignore_eos (vllm only)
    vllm: bool = False  # takes ignore_eos and continuous_usage_stats
    echo: bool = False  # quote a refused field's value in the error, as pydantic's `input` does
    hold_after_done: float = 0.0  # seconds the stream stays open after `data: [DONE]`
    close_after: float = 0.0  # seconds between the last token and the usage chunk / `[DONE]`
    keepalive_s: float = 75.0  # an idle connection is closed after this (aiohttp's default)
    # "reused": a request on a connection that carried one before is dropped unanswered (the
    # connection closed), as when a server closes an idle connection as it is picked; "all":
    # every generation request is dropped so
    drop: str | None = None
    _carried: list = field(default_factory=list, repr=False)  # transports that carried one
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def models(self, request: web.Request) -> web.Response:
        """`GET /v1/models`, behind the same header check."""
        self._carries(request)
        if (denied := self._check_headers(request)) is not None:
            return denied
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/completions`."""
        return await self._serve(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`."""
        return await self._serve(request, "chat")

    async def _serve(self, request: web.Request, api: str) -> web.StreamResponse:
        body = await request.json()
        reused = self._carries(request)
        if self.drop == "all" or (self.drop == "reused" and reused):
            self.seen.append(Seen(request.path, dict(request.headers), body, dropped=True))
            request.transport.abort()
            return web.Response()  # to a closed connection: never arrives
        self.seen.append(Seen(request.path, dict(request.headers), body))
        if (denied := self._check_headers(request)) is not None:
            return denied
        if (refused := self._check_body(body, api)) is not None:
            return refused
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        length = cap
        if self.eos_after is not None and not body.get("ignore_eos"):
            length = min(cap, self.eos_after)
        options = body.get("stream_options") or {}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if api == "chat" else "text_completion"
        head = {"id": "cmpl-1", "object": obj, "created": 0, "model": body["model"]}
        sent = 0
        while sent < length:
            k = min(self.tokens_per_chunk, length - sent)
            text = "".join(f" t{sent + i}" for i in range(k))
            sent += k
            reason = None if sent < length else ("length" if sent == cap else "stop")
            choice = {"index": 0, "finish_reason": reason}
            choice.update({"delta": {"content": text}} if api == "chat" else {"text": text})
            event = {**head, "choices": [choice]}
            if options.get("continuous_usage_stats"):
                event["usage"] = _usage(sent)
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            await asyncio.sleep(0.001)
        await asyncio.sleep(self.close_after)
        if options.get("include_usage"):
            event = {**head, "choices": [], "usage": _usage(sent)}
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await asyncio.sleep(self.hold_after_done)
        return resp

    def _carries(self, request: web.Request) -> bool:
        """Note the request's connection; whether it carried a request before."""
        transport = request.transport
        reused = any(t is transport for t in self._carried)
        self._carried.append(transport)
        return reused

    def _check_headers(self, request: web.Request) -> web.Response | None:
        for name, value in self.required_headers.items():
            if request.headers.get(name) != value:
                return _error(401, f"missing or wrong header {name}", None, "invalid_api_key")
        return None

    def _check_body(self, body: dict, api: str) -> web.Response | None:
        known = KNOWN[api] | (VLLM_FIELDS if self.vllm else set())
        for name in body:
            if name not in known:
                value = f" (value {json.dumps(body[name])})" if self.echo else ""
                return _error(400, f"Unrecognized request argument supplied: {name}{value}", name)
        stream_known = STREAM_OPTIONS | (VLLM_STREAM_OPTIONS if self.vllm else set())
        for name in body.get("stream_options") or {}:
            if name not in stream_known:
                param = f"stream_options.{name}"
                return _error(400, f"Unrecognized request argument supplied: {param}", param)
        if api == "chat" and self.refuse_max_tokens and "max_tokens" in body:
            return _error(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        return None

    def bodies(self) -> list[dict]:
        """The bodies of the generation requests seen so far."""
        return [s.body for s in self.seen]


def _usage(completion: int) -> dict:
    return {"prompt_tokens": 2, "completion_tokens": completion, "total_tokens": 2 + completion}


def _error(status: int, message: str, param: str | None, code: str | None = None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


class Running:
    """A `StrictServer` served from its own thread and event loop until `stop`."""

    def __init__(self, server: StrictServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        app = web.Application()
        app.add_routes(
            [
                web.get("/v1/models", server.models),
                web.post("/v1/completions", server.completions),
                web.post("/v1/chat/completions", server.chat),
            ]
        )
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=server.keepalive_s)
        port = free_port()
        self.thread.start()
        self._call(self.runner.setup())
        self._call(web.TCPSite(self.runner, "127.0.0.1", port).start())
        server.url = f"http://127.0.0.1:{port}"

    def _call(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def stop(self) -> None:
        """Close the server, then its loop and thread."""
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
