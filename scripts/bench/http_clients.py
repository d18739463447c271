"""What one streamed request costs each HTTP client, side by side in one run against one sim.

A `sim` server (its own process) streams OUTPUT_LEN one-token SSE events per request; each
client runs a closed loop of `--concurrency` streams over `--requests` requests, in this
process, `--repeats` times, the order of the clients rotated every round so that none always
runs first or last. Per run: the client's CPU time per request (this process's CPU over the
run / requests: the server's is in its own process), requests and tokens per second, and the
requests that failed. The table gives each client's median and its range over the rounds.

The clients, from the floor up:

- `floor`: the fewest steps a kept-alive HTTP/1.1 stream needs here: request bytes written on
  an asyncio `Protocol`, the reply de-chunked by `httptools`, SSE lines only counted
  (`sweep.loadgen.connection`, a sink that counts);
- `asyncio`: the load generator's path on its own client (`workload.http_client: asyncio`):
  `http.stream_one` through `socket_client`, every event parsed and stamped into a tracker;
- `aiohttp-path`: the same `stream_one` through `aiohttp_client` (`http_client: aiohttp`);
- `aiohttp`, `httpx`, `httpcore`: each library's own streaming POST, network reads stamped,
  SSE lines only counted, as `floor` does.

    .venv/bin/python -m scripts.bench.http_clients [--requests 400] [--concurrency 32]
        [--repeats 5] [--itl-ms 1] [--clients floor,asyncio,...] [--burst 200]

With `--burst N`, it also times bursts of N requests due at one instant through our two clients
(`stream_one`, connections already open): each request's send lag, from the instant to its
bytes' write, as the load generator records it. That is what a trace's bursts add to arrivals.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpcore
import httpx
import pandas as pd

from analysis.report.sections import markdown_table
from backends.base import GenRequest
from backends.sim import SimBackend, SimBackendConfig
from scripts.bench import send_bursts
from sweep.core.config import WorkloadConfig
from sweep.loadgen.clock import now_s
from sweep.loadgen.http import Endpoint, open_client, stream_one
from sweep.loadgen.recorder import RequestTracker
from sweep.loadgen.socket_client import SocketClient

OUTPUT_LEN, PROMPT = 64, "hello " * 16
# One request's whole life in a client: (url, body) -> (tokens read, error or None).
Stream = Callable[[], Awaitable[int]]


def body() -> bytes:
    """The completions request every client sends (vLLM's fields: the sim takes them)."""
    return json.dumps({
        "model": "sim", "prompt": PROMPT, "max_tokens": OUTPUT_LEN, "temperature": 0.0,
        "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True},
    }).encode()  # fmt: skip


def count_events(data: bytes) -> int:
    """Token events in a read (a read here holds whole events: the sim writes one at a time)."""
    return data.count(b"data: {") - data.count(b'"choices":[]')


async def closed_loop(stream: Stream, requests: int, concurrency: int) -> tuple[int, int]:
    """`concurrency` workers sending `requests` in all; (tokens read, failed requests)."""
    left = iter(range(requests))
    tokens = failed = 0

    async def worker() -> None:
        nonlocal tokens, failed
        while next(left, None) is not None:
            try:
                got = await stream()  # not `tokens += await ...`: that reads `tokens` first
            except Exception:
                failed += 1
                continue
            tokens += got

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens, failed


async def floor(url: str, requests: int, concurrency: int) -> tuple[int, int]:
    """Our connection with a sink that only counts: the least a stream needs here."""
    client = SocketClient(Endpoint(url, "sim"), 60.0)
    request = client.post(body(), "bench")

    async def stream() -> int:
        seen = [0]

        def sink(chunk: bytes, at: float) -> bool:
            seen[0] += count_events(chunk)
            return False

        reply, _ = await client.exchange(request, sink)
        if reply.error is not None or reply.status != 200:
            raise RuntimeError(f"{reply.status} {reply.error}")
        return seen[0]

    async with client:
        await client.open_pool(url + "/v1/models", concurrency)
        return await closed_loop(stream, requests, concurrency)


async def ours(name: str, url: str, requests: int, concurrency: int) -> tuple[int, int]:
    """`http.stream_one` through the client `name` (`workload.http_client`)."""
    endpoint = Endpoint(url, "sim", extensions=True)
    workload = WorkloadConfig(name="closed_loop", concurrency=concurrency, http_client=name,
                              timeout_s=60.0)  # fmt: skip
    index = iter(range(requests))

    async def stream() -> int:
        i = next(index, 0)
        tracker = RequestTracker(i, None, 16, OUTPUT_LEN)
        request = GenRequest(i, PROMPT, tuple(range(16)), OUTPUT_LEN)
        await stream_one(client, endpoint, request, tracker, now_s(), f"bench-{i}")
        if tracker.error is not None:
            raise RuntimeError(tracker.error)
        return len(tracker.chunk_times)

    async with open_client(endpoint, workload, concurrency) as client:
        await client.open_pool(url + "/v1/models", concurrency)
        return await closed_loop(stream, requests, concurrency)


async def with_aiohttp(url: str, requests: int, concurrency: int) -> tuple[int, int]:
    """Aiohttp's streaming POST, each read of the body stamped."""
    data, headers = body(), {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def stream() -> int:
            seen = 0
            async with session.post(url + "/v1/completions", data=data, headers=headers) as r:
                r.raise_for_status()
                async for chunk in r.content.iter_any():
                    now_s()
                    seen += count_events(chunk)
            return seen

        return await closed_loop(stream, requests, concurrency)


async def with_httpx(url: str, requests: int, concurrency: int) -> tuple[int, int]:
    """Httpx's `stream()`, each raw read stamped."""
    data, headers = body(), {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def stream() -> int:
            seen = 0
            req = client.stream("POST", url + "/v1/completions", content=data, headers=headers)
            async with req as r:
                r.raise_for_status()
                async for chunk in r.aiter_raw():
                    now_s()
                    seen += count_events(chunk)
            return seen

        return await closed_loop(stream, requests, concurrency)


async def with_httpcore(url: str, requests: int, concurrency: int) -> tuple[int, int]:
    """Httpcore's pool (h11 underneath), each read stamped."""
    data = body()
    headers = [(b"Content-Type", b"application/json")]
    async with httpcore.AsyncConnectionPool(max_connections=concurrency) as pool:

        async def stream() -> int:
            seen = 0
            req = pool.stream("POST", url + "/v1/completions", headers=headers, content=data)
            async with req as r:
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
                async for chunk in r.aiter_stream():
                    now_s()
                    seen += count_events(chunk)
            return seen

        return await closed_loop(stream, requests, concurrency)


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[tuple[int, int]]]] = {
    "floor": floor,
    "asyncio": lambda url, n, c: ours("asyncio", url, n, c),
    "aiohttp-path": lambda url, n, c: ours("aiohttp", url, n, c),
    "aiohttp": with_aiohttp,
    "httpx": with_httpx,
    "httpcore": with_httpcore,
}


def measure(client: str, url: str, requests: int, concurrency: int) -> dict:
    """One run of one client: its CPU per request, throughput and failures."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    tokens, failed = asyncio.run(CLIENTS[client](url, requests, concurrency))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "client": client, "cpu_ms_per_request": cpu / requests * 1e3,
        "cpu_us_per_token": cpu / max(tokens, 1) * 1e6, "req_s": requests / wall,
        "tok_s": tokens / wall, "tokens": tokens, "failed": failed,
    }  # fmt: skip


def rounds(clients: list[str], url: str, a: argparse.Namespace) -> list[dict]:
    """Every client once per round, the order rotated (and reversed every other round)."""
    rows = []
    for r in range(a.repeats):
        order = clients[r % len(clients) :] + clients[: r % len(clients)]
        for client in order if r % 2 == 0 else order[::-1]:
            rows.append({"round": r, **measure(client, url, a.requests, a.concurrency)})
    return rows


def table(rows: list[dict]) -> str:
    """Median [min - max] per client over the rounds, cheapest CPU per request first."""
    out = []
    for client, group in pd.DataFrame(rows).groupby("client"):

        def cell(column: str, fmt: str, values: pd.Series = group) -> str:
            v = values[column]
            return f"{v.median():{fmt}} [{v.min():{fmt}}-{v.max():{fmt}}]"

        out.append({
            "client": client, "runs": len(group),
            "CPU ms / request": cell("cpu_ms_per_request", ".3f"),
            "CPU µs / token": cell("cpu_us_per_token", ".1f"),
            "req/s": cell("req_s", ".0f"), "tok/s": cell("tok_s", ",.0f"),
            "failed": int(group["failed"].sum()),
            "_sort": statistics.median(group["cpu_ms_per_request"]),
        })  # fmt: skip
    frame = pd.DataFrame(out).sort_values("_sort").drop(columns="_sort")
    return markdown_table(frame)


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.http_clients`)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=400, help="requests per run")
    p.add_argument("--concurrency", type=int, default=32, help="streams in flight")
    p.add_argument("--repeats", type=int, default=5, help="rounds of every client")
    p.add_argument("--itl-ms", type=float, default=1.0, help="the sim's time between tokens")
    p.add_argument("--clients", default=",".join(CLIENTS), help="which, comma-separated")
    p.add_argument(
        "--burst",
        type=int,
        default=0,
        help="also time bursts of this many requests due at once (our two clients)",
    )
    p.add_argument("--json", help="also write the runs to this file")
    return p


def run(a: argparse.Namespace) -> None:
    """Start one sim, run the rounds, print the table."""
    clients = a.clients.split(",")
    for name in clients:
        if name not in CLIENTS:
            raise SystemExit(f"--clients: unknown client {name!r}; known: {', '.join(CLIENTS)}")
    load = os.getloadavg()
    sim = SimBackend(SimBackendConfig(ttft_ms=0.0, itl_ms=a.itl_ms), "sim")
    sim.start()
    try:
        rows = rounds(clients, sim.base_url, a)
        bursts = send_bursts.rounds(sim.base_url, a.burst, a.repeats) if a.burst else []
    finally:
        sim.stop()
    print(table(rows))
    if bursts:
        print(f"\nBursts of {a.burst} requests due at one instant, connections open:\n")
        print(send_bursts.table(bursts))
    print(f"\n{a.requests} requests of {OUTPUT_LEN} one-token events per run, {a.concurrency} "
          f"streams, sim ITL {a.itl_ms:g} ms; load average before / after: {load[0]:.2f} / "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": rows, "bursts": bursts}, f, indent=1, default=float)


if __name__ == "__main__":
    run(parser().parse_args())
