"""Parity check: our load generator against vLLM's own benchmark client, on one server.

Starts one server, then offers the same workload through both clients, in alternating order for
`--rounds` rounds: random prompts of `--input-len` tokens, exactly `--output-len` output tokens
(ignore_eos), Poisson arrivals at `--rate` req/s, at most `--concurrency` in flight. Ours runs the
real trial path (`sweep.trial.run_trial`); vLLM's is `vllm.benchmarks.serve` (its parser built
with `add_cli_args`, then `main`).

`--server vllm` (default) is a `vllm_server` deployment: the project's tiny model on CPU, or
`--model PATH` and `--num-gpus N`. Its TTFT varies from round to round with the machine's load
more than the two clients could differ, so every request's TTFT is pooled over the rounds and
the difference of the pooled medians is given with a bootstrap 95% interval.
`--server sim` is the simulated server (`backends.sim_server`) with a fixed TTFT of `--sim-ttft-ms`
and inter-token latency of `--sim-itl-ms`: no compute noise, so it measures the clients alone,
and its own first-token stamps give the true TTFT both clients should report.

Prints each round's output tok/s and median TTFT, then the medians over rounds and the pooled
medians with their relative differences from vLLM's client. Both clients rescale their Poisson
schedules to offer exactly the configured rate, so below saturation the comparison is of the
measurement itself, not of two draws.

Usage:
    .venv/bin/python scripts/compare_vllm_client.py [--server sim] [--rounds 3] [--prompts 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from backends import backend_class  # noqa: E402
from backends.convert_cache import cached_build  # noqa: E402
from backends.models import resolve_model_path  # noqa: E402
from backends.tiny_model import ensure_tiny_model  # noqa: E402
from sweep.core import records as R  # noqa: E402
from sweep.datasets.cache import PromptSource  # noqa: E402
from sweep.plan import build_plan  # noqa: E402
from sweep.trial import run_trial  # noqa: E402

CLIENTS = ("vllm bench", "ours")
BOOTSTRAP = 2000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("vllm", "sim"), default="vllm")
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
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup-rounds", type=int, default=2, help="rounds of each client not counted"
    )
    parser.add_argument("--sim-ttft-ms", type=float, default=50.0)
    parser.add_argument("--sim-itl-ms", type=float, default=20.0)
    return parser.parse_args()


class Round:
    """One client's round: output tok/s, and every successful request's TTFT in ms."""

    def __init__(self, tok_s: float, ttfts_ms: list[float], truth_ms: list[float]) -> None:
        self.tok_s, self.ttfts_ms, self.truth_ms = tok_s, ttfts_ms, truth_ms
        self.median_ttft_ms = statistics.median(ttfts_ms)


def ours(backend, prompts, spec) -> tuple[float, list[float]]:
    files = run_trial(backend, prompts, spec, {})
    summary = files.summary.to_pylist()[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = files.requests.to_pandas()
    errors = requests[R.ERROR].dropna()
    assert errors.empty, f"{len(errors)} requests failed, e.g. {errors.iloc[0]}"
    measured = requests[requests[R.IN_WINDOW]]
    return summary[R.OUTPUT_THROUGHPUT], list(measured[R.TTFT_S] * 1e3)


def theirs(backend, args: argparse.Namespace, round_idx: int) -> tuple[float, list[float]]:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    bench = parser.parse_args([
        "--backend", "openai",
        "--base-url", backend.base_url,
        "--model", backend.served_model,
        "--tokenizer", backend.model_path,
        "--dataset-name", "random",
        "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len),
        "--num-prompts", str(args.prompts),
        "--request-rate", str(args.rate),
        "--max-concurrency", str(args.concurrency),
        "--ignore-eos",
        "--seed", str(round_idx % 1000),
        "--disable-tqdm",
        "--save-detailed",  # keeps every request's TTFT in the result
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # its own report table; we print ours
        result = main(bench)
    assert result["completed"] == args.prompts, result.get("errors")
    return result["output_throughput"], [t * 1e3 for t in result["ttfts"]]


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


def server_truth(backend, seen: set[str]) -> list[float]:
    """The sim server's own TTFT (first token - arrival, ms) of the requests new since `seen`."""
    stamps = httpx.get(f"{backend.base_url}/sim/requests", timeout=30).json()
    new = [v for k, v in stamps.items() if k not in seen and "first_token_ns" in v]
    seen.update(stamps)
    return [(v["first_token_ns"] - v["arrival_ns"]) / 1e6 for v in new]


def main() -> None:
    args = parse_args()
    overrides = [
        "sweep.name=parity",
        f"backend={'vllm_server' if args.server == 'vllm' else 'sim'}",
        f"backend.num_gpus={args.num_gpus}",
        "workload=open_loop",
        f"workload.num_requests={args.prompts}",
        f"workload.request_rate={args.rate}",
        f"workload.concurrency={args.concurrency}",
        f"workload.output_len={args.output_len}",
        "workload.warmup_requests=0",  # as vllm bench serve (--num-warmups 0)
        f"dataset.input_len={args.input_len}",
    ]
    if args.server == "sim":
        overrides += [f"backend.ttft_ms={args.sim_ttft_ms}", f"backend.itl_ms={args.sim_itl_ms}"]
    model = scaled_model(*map(int, args.scale.split(","))) if args.scale else args.model
    if model:
        overrides += ["model.generator=null", f"model.path={model}"]
    (spec,) = build_plan(overrides).trials
    config = spec.config
    model_path = resolve_model_path(config.model)
    prompts = PromptSource(model_path, config.model.revision, config.model.trust_remote_code)
    backend = backend_class(config.backend.name)(config.backend, model_path)
    print(f"starting the {args.server} server for {model_path} ...", flush=True)
    rounds: dict[str, list[Round]] = {client: [] for client in CLIENTS}
    seen: set[str] = set()
    with backend:
        print(f"server up at {backend.base_url}; {args.rounds} rounds of each client", flush=True)
        run = {
            "ours": lambda r: ours(backend, prompts, spec),
            "vllm bench": lambda r: theirs(backend, args, r),
        }
        # vLLM on CPU compiles for each batch shape it meets, and its TTFT falls over the first
        # thousand requests or so: warm-up rounds let it meet them before anything is counted.
        for round_idx in range(-args.warmup_rounds, args.rounds):
            # Alternate who goes first, so slow drift of the machine favours neither client.
            order = CLIENTS if round_idx % 2 == 0 else tuple(reversed(CLIENTS))
            for client in order:
                backend.reset_between_trials()
                tok_s, ttfts = run[client](round_idx)
                truth = server_truth(backend, seen) if args.server == "sim" else []
                if round_idx >= 0:
                    rounds[client].append(Round(tok_s, ttfts, truth))
                note = f" (server: {statistics.median(truth):.1f} ms)" if truth else ""
                print(
                    f"{'round' if round_idx >= 0 else 'warm-up'} {round_idx} {client:>12}: "
                    f"{tok_s:8.1f} tok/s median TTFT {statistics.median(ttfts):7.1f} ms{note}",
                    flush=True,
                )
    report(rounds, args)


def bootstrap_ci(ours: np.ndarray, ref: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% interval of (median(ours) - median(ref)) / median(ref), resampling requests."""
    rng = np.random.default_rng(seed)
    a = np.median(rng.choice(ours, (BOOTSTRAP, ours.size)), axis=1)
    b = np.median(rng.choice(ref, (BOOTSTRAP, ref.size)), axis=1)
    low, high = np.percentile((a - b) / b, [2.5, 97.5])
    return float(low), float(high)


def report(rounds: dict[str, list[Round]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.server} server; {args.prompts} prompts, {args.input_len} in / "
        f"{args.output_len} out, {args.rate:g} req/s, concurrency cap {args.concurrency}, "
        f"{args.rounds} rounds"
    )
    pooled = {c: np.concatenate([r.ttfts_ms for r in rounds[c]]) for c in CLIENTS}
    tok = {c: statistics.median(r.tok_s for r in rounds[c]) for c in CLIENTS}
    by_round = {c: statistics.median(r.median_ttft_ms for r in rounds[c]) for c in CLIENTS}
    pooled_median = {c: float(np.median(pooled[c])) for c in CLIENTS}
    ref = CLIENTS[0]
    print(
        f"{'client':<12}{'output tok/s':>14}{'diff':>8}{'TTFT ms, median of rounds':>28}"
        f"{'diff':>8}{'TTFT ms, pooled median':>24}{'diff':>8}   95% interval"
    )
    for client in CLIENTS:
        interval = ""
        if client != ref:
            low, high = bootstrap_ci(pooled[client], pooled[ref])
            interval = f"   {low:+.1%} .. {high:+.1%}"
        print(
            f"{client:<12}{tok[client]:>14.1f}{tok[client] / tok[ref] - 1:>+8.1%}"
            f"{by_round[client]:>28.1f}{by_round[client] / by_round[ref] - 1:>+8.1%}"
            f"{pooled_median[client]:>24.1f}{pooled_median[client] / pooled_median[ref] - 1:>+8.1%}"
            f"{interval}"
        )
    truth = [t for c in CLIENTS for r in rounds[c] for t in r.truth_ms]
    if truth:
        print(f"server's own TTFT (all requests, both clients): median {np.median(truth):.2f} ms")


if __name__ == "__main__":
    main()
