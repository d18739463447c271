"""Parity check: our load generator, as a user runs it, against vLLM's own benchmark client.

Starts one server, then offers the same workload through both clients, in alternating order, for
`--warmup-rounds` rounds not counted and `--rounds` counted: `--prompts` random prompts of
`--input-len` tokens, exactly `--output-len` output tokens (ignore_eos), Poisson arrivals at
`--rate` req/s with at most `--concurrency` in flight (`--rate inf`: a closed loop of
`--concurrency` requests). vLLM's client is `vllm.benchmarks.serve` (its parser built with
`add_cli_args`, then `main`), run in a process of its own.

Ours, with `--path sweep` (the default), is what a user runs: a `python -m sweep backend=openai
backend.url=<the server> backend.extensions=true ...` subprocess, through the local Ray it
starts (a Ray worker process, Ray's daemons beside it), telemetry and result writing included.
Each round is a new sweep in the results folder (`--results-dir`, else a temporary one removed at
the end), and its output tok/s and every request's TTFT are read back from the summary.parquet
and requests.parquet it wrote. `--path direct` calls the trial function
(`sweep.worker.trial.run_trial`) in this process, with the same backend config against the same
endpoint; `--path both` runs the two in turn, so that the paths can be compared with each other too.

`--server-cpus` and `--client-cpus` confine the two sides (CPU affinity, inherited by every
process each side starts): the server's process tree (vLLM's OpenMP threads are bound to the same
CPUs), and each client's, `python -m sweep` with its whole Ray, or vLLM's client. On a 2-core
machine: `--server-cpus 0 --client-cpus 1`. Each round's line says where its processes ran.

`--server vllm` (default) is a `vllm_server` deployment: the project's tiny model on CPU, or
`--model PATH` and `--num-gpus N`. Its TTFT varies from round to round with the machine's load
more than the two clients could differ, so every request's TTFT is pooled over the rounds and
the difference of the pooled medians is given with a bootstrap 95% interval that resamples
rounds, paired (a round's requests share the server's state, so they are not independent).
Both clients send the same `--temperature` (greedy by default, as ours), and
`--no-prefix-caching` keeps vLLM's cache from favouring its client's prompts.
`--server sim` is the simulated server (`backends.sim_server`) with a fixed TTFT of `--sim-ttft-ms`
and inter-token latency of `--sim-itl-ms`: no compute noise, so it measures the clients alone,
and its own first-token stamps give the true TTFT both clients should report.

Prints each round's output tok/s and median TTFT, the medians over rounds, the pooled medians
with their relative differences from vLLM's client, and whether ours is within 5% of it on
both, interval included. Both clients rescale their Poisson schedules to offer exactly the
configured rate, so below saturation the comparison is of the measurement itself, not of two
draws; their draws still differ, and a round's queueing with them. `--same-arrivals` has both
replay one trace per round instead (Poisson at `--rate`, drawn from the round's number; vLLM's
client as its `timed_trace` dataset, ours as `dataset=trace`), so that the two runs of a round
offer the very same arrival times and lengths; both send the prompts as token ids (vLLM's client
always does with a trace; ours with `backend.send_token_ids=true`, unless `--text-prompts`).

With `--server vllm`, each round also reads vLLM's own TTFT histogram (`/metrics`, its `_sum`
and `_count` before and after the round): the server's mean TTFT over that round's requests,
beside the client's mean. A closed loop on a CPU server falls into waves (requests of
one output length end together, and the next ones queue behind each other's prefill), so its
TTFT depends on the few hundred microseconds in which a client turns a reply into the next
request; the client's mean minus the server's is what the client adds to the server's own
figure, the same quantity for both clients whatever the waves did.

Usage:
    .venv/bin/python scripts/compare_vllm_client.py [--server sim] [--rounds 3] [--prompts 200]
        [--path sweep|direct|both] [--server-cpus 0 --client-cpus 1] [--rate inf]
        [--same-arrivals]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path

from backends import backend_class
from sweep.datasets.cache import PromptSource
from sweep.plan.plan import build_plan
from sweep.tools.parity_clients import ours_direct, ours_sweep, theirs
from sweep.tools.parity_report import REF, Round, report
from sweep.tools.parity_workload import (
    round_overrides,
    scaled_model,
    server_backend,
    workload_overrides,
)
from sweep.tools.process_watch import cpu_ids, thread_cpus
from sweep.tools.server_counters import server_after, server_before, server_truth

PATHS = {"sweep": "ours sweep", "direct": "ours direct"}


def parser() -> argparse.ArgumentParser:
    """The parity check's options (`scripts/compare_vllm_client.py`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("vllm", "sim"), default="vllm")
    parser.add_argument(
        "--path",
        choices=("sweep", "direct", "both"),
        default="sweep",
        help="ours through `python -m sweep` and Ray (the user's path), or the trial function "
        "called in this process, or both",
    )
    parser.add_argument("--model", default=None, help="model dir or hub id (default: tiny)")
    parser.add_argument(
        "--scale",
        metavar="HIDDEN,LAYERS",
        help="a random-weight Llama of this width and depth with the tiny model's tokenizer, "
        "built once (e.g. 512,4: a TTFT of tens of ms on CPU, where the tiny model's is ~10)",
    )
    parser.add_argument("--num-gpus", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument(
        "--rate", type=float, default=20.0, help="req/s, Poisson; inf: a closed loop"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="cap on requests in flight (closed loop: all)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup-rounds", type=int, default=2, help="rounds of each client not counted"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0,
        help="sent by both clients (vLLM's client sends none unless told, and the server then "
        "samples at its default, 1.0 for the tiny model, where ours is greedy)",
    )  # fmt: skip
    parser.add_argument(
        "--no-prefix-caching", action="store_true",
        help="vLLM server without its prefix cache (vLLM's random prompts are runs of "
        "consecutive token ids: on a small vocabulary, as the tiny model's 512, their first "
        "blocks repeat and hit the cache, where ours do not)",
    )  # fmt: skip
    parser.add_argument(
        "--same-arrivals", action="store_true",
        help="open loop: both clients replay one trace per round (`arrivals-NNN.jsonl`, Poisson "
        "at --rate, drawn from the round's number), so that a round's two runs offer the very "
        "same arrival times and lengths; vLLM's client as `--dataset-name timed_trace`, ours as "
        "`dataset=trace` with `backend.send_token_ids=true` (both send token ids)",
    )  # fmt: skip
    parser.add_argument(
        "--text-prompts", action="store_true",
        help="with --same-arrivals: ours sends its prompts as text, for the server to tokenize",
    )  # fmt: skip
    parser.add_argument("--sim-ttft-ms", type=float, default=50.0)
    parser.add_argument("--sim-itl-ms", type=float, default=20.0)
    parser.add_argument("--server-cpus", type=cpu_ids, help="e.g. 0 (default: not confined)")
    parser.add_argument("--client-cpus", type=cpu_ids, help="e.g. 1 (default: not confined)")
    parser.add_argument(
        "--isolate", action="store_true",
        help="ours: start `python -m sweep` on the server's and client's CPUs with "
        "cluster.isolate_client=on, so that it keeps the load generator alone on the last CPU "
        "and moves Ray's daemons to the others (as it does on nodes with 4+ cores)",
    )  # fmt: skip
    parser.add_argument(
        "--results-dir", help="keep each round's results and logs here (default: a temporary "
        "folder, removed at the end)",
    )  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> None:
    """Start the server, run every client's rounds, print the report."""
    if args.same_arrivals and (math.isinf(args.rate) or args.path != "sweep"):
        raise SystemExit("--same-arrivals needs a finite --rate and --path sweep")
    if args.text_prompts and not args.same_arrivals:
        raise SystemExit("--text-prompts applies to --same-arrivals only")
    model = scaled_model(*map(int, args.scale.split(","))) if args.scale else args.model
    workload = workload_overrides(args, model)
    results = Path(args.results_dir or tempfile.mkdtemp(prefix="parity-"))
    if results.is_dir() and any(results.iterdir()):  # a round would resume an older sweep
        raise SystemExit(f"--results-dir {results} is not empty: name a new folder")
    results.mkdir(parents=True, exist_ok=True)
    server = server_backend(args, workload)
    print(f"starting the {args.server} server for {server.model_path} ...", flush=True)
    start_confined(server, args)
    try:
        rounds = run_rounds(server, args, workload, results)
        procs, threads, cpus = thread_cpus(server.pid)
        print(f"server at the end: {procs} processes, {threads} threads on CPUs {sorted(cpus)}")
    finally:
        server.stop()
    report(rounds, args)
    if not args.results_dir:
        shutil.rmtree(results, ignore_errors=True)


def start_confined(server, args: argparse.Namespace) -> None:
    """Start the server on `--server-cpus`, then confine this process to `--client-cpus`.

    Children inherit the affinity of the thread that forks them: the server's processes get the
    first, every client started later (and the direct path's load generator) the second.
    """
    everywhere = os.sched_getaffinity(0)
    if args.server_cpus:
        os.sched_setaffinity(0, args.server_cpus)  # the server's processes inherit it
    server.start()
    os.sched_setaffinity(0, args.client_cpus or everywhere)
    procs, threads, cpus = thread_cpus(server.pid)
    print(f"server up at {server.base_url}: {procs} processes, {threads} threads on CPUs "
          f"{sorted(cpus)}; clients on CPUs {sorted(os.sched_getaffinity(0))}")  # fmt: skip


def run_rounds(server, args: argparse.Namespace, workload: list[str], results: Path):
    """Warm-up and counted rounds of every client, in alternating order; the counted ones."""
    paths = ("sweep", "direct") if args.path == "both" else (args.path,)
    clients = (REF, *(PATHS[p] for p in paths))
    # Ours attaches to the server as a user would; the direct path plans the same overrides.
    overrides = ["backend=openai", f"backend.url={server.base_url}", "backend.extensions=true",
                 *workload]  # fmt: skip
    (spec,) = build_plan(overrides).trials
    attached = backend_class("openai")(spec.config.backend, server.model_path)
    model = spec.config.model
    prompts = PromptSource(server.model_path, model.revision, model.trust_remote_code)
    if "direct" in paths:
        attached.start()
    run = {
        REF: lambda name, number: theirs(server, args, results, name, number),
        PATHS["sweep"]: lambda name, number: ours_sweep(
            overrides + round_overrides(args, results, number), results, name, args
        ),
        PATHS["direct"]: lambda name, number: ours_direct(attached, prompts, spec),
    }
    rounds: dict[str, list[Round]] = {client: [] for client in clients}
    seen: set[str] = set()
    # vLLM on CPU compiles for each batch shape it meets, and its TTFT falls over the first
    # thousand requests or so: warm-up rounds let it meet them before anything is counted.
    for number, round_idx in enumerate(range(-args.warmup_rounds, args.rounds)):
        # Alternate who goes first, so slow drift of the machine favours no client.
        for client in clients if round_idx % 2 == 0 else tuple(reversed(clients)):
            server.reset_between_trials()
            before = server_before(server, args)
            result = run[client](f"{client.split()[-1]}-{number:03d}", number)
            if args.server == "sim":
                result.truth_ms = server_truth(server, seen)
            server_after(result, server, args, before)
            if round_idx >= 0:
                rounds[client].append(result)
            print(result.line(round_idx, client), flush=True)
    return rounds
