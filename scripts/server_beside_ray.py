"""Does an idle local Ray on the client's core slow a vLLM server on the other core?

The parity check (`compare_vllm_client.py --same-arrivals`) found vLLM's own TTFT higher while
our sweep ran than while vLLM's client ran, on the same arrivals, although our client adds less
to TTFT than vLLM's. This script takes our client out of the question: every round, vLLM's
client alone replays the round's trace twice, once with nothing else on its core ("bare") and
once beside an idle local Ray started as `python -m sweep` starts it (`sweep.driver`'s system
config, one CPU, no dashboard), in alternating order. It prints each run's median TTFT, the
server's own mean TTFT (vLLM's histogram over the run) and output tok/s, then the paired
differences over rounds with bootstrap 95% intervals.

Usage (a 2-core machine: server on CPU 0, client and Ray on CPU 1):
    .venv/bin/python scripts/server_beside_ray.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_vllm_client as parity  # noqa: E402  (scripts/, beside this)
from parity_report import median_interval  # noqa: E402

# A local Ray as the sweep starts it, idle until its stdin closes.
IDLE_RAY = """
import logging, sys
import ray
from sweep.driver import LOCAL_SYSTEM_CONFIG
ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False,
         logging_level=logging.WARNING, _node_ip_address="127.0.0.1",
         _system_config=LOCAL_SYSTEM_CONFIG)
print("ready", flush=True)
sys.stdin.read()
ray.shutdown()
"""
SETTLE_S = 3.0  # after Ray says it is up, before the run starts
VARIANTS = ("bare", "ray idle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--results-dir", default="/tmp/server-beside-ray")
    own = parser.parse_args()
    sys.argv = [sys.argv[0], "--scale", "512,4", "--same-arrivals", "--no-prefix-caching",
                "--server-cpus", "0", "--client-cpus", "1", "--input-len", "128",
                "--output-len", "32", "--prompts", "80", "--rate", "2"]  # fmt: skip
    args = parity.parse_args()
    results = Path(own.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    model = parity.scaled_model(512, 4)
    server = parity.server_backend(args, parity.workload_overrides(args, model))
    parity.start_confined(server, args)
    runs: dict[str, list] = {v: [] for v in VARIANTS}
    try:
        for number in range(own.rounds + 1):  # the first is a warm-up
            for variant in VARIANTS if number % 2 == 0 else VARIANTS[::-1]:
                result = one_run(server, args, results, variant, number)
                print(f"round {number - 1} {variant:9s} median TTFT {result.median_ttft_ms:6.1f} "
                      f"ms, server's mean {result.server_mean_ms:6.1f} ms, "
                      f"tok/s {result.tok_s:.1f}", flush=True)  # fmt: skip
                if number > 0:
                    runs[variant].append(result)
    finally:
        server.stop()
    report(runs)


def one_run(server, args: argparse.Namespace, results: Path, variant: str, number: int):
    """vLLM's client over round `number`'s trace, beside an idle Ray for `ray idle`."""
    ray = None
    if variant == "ray idle":
        ray = subprocess.Popen(
            [sys.executable, "-c", IDLE_RAY],
            cwd=parity.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if ray.stdout.readline().strip() != "ready":
            raise SystemExit("the idle Ray did not start")
        time.sleep(SETTLE_S)
    try:
        server.reset_between_trials()
        before = parity.server_totals(server)
        name = f"{variant.replace(' ', '_')}-{number:03d}"
        result = parity.theirs(server, args, results, name, number)
        parity.server_round(result, before, parity.server_totals(server))
    finally:
        if ray is not None:
            ray.stdin.close()
            ray.wait(timeout=60)
    return result


def report(runs: dict[str, list]) -> None:
    """Paired differences, `ray idle` against `bare`, with bootstrap 95% intervals."""
    pairs = list(zip(runs["ray idle"], runs["bare"], strict=True))
    for what, value in (("server's mean TTFT", lambda r: r.server_mean_ms),
                        ("client's median TTFT", lambda r: r.median_ttft_ms),
                        ("output tok/s", lambda r: r.tok_s)):  # fmt: skip
        diffs = np.array([value(a) / value(b) - 1 for a, b in pairs])
        median, low, high = median_interval(diffs)
        print(
            f"ray idle against bare, {what}: median {median:+.1%} (95% interval "
            f"{low:+.1%} .. {high:+.1%}), higher in {int((diffs > 0).sum())} of {diffs.size}"
        )


if __name__ == "__main__":
    main()
