"""Does an idle local Ray (or a CPU burner) on the client's core slow a vLLM server on the other?

The parity check (`scripts/compare_vllm_client.py --same-arrivals`) found vLLM's own TTFT higher
while our sweep ran than while vLLM's client ran, on the same arrivals, although our client adds
less to TTFT than vLLM's. This script takes our client out of the question: every round, vLLM's
client alone replays the round's trace twice, once with nothing else on its core ("bare") and
once beside an idle local Ray started as `python -m sweep` starts it (`sweep.driver.driver`'s system
config, one CPU, no dashboard), in alternating order. `--burn 0.2` puts a process beside the
client instead that keeps the client's core busy that fraction of every 10 ms (`--burn-mb 64`:
copying through 64 MiB meanwhile, traffic that evicts the server's data from the shared cache):
does load on the other core, as much as our sweep's processes could add, slow the server? It
prints each run's median TTFT, the server's own mean TTFT (vLLM's histogram over the run), output
tok/s and the server's CPU seconds, then the paired differences over rounds with bootstrap 95%
intervals.

Usage (a 2-core machine: server on CPU 0, client and Ray on CPU 1):
    .venv/bin/python -m scripts.bench.neighbours [--rounds 10] [--burn 0.2 [--burn-mb 64]]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sweep.tools import REPO, parity
from sweep.tools.parity_clients import theirs
from sweep.tools.parity_report import median_interval
from sweep.tools.parity_workload import scaled_model, server_backend, workload_overrides
from sweep.tools.server_counters import server_after, server_before

# A local Ray as the sweep starts it, idle until its stdin closes.
IDLE_RAY = """
import logging, sys
import ray
from sweep.driver.driver import LOCAL_SYSTEM_CONFIG
ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False,
         logging_level=logging.WARNING, _node_ip_address="127.0.0.1",
         _system_config=dict(LOCAL_SYSTEM_CONFIG))
print("ready", flush=True)
sys.stdin.read()
ray.shutdown()
"""
# Busy `duty` of every 10 ms period until its stdin closes: spinning, or with `mb` > 0 copying
# through a buffer of that many MiB, 1 MiB at a time (memory traffic that evicts others' caches).
BURNER = """
import sys, threading, time
duty, mb, period = float(sys.argv[1]), int(sys.argv[2]), 0.01
src, dst = bytearray(max(mb, 1) << 20), bytearray(max(mb, 1) << 20)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("ready", flush=True)
at = 0
while not done.is_set():
    start = time.perf_counter()
    while time.perf_counter() - start < duty * period:
        if mb:
            dst[at:at + (1 << 20)] = src[at:at + (1 << 20)]
            at = (at + (1 << 20)) % len(src)
    time.sleep(max(0.0, period - (time.perf_counter() - start)))
"""
SETTLE_S = 3.0  # after Ray says it is up, before the run starts


# The parity check's settings for every run: a 512x4 model on CPU 0, the client on CPU 1.
PARITY_ARGS = ["--scale", "512,4", "--same-arrivals", "--no-prefix-caching", "--server-cpus", "0",
               "--client-cpus", "1", "--input-len", "128", "--output-len", "32", "--prompts",
               "80", "--rate", "2"]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """This benchmark's options (`python -m scripts.bench.neighbours`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burn", type=float, help="a burner of this duty (0-1) instead of Ray")
    parser.add_argument("--burn-mb", type=int, default=0, help="the burner copies through MiB")
    parser.add_argument("--results-dir", default="/tmp/server-beside-ray")
    return parser


def run(own: argparse.Namespace) -> None:
    """Rounds of vLLM's client bare and beside Ray (or the burner); the paired differences."""
    if own.burn is not None and not 0 < own.burn <= 1:
        raise SystemExit("--burn is a fraction of the core: above 0, at most 1")
    args = parity.parser().parse_args(PARITY_ARGS)
    results = Path(own.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    model = scaled_model(512, 4)
    server = server_backend(args, workload_overrides(args, model))
    parity.start_confined(server, args)
    memory = f" {own.burn_mb}MiB" if own.burn_mb else ""
    variants = ("bare", "ray idle" if own.burn is None else f"burn {own.burn:.0%}{memory}")
    runs: dict[str, list] = {v: [] for v in variants}
    try:
        for number in range(own.rounds + 1):  # the first is a warm-up
            for variant in variants if number % 2 == 0 else variants[::-1]:
                result = one_run(server, args, results, variant, number, own)
                print(f"round {number - 1} {variant:9s} median TTFT {result.median_ttft_ms:6.1f} "
                      f"ms, server's mean {result.server_mean_ms:6.1f} ms, "
                      f"tok/s {result.tok_s:.1f}, server CPU {result.server_cpu_s:.2f} s",
                      flush=True)  # fmt: skip
                if number > 0:
                    runs[variant].append(result)
    finally:
        server.stop()
    report(runs, variants)


def one_run(
    server,
    args: argparse.Namespace,
    results: Path,
    variant: str,
    number: int,
    own: argparse.Namespace,
):
    """Run vLLM's client over round `number`'s trace, beside Ray or the burner unless `bare`."""
    beside = None
    if variant != "bare":
        code = [IDLE_RAY] if own.burn is None else [BURNER, str(own.burn), str(own.burn_mb)]
        beside = subprocess.Popen(
            [sys.executable, "-c", *code],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if beside.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {variant} process did not start")
        time.sleep(SETTLE_S)
    try:
        server.reset_between_trials()
        before = server_before(server, args)
        name = f"{variant.replace(' ', '_').replace('%', '')}-{number:03d}"
        result = theirs(server, args, results, name, number)
        server_after(result, server, args, before)
    finally:
        if beside is not None:
            beside.stdin.close()
            beside.wait(timeout=60)
    return result


def report(runs: dict[str, list], variants: tuple[str, str]) -> None:
    """Paired differences, beside Ray or the burner against `bare`, with 95% intervals."""
    bare, beside = variants
    pairs = list(zip(runs[beside], runs[bare], strict=True))
    for what, value in (("server's mean TTFT", lambda r: r.server_mean_ms),
                        ("client's median TTFT", lambda r: r.median_ttft_ms),
                        ("output tok/s", lambda r: r.tok_s),
                        ("server's CPU seconds", lambda r: r.server_cpu_s)):  # fmt: skip
        diffs = np.array([value(a) / value(b) - 1 for a, b in pairs])
        median, low, high = median_interval(diffs)
        print(
            f"{beside} against {bare}, {what}: median {median:+.1%} (95% interval "
            f"{low:+.1%} .. {high:+.1%}), higher in {int((diffs > 0).sum())} of {diffs.size}"
        )


if __name__ == "__main__":
    run(parser().parse_args())
