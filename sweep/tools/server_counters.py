"""The server's own view of a parity round: its counters, its TTFT, and what the round cost it.

`sweep.tools.parity` and `scripts.bench.neighbours` read these around each client's run: vLLM's
counters from `/metrics` (what the server was asked, and its own mean TTFT), the sim server's
first-token stamps, and the CPU seconds each server process used with the hypervisor's steal.
"""

from __future__ import annotations

import argparse
import os

import httpx

from sweep.tools.parity_report import Round
from sweep.tools.process_watch import cpu_seconds, steal_seconds


def server_truth(backend, seen: set[str]) -> list[float]:
    """The sim server's own TTFT (first token - arrival, ms) of the requests new since `seen`."""
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=30).json()
    new = [v for k, v in stamps.items() if k not in seen and "first_token_ns" in v]
    seen.update(stamps)
    return [(v["first_token_ns"] - v["arrival_ns"]) / 1e6 for v in new]


TTFT_SERIES = "vllm:time_to_first_token_seconds"
# vLLM's counters read around each round: what the server was asked to do, so that the two
# clients can be seen to offer the same work (prompt and output tokens, cache hits)
COUNTERS = {
    "ttft_s": TTFT_SERIES + "_sum",
    "requests": TTFT_SERIES + "_count",
    "prompt": "vllm:prompt_tokens_total",
    "output": "vllm:generation_tokens_total",
    "cached": "vllm:prefix_cache_hits_total",
    "preempted": "vllm:num_preemptions_total",
}


def server_totals(backend) -> dict[str, float]:
    """The `COUNTERS` of vLLM so far, each summed over its label sets."""
    scrape = backend.metrics_scrape()
    try:
        series = scrape()
    finally:
        scrape.close()
    totals = dict.fromkeys(COUNTERS, 0.0)
    names = {sample: key for key, sample in COUNTERS.items()}
    for (sample, _, _), (_, _, value) in series.items():
        if sample in names:
            totals[names[sample]] += value
    return totals


def server_work(server, args: argparse.Namespace) -> tuple[dict[str, float], float]:
    """The server's CPU seconds so far by process, and the hypervisor's steal from its CPUs."""
    return cpu_seconds(server.pid), steal_seconds(args.server_cpus or os.sched_getaffinity(0))


def server_cost(result: Round, before: tuple, after: tuple) -> None:
    """What the round cost the server: CPU seconds by process, and steal from its CPUs.

    More CPU for the same requests is more work done per request; the same CPU over a longer
    TTFT is the server waiting for its cores. Read around the client's whole run: ours' includes
    the sweep's start (Ray), when the server idles.
    """
    used = {name: s - before[0].get(name, 0.0) for name, s in after[0].items()}
    result.server_cpu_s = sum(used.values())
    busy = ", ".join(f"{name.rpartition(':')[0]} {s:.2f}" for name, s in used.items() if s >= 0.01)
    result.note += f"; server CPU s: {busy}; steal {after[1] - before[1]:.2f} s"


def server_before(server, args: argparse.Namespace) -> tuple:
    """What `server_after` compares with: vLLM's counters (None for another server), CPU."""
    return server_totals(server) if args.server == "vllm" else None, server_work(server, args)


def server_after(result: Round, server, args: argparse.Namespace, before: tuple) -> None:
    """The run's cost to the server since `before`, and vLLM's view of its requests."""
    totals, used = before
    server_cost(result, used, server_work(server, args))
    if totals is not None:  # the round's requests (vLLM's client adds one test request)
        server_round(result, totals, server_totals(server))


def server_round(result: Round, before: dict[str, float], after: dict[str, float]) -> None:
    """The server's view of one round: its mean TTFT, and per request what it was asked."""
    delta = {key: after[key] - before[key] for key in COUNTERS}
    count = delta["requests"]
    if not count:
        return
    result.server_mean_ms = delta["ttft_s"] / count * 1e3
    result.note += (
        f"; server: {count:.0f} requests, {delta['prompt'] / count:.1f} prompt and "
        f"{delta['output'] / count:.1f} output tokens each, {delta['cached'] / count:.1f} "
        f"cached, {delta['preempted']:.0f} preempted"
    )
