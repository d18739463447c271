"""The deployments the folder's shared engines run (`conftest.py`), as sweep overrides."""

import dataclasses

from tests.helpers import deployment_of

OUTPUT_LEN = 96
LOADED = [  # three generated adapters, loaded on both engines; fp32 for the scoring tests
    "++backend.lora_adapters={sql: generated, chat: generated, code: generated}",
    "backend.lora_count=3",
    "backend.dtype=fp32",  # vLLM's `auto` runs a float32 model in bfloat16 on CPU; scoring compares
]
# Structured JSON without free whitespace, a server-wide setting of vLLM's xgrammar backend: the
# tiny model, enforced to a schema, would pad its answers with blanks to the token limit.
COMPACT_JSON = (
    "+backend.extra_args.structured-outputs-config="
    "{backend: xgrammar, disable_any_whitespace: true}"
)
# Tool calls: vLLM 0.32 returns `tool_calls` only through a tool parser, which it loads only with
# `--enable-auto-tool-choice` (without, even `required` and named choices are refused, HTTP 400);
# `pythonic` builds on the tiny tokenizer (it needs no special tokens) and takes `required` and
# named choices, which vLLM enforces with its structured-output backend. Cached prompt tokens in
# every usage.
TOOLS = [
    "+backend.extra_args.tool-call-parser=pythonic",
    "+backend.extra_args.enable-auto-tool-choice=true",
    "+backend.extra_args.enable-prompt-tokens-details=true",
]
SERVING = [
    "+experiment=quickstart_serving",
    "sweep.grid.backend=[vllm_server]",
    "backend=vllm_server",  # also the base config's, which takes the adapters below
    "workload.num_requests=48",  # a few seconds per trial, so /metrics is sampled mid-load
    f"workload.output_len={OUTPUT_LEN}",
    "dataset.input_len=24",
    "workload.lora_assignment=base",
    "+backend.extra_args.enable-log-requests=true",
    COMPACT_JSON,
    *TOOLS,
    *LOADED,
]
LORA = [
    "+experiment=lora_adapters",
    "sweep.grid={backend.lora_count: [3]}",
    "workload.warmup_requests=0",
    *LOADED,
]
LORA_SERVER = [
    *LORA,
    "workload.num_requests=36",
    "+backend.extra_args.enable-log-requests=true",
    COMPACT_JSON,
    *TOOLS,
]
LORA_OFFLINE = [
    *LORA,
    "backend=vllm",
    "backend.max_num_seqs=8",
    "backend.max_model_len=512",
    "workload=throughput_bound",
    "workload.batch_size=6",
    "workload.num_requests=12",
]


def one_deployment(*plans):
    """The trials of several one-deployment plans as one deployment: the same backend config."""
    first, *rest = [deployment_of(overrides) for overrides in plans]
    for other in rest:
        assert other.config.backend == first.config.backend, (first.config, other.config)
    trials = [t for d in [first, *rest] for t in d.trials]
    return dataclasses.replace(first, trials=trials)
