"""The sim server's command line and serving loop: `python -m backends.sim_server --port N [...]`.

`parse_args` turns the command line into `SimOptions` (one line through argparse for a bad one);
`serve` runs the application of `backends.sim_server.server.build_app` on a listening socket whose
protocols stamp each request's first bytes (`backends.sim_server.arrivals`), until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal

from aiohttp import web

from backends.sim_server import server
from backends.sim_server.schedule import SIM_FAULT_KINDS
from backends.sim_server.server import (
    ARRIVALS,
    HANG_UP_MODES,
    USAGE_MODES,
    SimOptions,
    build_app,
)
from sweep.core.stream_chunks import REASONING_FIELDS


def parse_args(argv: list[str] | None = None) -> tuple[str, int, SimOptions]:
    """Host, port and options from the command line (`--schedule` is a `SimSchedule` as JSON)."""
    p = argparse.ArgumentParser(prog="python -m backends.sim_server", description=server.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--schedule", default="{}", help="SimSchedule fields as a JSON object")
    p.add_argument("--kv-capacity", type=int, default=SimOptions.kv_capacity)
    p.add_argument(
        "--chunk-sizes", type=_ints, default=[], help="tokens per chunk, cycled, e.g. 1,3,2,5"
    )
    p.add_argument("--words", type=_words, default=[], help="words streamed, cycled, e.g. a,b")
    p.add_argument("--usage", choices=USAGE_MODES, default="asked", help="usage on a stream")
    p.add_argument(
        "--record-prompts", action="store_true", help="keep each request's prompt in its stamps"
    )
    p.add_argument(
        "--tokenizer", default=None, help="a model folder whose tokenizer counts the prompts"
    )
    p.add_argument(
        "--on-hang-up", choices=HANG_UP_MODES, default="abort",
        help="when a request whose client left is let go of",
    )  # fmt: skip
    a = p.parse_args(argv)
    try:
        server_only = {
            "chunk_sizes": a.chunk_sizes,
            "words": a.words,
            "usage": a.usage,
            "record_prompts": a.record_prompts,
            "tokenizer": a.tokenizer,
            "on_hang_up": a.on_hang_up,
        }
        options = SimOptions(**json.loads(a.schedule), kv_capacity=a.kv_capacity, **server_only)
    except (ValueError, TypeError) as exc:
        p.error(f"--schedule: {exc}")
    kinds = options.fault_kinds
    if set(kinds) - set(SIM_FAULT_KINDS) or (options.fault_rate > 0 and not kinds):
        p.error(f"fault_kinds must list some of {','.join(SIM_FAULT_KINDS)}")
    if options.tokens_per_chunk < 1 or not 0 <= options.fault_rate <= 1 or options.kv_capacity < 1:
        p.error("need tokens_per_chunk >= 1, 0 <= fault_rate <= 1, --kv-capacity >= 1")
    if options.max_num_seqs < 0:
        p.error("max_num_seqs must be >= 0 (0: unlimited)")
    if min(options.chunk_sizes, default=1) < 1:
        p.error("--chunk-sizes must all be >= 1")
    if not 0 <= options.tool_call_rate <= 1:
        p.error("tool_call_rate must be in [0, 1]")
    if options.reasoning_tokens < 0 or options.reasoning_field not in REASONING_FIELDS:
        p.error(f"need reasoning_tokens >= 0 and reasoning_field one of {REASONING_FIELDS}")
    return a.host, a.port, options


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _words(text: str) -> list[str]:
    """Comma-separated words; each is written into JSON as is, so no quotes or escapes."""
    words = [part.strip() for part in text.split(",") if part.strip()]
    if any(not w.isprintable() or '"' in w or "\\" in w for w in words):
        raise argparse.ArgumentTypeError("words must be printable, without quotes or backslashes")
    return words


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    host, port, options = parse_args(argv)
    print(f"sim_server on http://{host}:{port} {options}", flush=True)
    # Shows in backend.log which GPUs the deployment's task handed to its server.
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
    asyncio.run(serve(build_app(options), host, port, options.on_hang_up == "abort"))


async def serve(app: web.Application, host: str, port: int, abort: bool = True) -> None:
    """Serve `app` on host:port until SIGTERM or SIGINT, arrivals stamped as bytes come.

    With `abort`, a client hanging up cancels its handler and so ends its request, queued or
    stalled, as vLLM aborts it; without, the request goes on until a write fails (`on_hang_up`).
    """
    runner = web.AppRunner(app, handler_cancellation=abort, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    # A full collection scans every object the imports made (6-16 ms measured here), holding up
    # every arrival stamp meanwhile: those are frozen, so a collection scans the requests' own.
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    # A large backlog: hundreds of streams connect at once when a trial starts.
    listener = await loop.create_server(
        app[ARRIVALS].factory(runner.server), host, port, backlog=2048, reuse_address=True
    )
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()  # on_shutdown ends the streams, on_cleanup keeps the stamps
