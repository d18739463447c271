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
and requests.parquet it wrote. `--path direct` calls the trial function (`sweep.trial.run_trial`)
in this process, with the same backend config against the same endpoint; `--path both` runs the
two in turn, so that the paths can be compared with each other too.

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
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parity_report import REF, Round, report  # noqa: E402  (scripts/, beside this)
from process_watch import cpu_ids, run_child, thread_cpus  # noqa: E402
from server_view import server_after, server_before, server_truth  # noqa: E402

from analysis.load import load_requests, load_summary  # noqa: E402
from backends import backend_class  # noqa: E402
from backends.models.cache import cached_build  # noqa: E402
from backends.models.source import resolve_model_path  # noqa: E402
from backends.models.tiny import ensure_tiny_model  # noqa: E402
from sweep.core import records as R  # noqa: E402
from sweep.datasets.cache import PromptSource  # noqa: E402
from sweep.loadgen.arrivals import arrival_offsets  # noqa: E402
from sweep.plan import build_plan  # noqa: E402
from sweep.trial import run_trial  # noqa: E402

PATHS = {"sweep": "ours sweep", "direct": "ours direct"}
# vLLM's client in a process of its own, so that it is confined like ours and shares nothing
# with this script.
VLLM_CLIENT = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def measured(summary: dict[str, Any], requests: Any, where: str) -> tuple[float, list[float]]:
    """Output tok/s and each measured request's TTFT (ms) of one trial's summary and requests."""
    if summary[R.TRIAL_STATUS] != R.STATUS_OK:
        raise SystemExit(f"{where}: trial failed: {summary[R.ERROR_MESSAGE]}")
    failed = requests[requests[R.STATUS] != R.STATUS_OK]
    if not failed.empty:
        raise SystemExit(f"{where}: {len(failed)} requests failed, e.g. {failed[R.ERROR].iloc[0]}")
    in_window = requests[requests[R.IN_WINDOW]]
    return summary[R.OUTPUT_THROUGHPUT], list(in_window[R.TTFT_S] * 1e3)


def trust_note(summary: dict[str, Any]) -> str:
    """The trial's own view of its client: CPU, saturation flag, the worker's niceness."""
    note = f"client CPU {summary.get(R.CLIENT_CPU_PERCENT) or 0:.0f}%"
    if summary.get(R.CLIENT_SATURATED):
        note += ", FLAGGED client saturated"
    nice = summary.get(R.ENV_WORKER_NICE)
    return note + ("" if nice is None or nice != nice else f", worker nice {nice:g}")


def ours_sweep(overrides: list[str], results: Path, name: str, args) -> Round:
    """One round through `python -m sweep`: a new sweep `name`, read back from its Parquet."""
    argv = [sys.executable, "-m", "sweep", *overrides, f"sweep.name={name}",
            f"output.dir={results}"]  # fmt: skip
    confined = os.sched_getaffinity(0)
    if args.isolate:  # the sweep places its own processes: the load generator on the last core
        argv.append("cluster.isolate_client=on")
        os.sched_setaffinity(0, (args.server_cpus or set()) | (args.client_cpus or confined))
    try:
        wall_s, watch = run_child("python -m sweep", argv, results / f"{name}.log", ROOT)
    finally:
        os.sched_setaffinity(0, confined)
    (summary,) = load_summary(results / name).to_dict("records")  # one trial per sweep
    tok_s, ttfts = measured(summary, load_requests(results / name), f"sweep {name}")
    note = f"python -m sweep {wall_s:.0f} s, {trust_note(summary)}; "
    return Round(tok_s, ttfts, note + watch.summary(args.client_cpus))


def ours_direct(backend, prompts: PromptSource, spec) -> Round:
    """One round of `sweep.trial.run_trial` in this process."""
    files = run_trial(backend, prompts, spec, {})
    summary = files.summary.to_pylist()[0]
    tok_s, ttfts = measured(summary, files.requests.to_pandas(), "direct trial")
    return Round(tok_s, ttfts, trust_note(summary))


def theirs(server, args: argparse.Namespace, results: Path, name: str, seed: int) -> Round:
    """One round of vLLM's client in a subprocess; every request's TTFT from its result file."""
    argv = [
        sys.executable, "-c", VLLM_CLIENT,
        "--backend", "openai",
        "--base-url", server.base_url,
        "--model", server.served_model,
        "--tokenizer", server.model_path,
        *vllm_dataset(args, results, seed),
        "--num-prompts", str(args.prompts),
        "--request-rate", str(args.rate),
        "--max-concurrency", str(args.concurrency),
        "--ignore-eos",
        "--temperature", str(args.temperature),
        "--seed", str(seed),
        "--disable-tqdm",
        "--save-result", "--save-detailed",  # keeps every request's TTFT in the result
        "--result-dir", str(results),
        "--result-filename", f"{name}.json",
    ]  # fmt: skip
    wall_s, watch = run_child("vllm bench", argv, results / f"{name}.log", ROOT)
    result = json.loads((results / f"{name}.json").read_text())
    if result["completed"] != args.prompts:
        raise SystemExit(f"vllm bench {name}: {result['failed']} requests failed")
    note = f"client {wall_s:.0f} s; " + watch.summary(args.client_cpus)
    return Round(result["output_throughput"], [t * 1e3 for t in result["ttfts"]], note)


BLOCK = 16  # tokens per `hash_ids` entry in the shared traces (vLLM's timed_trace default)


def arrivals_trace(args: argparse.Namespace, results: Path, number: int) -> Path:
    """Round `number`'s trace for `--same-arrivals`: Mooncake rows, written once, read by both.

    Poisson arrivals at `--rate` drawn as our open loop draws them (`arrival_offsets`: rescaled
    to offer the rate exactly, the first at 0); each row's own `hash_ids`, so no two prompts
    share a block.
    """
    path = results / f"arrivals-{number:03d}.jsonl"
    if path.exists():
        return path
    times_ms = [at * 1e3 for at in arrival_offsets(args.prompts, args.rate, seed=number)]
    blocks = -(-args.input_len // BLOCK)
    with path.open("w") as out:
        for row, at_ms in enumerate(times_ms):
            first = (number * args.prompts + row) * blocks
            out.write(json.dumps({
                "timestamp": round(at_ms, 3), "input_length": args.input_len,
                "output_length": args.output_len, "hash_ids": list(range(first, first + blocks)),
            }) + "\n")  # fmt: skip
    return path


def vllm_dataset(args: argparse.Namespace, results: Path, number: int) -> list[str]:
    """vLLM's client's dataset options: its random prompts, or the round's shared trace."""
    if not args.same_arrivals:
        return ["--dataset-name", "random", "--random-input-len", str(args.input_len),
                "--random-output-len", str(args.output_len)]  # fmt: skip
    return ["--dataset-name", "timed_trace",
            "--dataset-path", str(arrivals_trace(args, results, number)),
            "--timed-trace-sec-multiplier", "0.001",  # Mooncake's timestamps are in ms
            "--timed-trace-chunk-hash-size", str(BLOCK)]  # fmt: skip


def round_overrides(args: argparse.Namespace, results: Path, number: int) -> list[str]:
    """Ours, with `--same-arrivals`: the round's shared trace in place of random prompts."""
    if not args.same_arrivals:
        return []
    path = arrivals_trace(args, results, number)
    ids = [] if args.text_prompts else ["backend.send_token_ids=true"]  # as vLLM's client
    return ["dataset=trace", f"dataset.path={path}", f"dataset.block_size={BLOCK}",
            "workload.request_rate=null", *ids]  # fmt: skip


def scaled_model(hidden: int, layers: int) -> str:
    """The tiny model's tokenizer and config, `hidden` wide and `layers` deep, random weights."""
    tiny = ensure_tiny_model()

    def build(out: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig.from_pretrained(tiny)
        config.hidden_size, config.num_hidden_layers = hidden, layers
        config.intermediate_size = hidden * 11 // 4
        config.num_attention_heads = hidden // config.head_dim
        config.num_key_value_heads = max(1, config.num_attention_heads // 4)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copy(tiny / name, out / name)

    key = f"parity-llama-{hidden}x{layers}"
    return str(cached_build("models", key, build, f"a {hidden}x{layers} Llama"))


def workload_overrides(args: argparse.Namespace, model: str | None) -> list[str]:
    """The workload both sides of the comparison share, as `python -m sweep` overrides."""
    if math.isinf(args.rate):  # vLLM's client: --request-rate inf --max-concurrency N
        mode = ["workload=closed_loop"]
    elif args.same_arrivals:  # arrivals and lengths: each round's trace (`round_overrides`)
        mode = ["workload=open_loop"]
    else:
        mode = ["workload=open_loop", f"workload.request_rate={args.rate}"]
    overrides = [
        *mode,
        f"workload.concurrency={args.concurrency}",
        f"workload.num_requests={args.prompts}",
        f"workload.output_len={args.output_len}",
        f"workload.temperature={args.temperature}",
        "workload.warmup_requests=0",  # as vllm bench serve (--num-warmups 0)
    ]
    if not args.same_arrivals:
        overrides.append(f"dataset.input_len={args.input_len}")
    return overrides + (["model.generator=null", f"model.path={model}"] if model else [])


def server_backend(args: argparse.Namespace, workload: list[str]):
    """The vllm_server or sim backend, built from the same workload, not yet started."""
    overrides = [
        "sweep.name=parity",
        f"backend={'vllm_server' if args.server == 'vllm' else 'sim'}",
        f"backend.num_gpus={args.num_gpus}",
        *workload,
    ]
    if args.server == "sim":
        overrides += [f"backend.ttft_ms={args.sim_ttft_ms}", f"backend.itl_ms={args.sim_itl_ms}"]
    else:
        if args.no_prefix_caching:
            overrides.append("backend.enable_prefix_caching=false")
        if args.server_cpus:  # vLLM on CPU binds its OpenMP threads itself, to every core
            cpus = ",".join(map(str, args.server_cpus))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpus)
    (spec,) = build_plan(overrides).trials
    model_path = resolve_model_path(spec.config.model)
    return backend_class(spec.config.backend.name)(spec.config.backend, model_path)


def main() -> None:
    args = parse_args()
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


if __name__ == "__main__":
    main()
