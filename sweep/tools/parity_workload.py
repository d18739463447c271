"""What both clients of the parity check offer: the workload, the server, the shared traces.

`sweep.tools.parity` builds these from its arguments: the `python -m sweep` overrides both sides
share, the server backend (vLLM or the sim) built from them, a wider random-weight model when
asked (`--scale`), and with `--same-arrivals` one trace per round that vLLM's client reads as its
`timed_trace` dataset and ours as `dataset=trace`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

from backends import backend_class
from backends.models.cache import cached_build
from backends.models.source import resolve_model_path
from backends.models.tiny import ensure_tiny_model
from sweep.loadgen.arrivals import arrival_offsets
from sweep.plan.plan import build_plan

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
    """The dataset options of vLLM's client: its random prompts, or the round's shared trace."""
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
