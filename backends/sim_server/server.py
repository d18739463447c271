"""A simulated OpenAI-compatible streaming server with an exact latency schedule and faults.

Run as `python -m backends.sim_server --host 127.0.0.1 --port N [...]`. It serves `GET /health`,
`GET /metrics` (Prometheus text), `GET /sim/requests` (the server's own per-request stamps: times,
the `model` asked for and the `images` a chat request carried, with
what each request sent under `--record-prompts`; also written to `$SIM_STAMPS_DIR` as it stops) and
`POST /v1/completions` / `POST /v1/chat/completions`, streamed (SSE) or not. A request is admitted
on arrival unless `max_num_seqs` are running; then it waits in a FIFO queue
(`backends.sim_server.admission`) until one ends. It yields exactly `max_tokens` tokens: the first
chunk `ttft_ms` after admission, then a chunk of `tokens_per_chunk` tokens every `itl_ms * k`, each
delay growing by `load_ms_per_running` per running request. Server-only options (`SimOptions`, in no
trial's config) cycle other chunk sizes (`--chunk-sizes`) or words (`--words`) and say how usage is
reported (`--usage`). One timer task drives every stream from a heap of due times, so thousands of
streams cost one wake-up per due time rather than one sleeping task per token. Stamps use
`time.perf_counter_ns()`, the clock of the load generator, so tests can compare client-side
latencies with the server's truth; a request's arrival is when its first bytes were read
(`backends.sim_server.arrivals`), not when its handler started behind a burst's others.
Faults are drawn per request at `fault_rate` (seeded);
`usage_skew` makes the final usage count disagree with the tokens streamed, `prompt_usage_skew`
its prompt count with the prompt's tokens (`--tokenizer DIR` counts those as the model's server
does: `backends.sim_server.prompt_count`). With
`reasoning_tokens`, a chat reply thinks first (`SimSchedule`), and the stamps say when its first
answer token went out (`first_answer_ns`). `/metrics` also holds
the server's own latency histograms under vLLM's names (`backends.sim_server.latencies`): what a
real server reports of the same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import os
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from backends.sim_server.admission import Admission
from backends.sim_server.arrivals import ArrivalStamps
from backends.sim_server.landscape import delay_factor
from backends.sim_server.latencies import Latencies
from backends.sim_server.prompt_count import PromptCounter, is_long
from backends.sim_server.schedule import SimSchedule
from backends.sim_server.tool_calls import SimCall, pick_call

STALL_S = 3600.0  # longer than any sane client timeout; ends early only when the server stops
MAX_STAMPS = 100_000  # per-request stamps kept for /sim/requests (oldest dropped first)
# Set to a directory, the stamps outlive the server: written there as `sim-stamps-<pid>.json` as
# it stops, for a benchmark whose server ran inside a sweep (`scripts.bench.trace_replay`).
STAMPS_DIR_ENV = "SIM_STAMPS_DIR"
# The event loop rounds timer waits up to whole milliseconds; waking half a millisecond early
# and emitting what is due within that window centres the timing error on zero.
EARLY_NS = 500_000
# How the server reports usage on a stream, whatever `stream_options` asks (except `asked`): a
# running count in every chunk and the final count (vLLM's continuous usage stats); only the final
# count, as OpenAI's API and most gateways do; never.
USAGE_MODES = ("asked", "continuous", "final", "none")
# When the server lets go of a request whose client hung up: at once, as vLLM aborts it (its
# handler is cancelled); at its next chunk, whose write fails; or only once its last token was
# generated, as a server that never looks would (`--on-hang-up`).
HANG_UP_MODES = ("abort", "next_write", "finish")


@dataclass
class SimOptions(SimSchedule):
    """The schedule plus what only the server sets, none of it part of a trial's config.

    `kv_capacity`: the running requests that fill its KV cache. `chunk_sizes`: tokens in each
    successive chunk of a stream, cycled (empty: `tokens_per_chunk` every time). `words`: the
    words streamed, one per token, cycled (empty: `t0 t1 t2 ...`). `usage`: one of USAGE_MODES.
    `record_prompts`: keep what each request sent (`prompt` or `messages`) in its stamps.
    `on_hang_up`: one of HANG_UP_MODES; a request let go of after its client left ends
    `closed` in its stamps.
    """

    kv_capacity: int = 256
    chunk_sizes: list[int] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    usage: str = "asked"
    record_prompts: bool = False
    tokenizer: str | None = None  # a model folder whose tokenizer counts prompts (`prompt_count`)
    on_hang_up: str = "abort"

    def chunk_size(self, index: int) -> int:
        """Tokens in the `index`-th chunk of a stream (before the stream's end cuts it short)."""
        sizes = self.chunk_sizes
        return sizes[index % len(sizes)] if sizes else self.tokens_per_chunk

    def text(self, token: int) -> str:
        """The text of a stream's `token`-th token: a space and a word."""
        words = self.words
        return f" {words[token % len(words)]}" if words else f" t{token}"


class Stream:
    """One request in flight: what was asked, what has been sent, and how it ends."""

    def __init__(
        self,
        rid: str,
        body: dict,
        api: str,
        streaming: bool,
        fault: str | None,
        arrival_ns: int,
        schedule: SimSchedule,
        prompt_tokens: int = 0,
        call: SimCall | None = None,
    ):
        self.rid, self.api, self.streaming, self.fault = rid, api, streaming, fault
        self.arrival_ns = self.admitted_ns = arrival_ns
        self.call = call  # the tool call the reply makes instead of text (chat only)
        cap = int(body.get("max_tokens") or 16)
        self.max_tokens = call.tokens(cap) if call is not None else cap  # a call ends with its JSON
        # The reply's first `thinking` tokens are reasoning (chat only: completions have no field).
        reasons = api == "chat" and call is None
        self.thinking = min(schedule.reasoning_tokens, self.max_tokens) if reasons else 0
        self.reasoning_field = schedule.reasoning_field
        self.images = _images(body) if api == "chat" else 0
        self.prompt_tokens = (
            prompt_tokens + self.images * schedule.tokens_per_image + schedule.prompt_usage_skew
        )
        options = body.get("stream_options") or {}
        self.include_usage = bool(options.get("include_usage"))
        self.continuous = bool(options.get("continuous_usage_stats"))
        self.fault_at = self.max_tokens // 2
        self.outcome: str | None = None  # set once, when it ends
        self.fault_fired = False
        self.hung_up = False  # a write found its client gone
        self.scale = 1.0  # this request's delay factor (`SimSchedule.jitter`)
        self.sent = 0
        self.last_k = 0  # the tokens of the chunk being sent
        self.chunks = 0
        self.text: list[str] = []
        self.thought: list[str] = []
        self.resp: web.StreamResponse | None = None
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        obj = "chat.completion.chunk" if api == "chat" else "text_completion"
        self.head = (
            f'{{"id":{json.dumps(rid)},"object":"{obj}","created":{int(time.time())},'
            f'"model":{json.dumps(str(body.get("model", "sim")))}'
        )

    def chunk(self, text: str, finish: bool, extra: str = "", thought: str = "") -> bytes:
        """One SSE event carrying `text` (the tokens' words), as the OpenAI format has it.

        A chat chunk carries the reasoning words `thought` under the reasoning field, and its
        answer words under `content` where it has some (or no reasoning).
        """
        reason = '"length"' if finish else "null"
        if self.call is not None:  # the tokens are the call's: its arguments' pieces
            if finish:
                reason = f'"{self.call.finish(self.max_tokens)}"'
            start = self.sent - self.last_k
            delta = f'"tool_calls":{self.call.delta(start, self.sent)}'
            choice = f'"delta":{{{delta}}},"logprobs":null,"finish_reason":{reason}'
        elif self.api == "chat":
            parts = [f'"{self.reasoning_field}":"{thought}"'] if thought else []
            if text or not thought:
                parts.append(f'"content":"{text}"')
            delta = ",".join(parts)
            choice = f'"delta":{{{delta}}},"logprobs":null,"finish_reason":{reason}'
        else:
            choice = f'"text":"{text}","logprobs":null,"finish_reason":{reason},"stop_reason":null'
        usage = f',"usage":{self.usage()}' if self.continuous else ""
        return f'data: {self.head},"choices":[{{"index":0,{choice}}}]{usage}{extra}}}\n\n'.encode()

    def usage(self, skew: int = 0) -> str:
        """The usage object after the tokens sent so far, misreported by `skew` tokens."""
        tokens = self.sent + skew
        total = self.prompt_tokens + tokens
        details = ""
        if self.thinking:
            thought = min(self.sent, self.thinking)
            details = f',"completion_tokens_details":{{"reasoning_tokens":{thought}}}'
        return (
            f'{{"prompt_tokens":{self.prompt_tokens},"total_tokens":{total},'
            f'"completion_tokens":{tokens}{details}}}'
        )


class SimServer:
    """Request handlers, the one timer task, metrics and fault injection."""

    def __init__(self, options: SimOptions) -> None:
        self.opt = options
        self.prompts = PromptCounter(options.tokenizer)  # loaded before the server listens
        self.rng = random.Random(options.seed)
        self.jitter_rng = random.Random(options.seed + 1)  # its own: faults draw as before
        self.tool_rng = random.Random(options.seed + 2)  # which replies call tools, and which
        self.heap: list[tuple[int, int, Stream]] = []
        self.seq = itertools.count()
        self.wake = asyncio.Event()
        self.admission: Admission[Stream] = Admission(options.max_num_seqs)
        self.stamps: dict[str, dict] = {}
        reg = self.registry = CollectorRegistry()
        # Names mirror vLLM's (`vllm:num_requests_running`, ...) under a `sim:` prefix.
        self.running = Gauge("sim:num_requests_running", "Requests streaming", registry=reg)
        self.waiting = Gauge("sim:num_requests_waiting", "Requests queued", registry=reg)
        self.kv = Gauge("sim:kv_cache_usage_perc", "Fake KV-cache usage, 1 = full", registry=reg)
        self.requests = Counter("sim:requests", "Requests received", registry=reg)
        self.tokens = Counter("sim:generation_tokens", "Tokens generated", registry=reg)
        self.scrapes = Counter("sim:metrics_scrapes", "GET /metrics served", registry=reg)
        self.latencies = Latencies()
        reg.register(self.latencies)
        self.emitted = 0
        # every request's delays scale by the landscape's factor (1.0 without one)
        self.factor = delay_factor(
            options.landscape,
            options.max_num_seqs,
            options.max_num_batched_tokens,
            options.chunked_prefill,
        )

    # ---- handlers ----
    async def health(self, request: web.Request) -> web.Response:
        """200 once the server listens."""
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text; the fake KV-cache usage is proportional to running requests."""
        self.running.set(len(self.admission.running))
        self.waiting.set(len(self.admission.waiting))
        self.kv.set(min(1.0, len(self.admission.running) / self.opt.kv_capacity))
        self.tokens.inc(self.emitted)
        self.emitted = 0
        self.scrapes.inc()
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def sim_requests(self, request: web.Request) -> web.Response:
        """Per-request stamps (arrival, admission, first token, end) by `X-Request-Id`."""
        return web.json_response(self.stamps)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/completions`."""
        return await self._serve(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`."""
        return await self._serve(request, "chat")

    async def _serve(self, request: web.Request, api: str) -> web.StreamResponse:
        arrival = request[ARRIVAL_NS]  # the middleware's (`build_app`)
        try:
            body = await request.json()
            if int(body.get("max_tokens") or 16) < 1:
                raise ValueError("max_tokens must be >= 1")
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(400, f"bad request: {exc}")
        self.requests.inc()
        fault = None
        if self.opt.fault_rate > 0 and self.rng.random() < self.opt.fault_rate:
            fault = self.rng.choice(self.opt.fault_kinds)
        if fault in ("500", "429"):
            return _error(int(fault), f"sim: injected HTTP {fault}")
        rid = request.headers.get("X-Request-Id") or f"sim-{next(self.seq)}"
        if is_long(body):  # off the event loop: other requests' arrivals are stamped meanwhile
            loop = asyncio.get_running_loop()
            counted = await loop.run_in_executor(None, self.prompts.count, body, api)
        else:
            counted = self.prompts.count(body, api)
        call = None
        if api == "chat":  # a chat request offering tools may get a call (`tool_calls`)
            call = pick_call(body, rid, self.opt.tool_call_rate, self.tool_rng)
        s = Stream(
            rid, body, api, bool(body.get("stream")), fault, arrival, self.opt, counted, call
        )
        s.scale = self.factor
        if self.opt.jitter > 0:
            s.scale *= self.jitter_rng.lognormvariate(0.0, self.opt.jitter)
        if self.opt.usage != "asked":
            s.continuous = self.opt.usage == "continuous"
            s.include_usage = self.opt.usage != "none"
        self._stamp(rid, arrival_ns=arrival, fault=fault, images=s.images, model=body.get("model"))
        if self.opt.record_prompts:  # what a multi-turn client sent, for tests to compare
            self._stamp(rid, received=body.get("messages" if api == "chat" else "prompt"))
        try:
            if s.streaming:
                await self._begin_stream(s, request)
            if self.admission.arrive(s):
                self._admit(s, arrival)
            outcome = await s.done
        except (ConnectionError, RuntimeError):  # its client left before the reply began
            outcome = "closed"
        finally:
            self._end(s, "closed")  # a no-op once it has ended; else its client hung up
        if outcome == "reset" or (outcome == "truncate" and not s.streaming):
            _reset(request)
        if s.streaming:
            return s.resp
        if outcome != "done":
            return _error(503, f"sim: request ended early ({outcome})")
        if s.fault == "malformed":
            return web.Response(text='{"id": "' + rid, content_type="application/json")
        return web.json_response(_full_response(s, self.opt.usage_skew))

    async def _begin_stream(self, s: Stream, request: web.Request) -> None:
        """Send a stream's headers (and a chat reply's role-only chunk, as vLLM does)."""
        s.resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        if s.fault == "truncate":
            s.resp.force_close()  # end the body early, then close the connection
        await s.resp.prepare(request)
        if s.api == "chat":  # a role-only chunk first, carrying no tokens
            await s.resp.write(
                s.chunk("", False).replace(b'"delta":{', b'"delta":{"role":"assistant",', 1)
            )

    # ---- the timer task ----
    def _delay_ns(self, ms: float) -> int:
        return int((ms + self.opt.load_ms_per_running * len(self.admission.running)) * 1e6)

    def _admit(self, s: Stream, now: int) -> None:
        """`s` runs from `now` (its arrival, or the end that freed its slot): prefill starts."""
        s.admitted_ns = now
        self._stamp(s.rid, admitted_ns=now)
        self.latencies.admitted(s)
        encode = s.images * self.opt.ms_per_image  # a vision encoder's time, before the prefill
        self._push(s, now + self._delay_ns(self.opt.ttft_ms * s.scale + encode))

    def _push(self, s: Stream, due: int) -> None:
        heapq.heappush(self.heap, (due, next(self.seq), s))
        if self.heap[0][2] is s:
            self.wake.set()  # a new earliest due time: re-arm the timer

    async def run_timer(self) -> None:
        """Emit every due chunk, then sleep until the next due time or a new earlier one."""
        while True:
            self.wake.clear()
            now = time.perf_counter_ns() + EARLY_NS
            due_now = []
            while self.heap and self.heap[0][0] <= now:
                due_now.append(heapq.heappop(self.heap))
            for due, _, s in due_now:
                if s.outcome is None:
                    await self._emit(s, due)
            if due_now:
                await asyncio.sleep(0)  # let handlers and the network run when we are behind
                continue
            if not self.heap:
                await self.wake.wait()
                continue
            wait_s = (self.heap[0][0] - EARLY_NS - time.perf_counter_ns()) / 1e9
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self.wake.wait()

    async def _emit(self, s: Stream, due: int) -> None:
        """Send the chunk due now; schedule the next one from `due`, so lateness never adds up."""
        prefix = b""
        if s.fault and not s.fault_fired and s.sent >= s.fault_at:
            s.fault_fired = True
            if s.fault == "stall":
                self._push(s, due + int(STALL_S * 1e9))
                return
            if s.fault in ("truncate", "reset"):
                self._end(s, s.fault)
                return
            if s.fault == "malformed" and s.streaming:
                prefix = b'data: {"id": "' + s.rid.encode() + b'", "choices": [\n\n'
        k = min(self.opt.chunk_size(s.chunks), s.max_tokens - s.sent)
        cut = min(max(s.thinking - s.sent, 0), k)  # the chunk's reasoning tokens come first
        thought = "".join(self.opt.text(s.sent + i) for i in range(cut))
        text = "".join(self.opt.text(s.sent + i) for i in range(cut, k))
        first = s.sent == 0
        answers = cut < k and s.sent <= s.thinking  # the answer's first token is in this chunk
        s.sent += k
        s.last_k = k
        s.chunks += 1
        finish = s.sent >= s.max_tokens
        now = time.perf_counter_ns()
        if first:
            self._stamp(s.rid, first_token_ns=now)
        if answers:
            self._stamp(s.rid, first_answer_ns=now)
        self.emitted += k  # into the Prometheus counter at the next scrape: no lock per chunk
        self.latencies.chunk(s, k, now, first, finish)
        if s.streaming:
            extra = ""
            if first:
                times = {"arrival_ns": s.arrival_ns, "admitted_ns": s.admitted_ns}
                extra = f',"sim":{json.dumps({**times, "first_token_ns": now})}'
            data = prefix + s.chunk(text, finish, extra, thought)
            if finish:
                if s.include_usage:
                    usage = s.usage(self.opt.usage_skew)
                    data += f'data: {s.head},"choices":[],"usage":{usage}}}\n\n'.encode()
                data += b"data: [DONE]\n\n"
            try:
                # Returns at once unless the client stopped reading (64 KiB buffered).
                await s.resp.write(data)
            except (ConnectionError, RuntimeError):
                s.hung_up = True
                if self.opt.on_hang_up != "finish":
                    self._end(s, "closed")
                    return
        else:
            s.text.append(text)
            s.thought.append(thought)
        if finish:
            self._end(s, "closed" if s.hung_up else "done")
        else:
            nxt = min(self.opt.chunk_size(s.chunks), s.max_tokens - s.sent)
            self._push(s, due + self._delay_ns(self.opt.itl_ms * nxt * s.scale))

    def _end(self, s: Stream, outcome: str) -> None:
        if s.outcome is not None:
            return
        s.outcome, end = outcome, time.perf_counter_ns()
        self.latencies.forget(s)
        self._stamp(s.rid, end_ns=end, output_tokens=s.sent, outcome=outcome)
        if not s.done.done():  # cancelled when its client hung up
            s.done.set_result(outcome)
        for nxt in self.admission.leave(s):  # its slot, if it held one, goes to the next in line
            self._admit(nxt, end)

    def _stamp(self, rid: str, **values: object) -> None:
        if rid not in self.stamps and len(self.stamps) >= MAX_STAMPS:
            del self.stamps[next(iter(self.stamps))]
        self.stamps.setdefault(rid, {}).update(values)

    async def on_shutdown(self, app: web.Application) -> None:
        """End every stream (stalled and queued ones included) so the server stops promptly."""
        for s in [*self.admission.waiting, *self.admission.running]:  # waiting first: none admitted
            self._end(s, "closed")

    async def keep_stamps(self, app: web.Application) -> None:
        """Write every stamp to `$SIM_STAMPS_DIR/sim-stamps-<pid>.json`, whole or not at all."""
        path = os.path.join(os.environ[STAMPS_DIR_ENV], f"sim-stamps-{os.getpid()}.json")
        with open(f"{path}.tmp", "w", encoding="utf-8") as out:
            json.dump(self.stamps, out)
        os.replace(f"{path}.tmp", path)


def _images(body: dict) -> int:
    """How many `image_url` parts the messages of a chat body carry."""
    return sum(
        1
        for m in body.get("messages") or []
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def _full_response(s: Stream, skew: int) -> dict:
    text = "".join(s.text)
    usage = json.loads(s.usage(skew))
    if s.api == "chat":
        message: dict = {"role": "assistant", "content": text}
        if s.thinking:
            message[s.reasoning_field] = "".join(s.thought)
        finish = "length"
        if s.call is not None:
            made = json.loads(s.call.delta(0, s.max_tokens))[0]
            message = {"role": "assistant", "content": None, "tool_calls": [made]}
            finish = s.call.finish(s.max_tokens)
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return {"id": s.rid, "object": "chat.completion", "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": text, "finish_reason": "length"}
    return {"id": s.rid, "object": "text_completion", "choices": [choice], "usage": usage}


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "sim_error", "code": status}}
    headers = {"Retry-After": "1"} if status == 429 else None
    return web.json_response(body, status=status, headers=headers)


def _reset(request: web.Request) -> None:
    """Abort the connection with a TCP RST, as a crashed server or a dropped link does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


ARRIVALS = web.AppKey("arrivals", ArrivalStamps)
ARRIVAL_NS = "arrival_ns"  # the request's first bytes (`ArrivalStamps`), kept on the request


def build_app(options: SimOptions) -> web.Application:
    """The aiohttp application of one sim server, with its timer task.

    Served by `backends.sim_server.command.serve` (as its `main` does), each request carries
    when its first bytes came; served otherwise, when its handler started.
    """
    sim = SimServer(options)
    arrivals = ArrivalStamps()

    @web.middleware
    async def arrival(request: web.Request, handler):  # noqa: ANN202
        request[ARRIVAL_NS] = arrivals.take(request.transport)  # every request: none is left over
        return await handler(request)

    app = web.Application(middlewares=[arrival])
    app[ARRIVALS] = arrivals
    app.add_routes(
        [
            web.get("/health", sim.health),
            web.get("/metrics", sim.metrics),
            web.get("/sim/requests", sim.sim_requests),
            web.post("/v1/completions", sim.completions),
            web.post("/v1/chat/completions", sim.chat),
        ]
    )

    async def timer(app: web.Application):
        task = asyncio.create_task(sim.run_timer())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(timer)
    app.on_shutdown.append(sim.on_shutdown)
    if os.environ.get(STAMPS_DIR_ENV):
        app.on_cleanup.append(sim.keep_stamps)
    return app
