"""Parity check: our load generator against vLLM's own benchmark client, on one vLLM server.

Starts one `vllm_server` deployment (the project's tiny model on CPU by default, or
`--model PATH` and `--num-gpus N`), then offers the same workload through both clients, in
alternating order for `--rounds` rounds: random prompts of `--input-len` tokens, exactly
`--output-len` output tokens (ignore_eos), Poisson arrivals at `--rate` req/s, at most
`--concurrency` in flight. Ours runs the real trial path (`sweep.trial.run_trial`); vLLM's is
`vllm.benchmarks.serve` (its parser built with `add_cli_args`, then `main`). Prints output tok/s
and median TTFT of each round, their medians, and the relative difference.

Both clients rescale their Poisson schedules to offer exactly the configured rate, so in an
open loop below saturation the comparison is of the measurement itself, not of two draws.

Usage:
    .venv/bin/python scripts/compare_vllm_client.py [--rounds 3] [--prompts 200] ...
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
from pathlib import Path

from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backends.models import resolve_model_path  # noqa: E402
from backends.vllm_server import VLLMServerBackend  # noqa: E402
from sweep import records as R  # noqa: E402
from sweep.plan import build_plan  # noqa: E402
from sweep.trial import run_trial  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model dir or hub id (default: tiny)")
    parser.add_argument("--num-gpus", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def ours(backend, tokenizer, spec) -> tuple[float, float]:
    backend.reset_between_trials()
    files = run_trial(backend, tokenizer, spec, {})
    summary = files.summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    errors = [e for e in files.requests.column(R.ERROR).to_pylist() if e]
    assert not errors, f"{len(errors)} requests failed, e.g. {errors[0]}"
    return summary[R.OUTPUT_THROUGHPUT], summary[R.latency_column("ttft", "median")]


def theirs(backend, args: argparse.Namespace, round_idx: int) -> tuple[float, float]:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    backend.reset_between_trials()
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    bench = parser.parse_args([
        "--backend", "openai",
        "--base-url", backend.base_url,
        "--model", backend.served_model,
        "--dataset-name", "random",
        "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len),
        "--num-prompts", str(args.prompts),
        "--request-rate", str(args.rate),
        "--max-concurrency", str(args.concurrency),
        "--ignore-eos",
        "--seed", str(round_idx),
        "--disable-tqdm",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # its own report table; we print ours
        result = main(bench)
    assert result["completed"] == args.prompts, result.get("errors")
    return result["output_throughput"], result["median_ttft_ms"]


def main() -> None:
    args = parse_args()
    overrides = [
        "sweep.name=parity",
        "backend=vllm_server",
        f"backend.num_gpus={args.num_gpus}",
        "workload=open_loop",
        f"workload.num_requests={args.prompts}",
        f"workload.request_rate={args.rate}",
        f"workload.concurrency={args.concurrency}",
        f"workload.output_len={args.output_len}",
        "workload.warmup_requests=0",  # as vllm bench serve (--num-warmups 0)
        f"dataset.input_len={args.input_len}",
    ]
    if args.model:
        overrides += ["model.generator=null", f"model.path={args.model}"]
    (spec,) = build_plan(overrides).trials
    config = spec.config
    model_path = resolve_model_path(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    backend = VLLMServerBackend(config.backend, model_path)
    print(f"starting vLLM on {model_path} ...", flush=True)
    rows = []
    with backend:
        print(f"server up at {backend.base_url}; {args.rounds} rounds of each client", flush=True)
        ours(backend, tokenizer, spec)  # warm-up round, not counted
        for round_idx in range(args.rounds):
            # Alternate who goes first, so slow drift of the machine favours neither client.
            clients = {
                "ours": lambda: ours(backend, tokenizer, spec),
                "vllm bench": lambda r=round_idx: theirs(backend, args, r),
            }
            order = list(clients) if round_idx % 2 == 0 else list(reversed(clients))
            for client in order:
                tok_s, ttft_ms = clients[client]()
                rows.append((round_idx, client, tok_s, ttft_ms))
                print(f"round {round_idx} {client:>22}: {tok_s:8.1f} tok/s {ttft_ms:7.1f} ms")
    report(rows, args)


def report(rows: list[tuple[int, str, float, float]], args: argparse.Namespace) -> None:
    def med(client: str, col: int) -> float:
        return statistics.median(r[col] for r in rows if r[1] == client)

    print(
        f"\n{args.prompts} prompts, {args.input_len} in / {args.output_len} out, "
        f"{args.rate:g} req/s, concurrency cap {args.concurrency}, median of {args.rounds} rounds"
    )
    print(f"{'client':<24}{'output tok/s':>14}{'diff':>9}{'median TTFT ms':>16}{'diff':>9}")
    ref_tok, ref_ttft = med("vllm bench", 2), med("vllm bench", 3)
    for client in ("vllm bench", "ours"):
        tok, ttft = med(client, 2), med(client, 3)
        print(
            f"{client:<24}{tok:>14.1f}{(tok - ref_tok) / ref_tok:>+9.1%}"
            f"{ttft:>16.1f}{(ttft - ref_ttft) / ref_ttft:>+9.1%}"
        )


if __name__ == "__main__":
    main()
