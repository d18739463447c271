"""The proxy process between the load generator and a server: clipping and a semantic cache.

Run as `python -m backends.proxy.server --port N --upstream URL --config JSON [--tokenizer DIR]`
(the config is a `proxy` group's dataclass as JSON; `backends.proxy.launch` starts it). It
serves `POST /v1/completions` and `POST /v1/chat/completions`: the body is clipped
(`backends.proxy.clip`); then, for a streamed request with `proxy=semantic_cache`, the prompt is
embedded and looked up (`backends.proxy.cache`): a hit is answered from the cache at the
configured speed (`backends.proxy.stream.replay`), a miss is forwarded and the server's stream
goes back through unchanged while it is recorded and cached. Every response says which in its
`X-Cache` header (`hit`, `miss`, or `bypass` for a request the cache does not handle). Any
other path is forwarded as it is. `GET /metrics` holds the proxy's own counters (hits, misses,
clipped requests, entries) and its lookup latency histogram (embedding and search);
`POST /proxy/reset` empties the cache between trials; `GET /health` answers 200 once it listens.
A setting or model that cannot be used ends the process before it listens with one line,
`proxy error: ...`, in its log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from backends.proxy.cache import Answer, SemanticCache, prompt_text
from backends.proxy.clip import Counter as TokenCounter
from backends.proxy.clip import Limits, clip_body
from backends.proxy.embedder import Embedder, EmbedderError, load_embedder
from backends.proxy.stream import AnswerRecorder, replay
from sweep.core import records as R
from sweep.core.errors import SweepError
from sweep.core.proxy_configs import ClipProxyConfig, SemanticCacheProxyConfig

CONFIGS = {"clip": ClipProxyConfig, "semantic_cache": SemanticCacheProxyConfig}
# Headers that belong to one connection, or that aiohttp sets itself for the new one.
_HOP_BY_HOP = {
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "host", "content-length",
    "accept-encoding",  # the stream is read on its way through: it must come uncompressed
}  # fmt: skip
# Lookups take tens of microseconds (hashing) to tens of milliseconds (a transformer on CPU).
LOOKUP_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


class Proxy:
    """Request handlers, the cache and the proxy's metrics."""

    def __init__(
        self,
        upstream: str,
        config: ClipProxyConfig,
        counter: TokenCounter,
        embedder: Embedder | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.config = config
        self.counter = counter
        self.embedder = embedder
        self.limits = Limits(
            config.max_input_tokens, config.max_output_tokens, config.truncation_side
        )
        self.cache = None
        if embedder is not None:  # proxy=semantic_cache
            self.cache = SemanticCache(embedder.dim, config.threshold, config.max_entries)
        self.session: aiohttp.ClientSession | None = None
        reg = self.registry = CollectorRegistry()
        self.hits = Counter("proxy:cache_hits", "Requests answered from the cache", registry=reg)
        self.misses = Counter("proxy:cache_misses", "Requests forwarded on a miss", registry=reg)
        self.entries = Gauge("proxy:cache_entries", "Answers in the cache", registry=reg)
        self.lookup = Histogram(
            "proxy:cache_lookup_seconds",
            "Embedding and search time of a lookup",
            buckets=LOOKUP_BUCKETS,
            registry=reg,
        )
        self.clipped_inputs = Counter("proxy:clipped_inputs", "Prompts cut", registry=reg)
        self.clipped_outputs = Counter("proxy:clipped_outputs", "Output caps lowered", registry=reg)

    async def open(self, app: web.Application):
        """One client session to the server for the proxy's lifetime (cleanup context)."""
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.session = session
            yield

    async def health(self, request: web.Request) -> web.Response:
        """200 once the proxy listens."""
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text of the proxy's own counters and lookup latency."""
        self.entries.set(0 if self.cache is None else len(self.cache))
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def reset(self, request: web.Request) -> web.Response:
        """Empty the cache."""
        if self.cache is not None:
            self.cache.clear()
        return web.Response(text="reset")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/completions`."""
        return await self._generate(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`."""
        return await self._generate(request, "chat")

    async def _generate(self, request: web.Request, api: str) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            return _error(400, f"proxy: bad request: {exc}")
        clipped = clip_body(body, api, self.limits, self.counter)
        self.clipped_inputs.inc(int(clipped.input_clipped))
        self.clipped_outputs.inc(int(clipped.output_clipped))
        body = clipped.body
        text = prompt_text(body, api, self.counter) if self.cache is not None else None
        if text is None or not body.get("stream"):
            return await self._forward(request, json.dumps(body).encode(), "bypass")
        start = time.perf_counter()
        vector = await asyncio.to_thread(self.embedder.embed, text)
        answer, _ = self.cache.lookup(vector)
        self.lookup.observe(time.perf_counter() - start)
        if answer is not None:
            self.hits.inc()
            return await self._replay(request, answer, body, api)
        self.misses.inc()
        recorder = AnswerRecorder(api)
        data = json.dumps(body).encode()
        return await self._forward(request, data, "miss", recorder, self._storer(vector))

    def _storer(self, vector) -> Callable[[Answer], None]:
        """Caches an answer under `vector`."""
        return lambda answer: self.cache.store(vector, answer)

    async def _replay(
        self, request: web.Request, answer: Answer, body: dict, api: str
    ) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id") or f"proxy-{id(body):x}"
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                R.CACHE_HEADER: "hit",
            }
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for due, data in replay(answer, body, api, rid, self.config.hit_tokens_per_s):
            delay = start + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await response.write(data)
        await response.write_eof()
        return response

    async def forward_any(self, request: web.Request) -> web.StreamResponse:
        """Any other path: forwarded to the server as it is."""
        return await self._forward(request, await request.read(), None)

    async def _forward(
        self,
        request: web.Request,
        data: bytes,
        cache: str | None,
        recorder: AnswerRecorder | None = None,
        keep: Callable[[Answer], None] | None = None,
    ) -> web.StreamResponse:
        """Send the request on; stream the server's answer back unchanged.

        With a `recorder`, the answer is recorded on its way and handed to `keep` as soon as
        the server ends it, before its last bytes go on: a client that sends a near-duplicate
        the moment it has the answer finds it cached.
        """
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = self.upstream + request.rel_url.path_qs
        try:
            async with self.session.request(
                request.method, url, data=data, headers=headers, auto_decompress=False
            ) as upstream:
                kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                if cache is not None:
                    kept[R.CACHE_HEADER] = cache
                response = web.StreamResponse(status=upstream.status, headers=kept)
                await response.prepare(request)
                if upstream.status != 200:
                    recorder = None  # an error is not an answer
                async for chunk in upstream.content.iter_any():
                    if recorder is not None:
                        recorder.feed(chunk)
                        if recorder.done:
                            _keep(recorder, keep)
                            recorder = None
                    await response.write(chunk)
                if recorder is not None:  # a stream that ended with a finish reason, no [DONE]
                    _keep(recorder, keep)
                await response.write_eof()
                return response
        except aiohttp.ClientError as exc:
            return _error(502, f"proxy: the server did not answer: {type(exc).__name__}: {exc}")


def _keep(recorder: AnswerRecorder, keep: Callable[[Answer], None] | None) -> None:
    answer = recorder.answer()
    if answer is not None and keep is not None:
        keep(answer)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status)


def build_app(proxy: Proxy) -> web.Application:
    """The aiohttp application of one proxy."""
    app = web.Application(client_max_size=64 * 2**20)  # long prompts: 64 MiB, not 1
    app.add_routes(
        [
            web.get("/health", proxy.health),
            web.get("/metrics", proxy.metrics),
            web.post("/proxy/reset", proxy.reset),
            web.post("/v1/completions", proxy.completions),
            web.post("/v1/chat/completions", proxy.chat),
            web.route("*", "/{tail:.*}", proxy.forward_any),
        ]
    )
    app.cleanup_ctx.append(proxy.open)
    return app


def make_proxy(argv: list[str] | None = None) -> tuple[str, int, Proxy]:
    """Host, port and the proxy, from the command line.

    Raises:
        SweepError: a setting, the tokenizer or the embedding model cannot be used.
    """
    p = argparse.ArgumentParser(prog="python -m backends.proxy.server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="root URL of the server behind the proxy")
    p.add_argument("--config", required=True, help="the proxy config as a JSON object")
    p.add_argument("--tokenizer", help="model directory whose tokenizer counts tokens")
    a = p.parse_args(argv)
    try:
        fields = json.loads(a.config)
        config = CONFIGS[fields["name"]](**fields)
    except (ValueError, TypeError, KeyError) as exc:
        raise SweepError(f"--config is not a proxy config: {exc}") from None
    tokenizer = None
    if a.tokenizer:
        # Imports transformers: only when asked.
        from backends.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(a.tokenizer)
    embedder = None
    if isinstance(config, SemanticCacheProxyConfig):
        try:
            embedder = load_embedder(config.embedding_model)
        except EmbedderError as exc:
            raise SweepError(str(exc)) from None
    return a.host, a.port, Proxy(a.upstream, config, TokenCounter(tokenizer), embedder)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; a bad setting is one line and exit status 2."""
    try:
        host, port, proxy = make_proxy(argv)
    except SweepError as exc:
        print(f"proxy error: {exc}", flush=True)
        sys.exit(2)
    print(f"proxy on http://{host}:{port} in front of {proxy.upstream}: {proxy.config}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            build_app(proxy),
            host=host,
            port=port,
            backlog=2048,
            handler_cancellation=True,  # a client hanging up cancels its forwarded request
            shutdown_timeout=1.0,
            access_log=None,
            print=None,
        )


if __name__ == "__main__":
    main()
