"""Offers a workload to an OpenAI-compatible server over streaming HTTP.

The `api` picks the endpoint: OpenAI `completions` or `chat`, or `tgi`, TGI's native
`/generate_stream`. Events are parsed by `sweep.loadgen.sse` (TGI's by `sweep.loadgen.tgi_stream`).
Bodies carry standard OpenAI fields only; vLLM's `ignore_eos` and per-chunk usage go only to an
endpoint that declares them (`Endpoint.extensions`), per-token logprobs only where the backend
counts tokens by them (`Endpoint.token_counts`), and the backend's own headers and body fields
to every request. A 400 or 422 names the field the endpoint rejected (`sweep.loadgen.http_error`).

One client per trial (`workload.http_client`, `CLIENTS`): `asyncio`, the load generator's own
HTTP/1.1 client (`sweep.loadgen.socket_client`), or `aiohttp` (`sweep.loadgen.aiohttp_client`).
Modes: `closed_loop`, `throughput_bound` (concurrency = batch
size) and `latency_bound` (concurrency 1) keep exactly that many requests in flight, workers
pulling from one queue; `open_loop` sends at absolute deadlines from a seeded arrival schedule
(`sweep.loadgen.arrivals`), optionally capped by a semaphore, and records how late each request
went out (in the closed-loop modes a request is due when its worker's last one ended);
`offline_batch` sends batches together and waits for each. `workload.duration_s`, an open
loop's ramp and `workload.stages` shape the load over time (`sweep.loadgen.stages`). Every
token-bearing chunk is timestamped by `RequestTracker.add_chunk` with the time its network read
returned. HTTP errors, timeouts, disconnects and malformed events fail that request only
(`kind: message`; a timed-out one keeps the tokens it had); the trial goes on. The requests
`workload.cancel_rate` chose are closed by the client on purpose (`sweep.loadgen.cancel`).
Multi-turn sessions (`sweep.loadgen.sessions`) stream each turn through `stream_one` too.
`workload.client_processes` > 1 shards the load across processes (`sweep.loadgen.shards`); the
CPU the event loop used rides back with the trackers (`sweep.loadgen.saturation`).
The own client by default because it was measured here beside aiohttp, httpx and httpcore
(`scripts.bench.http_clients`, docs/benchmarks.md): it costs the least CPU per request and stamps
each read in the read's own callback.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import pkgutil
import statistics
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from backends.base import COUNT_LOGPROBS, COUNT_USAGE, GenRequest, ServerBackend
from sweep.core.config import WorkloadConfig
from sweep.core.errors import ConfigError
from sweep.loadgen import tgi_stream
from sweep.loadgen.arrivals import arrival_offsets, trace_offsets
from sweep.loadgen.cancel import Cancelled, CancelRule, cancel_rules
from sweep.loadgen.clock import now_s
from sweep.loadgen.http_error import RequestFailed, TimedOut
from sweep.loadgen.recorder import RequestTracker, Trackers
from sweep.loadgen.request_ids import new_run, request_id
from sweep.loadgen.saturation import CpuMeter
from sweep.loadgen.shards import WHOLE, Share, run_sharded
from sweep.loadgen.sse import DRAIN_S, EventError  # noqa: F401 - DRAIN_S: named here for tests
from sweep.loadgen.stages import mark_phases, open_loop_schedule, run_stages, send_until
from sweep.loadgen.structured import keep_replies, structured_endpoint, workload_constraint
from sweep.loadgen.wakeup import sleep_until

log = logging.getLogger(__name__)

# What asks an OpenAI endpoint for each output token's logprob, and no alternatives.
LOGPROBS_FIELDS = {"completions": {"logprobs": 0}, "chat": {"logprobs": True, "top_logprobs": 0}}
API_PATHS = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
    "tgi": tgi_stream.PATH,  # TGI's native stream
}

# A cheap GET per api that opens a pooled connection before the measured load (`open_pool`).
POOL_PATHS = {"completions": "/v1/models", "chat": "/v1/models", "tgi": "/info"}
# Connections opened up front when nothing caps the requests in flight (an open loop, stages).
POOL_UNCAPPED = 32

# (request, tracker, scheduled send time) -> streams it, filling the tracker; never raises.
Send = Callable[[GenRequest, RequestTracker, float], Awaitable[None]]
# `workload.http_client` -> its client class, imported when a trial asks for it (aiohttp's costs
# every Ray worker about 80 ms of CPU otherwise); each takes (endpoint, timeout_s, connection cap).
CLIENTS = {
    "asyncio": "sweep.loadgen.socket_client:SocketClient",
    "aiohttp": "sweep.loadgen.aiohttp_client:AiohttpClient",
}
STOPPED_OVER_SATURATED = "stopped: the probe was over-saturated, still in flight after"
STOP_SLACK_S = 0.25
STOP_CHECK_S = 0.5


def early_count(n: int) -> int:
    """How many of a trial's first requests give its unloaded latency (sent before a backlog)."""
    return max(3, n // 10)


class _Plan(NamedTuple):
    """What a mode needs beyond its requests: open-loop due times, concurrency, start time."""

    offsets: list[float]
    streams: int | None
    start: float
    stop_ratio: float | None = None  # open loop: stop once the achieved rate must fall below it
    until: float | None = None  # nothing is sent after this time (`workload.duration_s`)


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and how they are phrased (standard OpenAI fields unless `extensions`)."""

    base_url: str
    model: str
    api: str = "completions"  # or "chat"
    send_token_ids: bool = False  # completions only: send the prompt as token ids
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # with every request
    extensions: bool = False  # vLLM's ignore_eos and per-chunk usage may be sent
    max_tokens_field: str = "max_tokens"  # chat's cap: or max_completion_tokens
    extra_body: Mapping[str, Any] = field(default_factory=dict, repr=False)  # in every body
    token_counts: str = COUNT_USAGE  # how its streams count tokens (`ServerBackend.token_counts`)
    adapter_field: str = "model"  # the body field naming a request's LoRA adapter
    # A structured-output trial's body fields (`sweep.loadgen.structured`; {}: not enforced);
    # None: no constraint. Either way not None turns ignore_eos off.
    structured: Mapping[str, Any] | None = field(default=None, repr=False)
    # A tool-calling session's body fields, `tools` and `tool_choice` (`sweep.core.tools`); None:
    # none. Not None turns ignore_eos off too: a call ends where its arguments do.
    tools: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Full URL of the generation endpoint."""
        return self.base_url.rstrip("/") + API_PATHS[self.api]


def run_http_workload(
    backend: ServerBackend,
    requests: Sequence[GenRequest],
    warmup: Sequence[GenRequest],
    workload: WorkloadConfig,
    stop_ratio: float | None = None,
) -> Trackers:
    """Stream `requests` to a started server backend; return the measured requests' trackers.

    With `stop_ratio` (a search's probe), an open loop stops the requests still in flight once
    its achieved rate can no longer reach `stop_ratio` of the offered one (one process only).
    """
    return run_endpoint_workload(endpoint_of(backend), requests, warmup, workload, stop_ratio)


def refuse_repeats(workload: WorkloadConfig) -> None:
    """One line for `workload.repeat_to_minimum` on a server, before any request is sent.

    Raises:
        ConfigError: it is set; only an in-process engine's batches repeat.
    """
    if workload.repeat_to_minimum:
        raise ConfigError(
            "workload.repeat_to_minimum repeats an in-process engine's batches; against a "
            "server, raise workload.num_requests (and bound it with workload.duration_s)"
        )


def endpoint_of(backend: ServerBackend) -> Endpoint:
    """Where and how to reach a started server backend; headers and body fields read now."""
    return Endpoint(
        backend.base_url,
        backend.served_model,
        backend.api,
        backend.send_token_ids,
        headers=backend.request_headers(),
        extensions=backend.vllm_extensions,
        max_tokens_field=backend.max_tokens_field,
        extra_body=backend.request_body(),
        token_counts=backend.token_counts,
        adapter_field=backend.adapter_field,
    )


def run_endpoint_workload(
    endpoint: Endpoint,
    requests: Sequence[GenRequest],
    warmup: Sequence[GenRequest],
    workload: WorkloadConfig,
    stop_ratio: float | None = None,
) -> Trackers:
    """Like `run_http_workload`, against an explicit endpoint; sharded into processes if asked."""
    refuse_repeats(workload)
    if workload.client_processes > 1:
        return run_sharded(endpoint, requests, warmup, workload)
    return asyncio.run(run_share(endpoint, requests, warmup, workload, stop_ratio=stop_ratio))


if TYPE_CHECKING:
    from sweep.loadgen.aiohttp_client import AiohttpClient
    from sweep.loadgen.socket_client import SocketClient

    Client = SocketClient | AiohttpClient


async def run_share(
    endpoint: Endpoint,
    requests: Sequence[GenRequest],
    warmup: Sequence[GenRequest],
    workload: object,
    share: Share = WHOLE,
    start: Callable[[], Awaitable[float]] | None = None,
    stop_ratio: float | None = None,
) -> Trackers:
    """Offer `share`'s part of the load (all of it by default) from this event loop.

    `start`, awaited after the warm-up, gives the monotonic time at which the measured load
    begins, so that the shards of one trial begin together. The returned trackers carry the
    CPU this loop used while offering the load.
    """
    cap = share.streams(workload.streams)
    run = new_run()  # request ids unique across trials and shards, for server-side logs
    limit = None if workload.stages else cap  # stages: theirs
    cancels = cancel_rules(workload, len(requests))  # of the whole trial: the same in every shard
    constraint = workload_constraint(workload)
    if constraint is not None:
        endpoint = structured_endpoint(endpoint, constraint, workload.structured_enforce)
    async with open_client(endpoint, workload, limit) as session:

        def sender(warmup: bool) -> Send:
            async def send(request: GenRequest, tracker: RequestTracker, scheduled: float) -> None:
                rid = request_id(run, request.idx, share.index, warmup)
                cancel = None if warmup else cancels.get(request.idx)
                await stream_one(session, endpoint, request, tracker, scheduled, rid, cancel)

            return send

        if warmup:  # untimed
            warm = [(r, RequestTracker(r.idx, None, 0, r.max_tokens)) for r in warmup]
            await _closed_loop(sender(True), warm, min(cap or len(warm), len(warm)))
        await open_pool(session, endpoint, min(cap or POOL_UNCAPPED, len(requests)))
        items = share.take(
            [
                (r, RequestTracker(r.idx, None, len(r.prompt_token_ids), r.max_tokens))
                for r in requests
            ]
        )
        if constraint is not None:  # checked after the load (`structured.check_answers`)
            keep_replies(tracker for _, tracker in items)
        offsets = []
        if workload.name == "open_loop":  # one schedule for all shards, each sends its slice
            rate, burstiness = workload.request_rate, workload.burstiness
            schedule = trace_offsets(requests)  # a trace's own times, else the workload's
            if schedule is None:
                schedule = arrival_offsets(len(requests), rate, burstiness, workload.seed)
            offsets = share.take(open_loop_schedule(schedule, workload))  # ramp, duration_s
            items = mark_phases(items[: len(offsets)], offsets, workload)
        begin = now_s() if start is None else await start()
        await sleep_until(begin)
        # A full collection scans every object of the process (tens of ms with pandas and Ray
        # loaded), stalling every stream at once; only objects made from here on are scanned.
        gc.freeze()
        meter = CpuMeter()
        try:
            mode = _stages if workload.stages else MODES.get(workload.name, _closed_loop_mode)
            plan = _Plan(offsets, cap, begin, stop_ratio, send_until(begin, workload))
            await mode(sender(False), items, workload, plan)
        finally:
            usage = meter.usage()
            gc.unfreeze()
    if workload.name == "offline_batch" and workload.discard_first_batch:
        return Trackers([t for _, t in items if t.batch_idx != 0], usage)
    # A request never sent (the time of `workload.duration_s` was up) is not a measurement.
    return Trackers([t for _, t in items if t.sent is not None or t.error is not None], usage)


def open_client(endpoint: Endpoint, workload: object, limit: int | None = None) -> Client:
    """The trial's client (`workload.http_client`), to be entered with `async with`."""
    client_class = pkgutil.resolve_name(CLIENTS[workload.http_client])
    return client_class(endpoint, workload.timeout_s, limit)


async def open_pool(session: Client, endpoint: Endpoint, count: int) -> None:
    """Have `count` connections open in the session's pool before the measured load starts.

    Opening a connection takes the event loop's turn for a while: the 16 a closed loop opened
    at its start put its first requests 14-28 ms late against vLLM's CPU server, which read as a
    saturated client, and a trace's bursts opened theirs while other sends were due. Each is
    opened by a GET of a cheap path (`POOL_PATHS`), all at once so that none reuses another's;
    what the server answers (a 404 too) is read and ignored, and a failure is left for the
    requests to report.
    """
    await session.open_pool(endpoint.base_url.rstrip("/") + POOL_PATHS[endpoint.api], count)


async def _closed_loop(
    send: Send, items: Iterable, concurrency: int, until: float | None = None
) -> None:
    """`concurrency` workers, each sending its next request as soon as its last one ends.

    None is sent after `until`; `items` may be an iterator that later stages go on pulling.
    """
    queue = iter(items)  # shared by the workers; the event loop runs one at a time

    async def worker() -> None:
        ready = now_s()
        while (until is None or now_s() < until) and (item := next(queue, None)) is not None:
            request, tracker = item
            await send(request, tracker, ready)
            # The next request is due when this one let its stream go (`freed`): its send lag is
            # our turnaround, not the server's wait between the last token and `[DONE]`.
            ready = now_s() if tracker.freed is None else tracker.freed

    count = min(concurrency, len(items)) if isinstance(items, Sized) else concurrency
    await asyncio.gather(*(worker() for _ in range(max(1, count))))


async def _closed_loop_mode(send: Send, items: list, workload: object, plan: _Plan) -> None:
    await _closed_loop(send, items, plan.streams, plan.until)


async def _stages(send: Send, items: list, workload: object, plan: _Plan) -> None:
    """`workload.stages` back to back (`sweep.loadgen.stages`), each with its own load."""

    def open_loop(taken: list, offsets: list[float], start: float, until: float) -> Awaitable:
        return _open_loop(send, taken, workload, _Plan(offsets, None, start, until=until))

    def closed_loop(queue: Iterable, concurrency: int, until: float) -> Awaitable:
        return _closed_loop(send, queue, concurrency, until)

    await run_stages(workload, items, plan.start, open_loop, closed_loop)


async def _open_loop(send: Send, items: list, workload: object, plan: _Plan) -> None:
    """Send at absolute deadlines fixed up front, so a late send never delays the next ones."""
    cap = asyncio.Semaphore(plan.streams) if plan.streams else None

    async def capped(request: GenRequest, tracker: RequestTracker, deadline: float) -> None:
        if cap is None:
            await send(request, tracker, deadline)
            return
        async with cap:  # time waiting for the cap counts as client lag, not as TTFT
            if plan.until is None or now_s() < plan.until:  # else never sent nor recorded
                await send(request, tracker, deadline)

    start = plan.start
    tasks = []
    for (request, tracker), offset in zip(items, plan.offsets, strict=True):
        await sleep_until(start + offset)  # to a tenth of a ms (asyncio's sleep: to the ms)
        tasks.append(asyncio.create_task(capped(request, tracker, start + offset)))
    if plan.stop_ratio is None or not plan.offsets:
        await asyncio.gather(*tasks)
        return
    # Clearly over-saturated (`sweep.worker.search_run`): a request still in flight twice as long
    # after the start as a server keeping up would need, (schedule + the latency of the first
    # requests, sent before any backlog) / stop_ratio, says the backlog is growing. Waiting for
    # it to drain would only spend time: what is still in flight is stopped, the probe fails.
    late = set(tasks)
    while late:
        first = [t for _, t in items[: early_count(len(items))]]
        done = [t.end - t.sent for t in first if t.end is not None and t.sent is not None]
        latency = statistics.median(done) if done else 0.0
        span = 2 * (plan.offsets[-1] + latency) / plan.stop_ratio + STOP_SLACK_S
        left = start + span - now_s()
        if left <= 0:
            break
        _, late = await asyncio.wait(late, timeout=min(left, STOP_CHECK_S))
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    for task, (_, tracker) in zip(tasks, items, strict=True):
        if task in late and tracker.end is None:
            tracker.fail(f"{STOPPED_OVER_SATURATED} {span:.1f} s")


async def _batches(send: Send, items: list, workload: object, plan: _Plan) -> None:
    """Batches of `batch_size` sent together; the next batch waits for the whole last one."""
    size = workload.batch_size
    for batch_idx, first in enumerate(range(0, len(items), size)):
        if plan.until is not None and now_s() >= plan.until:
            break
        batch = items[first : first + size]
        at = now_s()
        for _, tracker in batch:
            tracker.batch_idx = batch_idx
        await asyncio.gather(*(send(r, t, at) for r, t in batch))


MODES = {"open_loop": _open_loop, "offline_batch": _batches}


async def stream_one(
    session: Client,
    endpoint: Endpoint,
    request: GenRequest,
    tracker: RequestTracker,
    scheduled: float,
    rid: str,
    cancel: CancelRule | None = None,
) -> None:
    """Stream one request into its tracker through the trial's client; failures: `tracker.fail`.

    With `cancel`, the client closes it as the rule says (`sweep.loadgen.cancel`):
    `tracker.cancel`, unless it ended first.
    """
    data = json.dumps(_body(endpoint, request)).encode()
    tracker.adapter, tracker.images = request.adapter, len(request.images)
    try:
        stream = await session.stream(data, rid, tracker, scheduled, cancel)
    except Cancelled as exc:
        tracker.cancel(exc.at)
        return
    except (EventError, RequestFailed) as exc:
        tracker.fail(str(exc), timed_out=isinstance(exc, TimedOut))
        return
    except Exception as exc:  # one request's bug must not end the trial
        tracker.fail(f"client_error: {type(exc).__name__}: {exc}")
        return
    if not (stream.done or stream.finished):
        tracker.fail(f"disconnect: stream ended without [DONE] after {stream.seen} tokens")
        return
    stream.end()
    tracker.finish(server_tokens=stream.server_tokens)


def _body(endpoint: Endpoint, request: GenRequest) -> dict:
    """Standard OpenAI fields, vLLM's only where the endpoint takes them, then `extra_body`."""
    if endpoint.api == "tgi":
        return tgi_stream.request_body(request)
    cap = endpoint.max_tokens_field if endpoint.api == "chat" else "max_tokens"
    body = {
        "model": endpoint.model,
        cap: request.max_tokens,
        "temperature": request.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint.extensions:
        body["ignore_eos"] = request.ignore_eos  # what makes output lengths exact
        body["stream_options"]["continuous_usage_stats"] = True  # exact tokens per chunk
    if endpoint.token_counts == COUNT_LOGPROBS:  # an entry per token, none of the alternatives
        body.update(LOGPROBS_FIELDS[endpoint.api])
    if endpoint.api == "chat":  # a conversation's history (`sweep.loadgen.sessions`), if any
        body["messages"] = chat_messages(request.messages or (("user", request.prompt),))
        if request.images:  # the last user message carries them, after its text
            last = body["messages"][-1]
            last["content"] = image_content(last["content"], request)
    elif endpoint.send_token_ids and request.prompt_token_ids:
        body["prompt"] = list(request.prompt_token_ids)
    else:
        body["prompt"] = request.prompt
    if request.adapter is not None:  # vLLM: the adapter's own model name; SGLang: lora_path
        body[endpoint.adapter_field] = request.adapter
    for fields in (endpoint.structured, endpoint.tools):
        if fields is not None:  # an answer ends where its constraint (or its call) does
            body.update(fields)
            if "ignore_eos" in body:
                body["ignore_eos"] = False
    return {**endpoint.extra_body, **body} if endpoint.extra_body else body


def chat_messages(turns: Sequence[tuple]) -> list[dict[str, Any]]:
    """A conversation's messages as a chat body carries them: (role, text[, fields]) each.

    A third item holds the message's other fields: an assistant's `tool_calls`, a tool result's
    `tool_call_id` (`sweep.loadgen.sessions`).
    """
    return [
        {"role": turn[0], "content": turn[1], **turn[2]} if len(turn) > 2 else
        {"role": turn[0], "content": turn[1]}
        for turn in turns
    ]  # fmt: skip


def image_content(text: str, request: GenRequest) -> list[dict[str, Any]]:
    """A user message's content as OpenAI's parts: its text, then each image as an image_url."""
    images = [{"type": "image_url", "image_url": {"url": url}} for url in request.images]
    return [{"type": "text", "text": text}, *images]
