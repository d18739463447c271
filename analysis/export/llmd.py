"""llm-d-benchmark's benchmark report, schema version 0.2: one YAML report per trial.

The format is llm-d-benchmark's Pydantic model `BenchmarkReportV02`
(`llmdbenchmark/analysis/benchmark_report/schema_v0_2.py` and `schema_v0_2_components.py`,
llm-d/llm-d-benchmark at 8bc9f1ddd873a24f1657d6cca2e0d0fb6947dd36); its reader
(`import_benchmark_report`) takes YAML or JSON, its converter CLI writes YAML, so do we. A report
describes one benchmark run: `run` (ids, times), `scenario` (`stack`: the serving components;
`load`: the workload) and `results`. One trial is one run:

- `run.uid` the trial id; `run.eid` a UUID5 (URL namespace) of the sweep's name, as their
  harness derives it from its experiment id; `run.time` the trial's start, start plus wall time
  (UTC) and that wall time as an ISO-8601 duration; `run.description` "<model> [<sweep>]
  <label>", and for a failed trial " failed: <error_kind>: <error_message>".
- `scenario.stack`: one `inference_engine`, the deployment: label "<backend>-<deployment_id>",
  `cfg_id` the deployment id (a hash of its model, backend and hardware config), `tool` the
  backend's name, `role` replica, one replica, `model.name` the model as loaded (`model_id`),
  `accelerator.model` `hardware.name` and `count` `backend.num_gpus` (0 on a CPU), `native.config`
  the deployment's config and `env.*` columns.
- `scenario.load`: `tool` llm-sweep at `env.git_sha`; `parallelism` `workload.client_processes`;
  `source` random or sampled by dataset (else unknown); `input_seq_len` the lengths the window's
  requests sent (fixed when all equal, else other: mean, min, max); `output_seq_len` only where
  the output length was enforced (`workload.ignore_eos` reached the engine:
  `backend_ignore_eos`), from each request's requested length; `rate_qps` an open loop's
  `workload.request_rate`; `concurrency` the streams the load kept in flight (`streams_of`;
  `.inf` for an uncapped open loop); `multi_turn` where the trial ran sessions; `native.config`
  the workload, dataset and SLO config.
- `results.request_performance.aggregate`: `requests` (`num_requests`, `failed_requests`, and the
  completed requests' input and output lengths), `latency` in ms (TTFT and E2E as
  `time_to_first_token` and `request_latency`, TPOT and ITL in ms/token; mean, p50 = median, p90
  and p99 from the summary; stddev, min and max from the same samples) and `throughput` (input,
  output and total tokens/s, requests as queries/s). `results.observability` holds the engine's
  mean and peak KV-cache use, its prefix-cache hit rate and the trial's mean power, where
  measured.

What our results do not hold, and what stands in its place:

- `inference_engine.tool_version` (required): "unknown". Results record package versions as
  `env.*` (in `native.config`), but not which package a backend runs, and analysis never names
  a backend.
- `accelerator.parallelism` (required): `{}`. How a backend splits the model over its GPUs is not
  recorded; the schema's readers then take 1 for each degree: read `accelerator.count`.
- `load.tool_version` (required): "unknown" where `env.git_sha` was not recorded.
- `scenario.load` of a trial that sent no request: left out, as its `input_seq_len` (required)
  was never measured. Its `results` then hold only the request counts, 0.
- A statistic with no sample (no completed request) and rates of a trial that spanned no time
  are left out, never written as 0. `normalized_time_per_output_token` and `time_series` are
  not written.

TTFT and E2E follow `vllm bench serve` (`docs/results.md`); our ITL counts a chunk of k tokens as
k gaps of a k-th of its gap each, so `inter_token_latency` is per token, and over the requests
in the steady-state window only.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid

import numpy as np
import yaml

from analysis.export.trial import ExportTrial, spread
from sweep.core import records as rec

VERSION = "0.2"
COMPONENT_SCHEMA = "0.0.1"
SUFFIX = ".yaml"
UNKNOWN = "unknown"
LOAD_TOOL = "llm-sweep"
# scenario.load.standardized.source by `dataset.name`: random tokens, or text from a corpus.
RANDOM_DATASETS = frozenset({"random", "images"})
SAMPLED_DATASETS = frozenset({"prompts", "hf"})
# results.request_performance.aggregate.latency: name -> (our metric, units).
LATENCIES = {
    "time_to_first_token": ("ttft", "ms"),
    "time_per_output_token": ("tpot", "ms/token"),
    "inter_token_latency": ("itl", "ms/token"),
    "request_latency": ("e2e", "ms"),
}
# Our summary statistics under the schema's names (p50 is the median).
STATISTICS = {"mean": "mean", "p50": "median", "p90": "p90", "p99": "p99"}


def render(trial: ExportTrial) -> str:
    """The trial's benchmark report as YAML."""
    return yaml.safe_dump(report(trial), sort_keys=False, allow_unicode=True)


def report(trial: ExportTrial) -> dict[str, object]:
    """The trial's benchmark report (schema 0.2) as plain Python."""
    scenario: dict[str, object] = {"stack": [engine(trial)]}
    workload = load(trial)
    if workload is not None:
        scenario["load"] = workload
    return {"version": VERSION, "run": run(trial), "scenario": scenario, "results": results(trial)}


def run(trial: ExportTrial) -> dict[str, object]:
    """`run`: the trial's id, the sweep's experiment id, its times and a description."""
    sweep = trial.text(rec.SWEEP_NAME)
    section: dict[str, object] = {"uid": trial.trial_id}
    if sweep:
        section["eid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, sweep))
    times = run_time(trial)
    if times:
        section["time"] = times
    section["description"] = description(trial, sweep)
    return section


def run_time(trial: ExportTrial) -> dict[str, str]:
    """Start and end in ISO-8601 (UTC), and the wall time as an ISO-8601 duration."""
    times = {}
    if trial.started is not None:
        times["start"] = trial.started.isoformat()
    if trial.ended is not None:
        times["end"] = trial.ended.isoformat()
    wall = trial.number(rec.WALL_S)
    if wall is not None:
        times["duration"] = f"PT{wall:g}S"
    return times


def description(trial: ExportTrial, sweep: str | None) -> str:
    """`<model> [<sweep>] <label>`, and what failed for a failed trial."""
    parts = [trial.model_id or UNKNOWN, f"[{sweep}]" if sweep else "", trial.text(rec.LABEL) or ""]
    text = " ".join(part for part in parts if part)
    return f"{text} failed: {trial.error}" if trial.failed else text


def engine_label(trial: ExportTrial) -> str:
    """The engine component's label: `<backend>-<deployment_id>`."""
    return f"{trial.text(rec.BACKEND_NAME) or UNKNOWN}-{trial.text(rec.DEPLOYMENT_ID) or UNKNOWN}"


def engine(trial: ExportTrial) -> dict[str, object]:
    """`scenario.stack[0]`: the deployment as an inference engine."""
    deployment = trial.text(rec.DEPLOYMENT_ID) or UNKNOWN
    return {
        "metadata": {
            "schema_version": COMPONENT_SCHEMA,
            "label": engine_label(trial),
            "cfg_id": deployment,
        },
        "standardized": {
            "kind": "inference_engine",
            "tool": trial.text(rec.BACKEND_NAME) or UNKNOWN,
            "tool_version": UNKNOWN,
            "role": "replica",
            "replicas": 1,
            "model": {"name": trial.model_id or UNKNOWN},
            "accelerator": {
                "model": trial.text(rec.HARDWARE_NAME) or UNKNOWN,
                "count": trial.integer(rec.BACKEND_NUM_GPUS) or 0,
                "parallelism": {},
            },
        },
        "native": {
            "config": trial.config(
                *rec.DEPLOYMENT_GROUPS, rec.ENV_PREFIX.rstrip(rec.CONFIG_SEPARATOR)
            )
        },
    }


def load(trial: ExportTrial) -> dict[str, object] | None:
    """`scenario.load`: what the load generator sent, and how; None when it sent nothing."""
    input_seq_len = sequence_length(trial.request_column(rec.INPUT_TOKENS))
    if input_seq_len is None:
        return None
    native = trial.config("workload", "dataset", rec.SLO_PREFIX.rstrip(rec.CONFIG_SEPARATOR))
    standardized: dict[str, object] = {
        "tool": LOAD_TOOL,
        "tool_version": trial.text(rec.ENV_GIT_SHA) or UNKNOWN,
        "parallelism": max(trial.integer(rec.WORKLOAD_CLIENT_PROCESSES) or 1, 1),
        "source": source(trial.text(rec.DATASET_NAME)),
        "stage": 0,
        "input_seq_len": input_seq_len,
    }
    output = output_seq_len(trial)
    if output is not None:
        standardized["output_seq_len"] = output
    if trial.number(rec.SESSIONS) is not None:
        standardized["multi_turn"] = {"enabled": True}
    standardized.update(offered_load(trial))
    return {
        "metadata": {"schema_version": COMPONENT_SCHEMA, "cfg_id": config_id(native)},
        "standardized": standardized,
        "native": {"config": native},
    }


def source(dataset: str | None) -> str:
    """How the prompts' tokens were made: `random`, `sampled` (from texts) or `unknown`."""
    if dataset in RANDOM_DATASETS:
        return "random"
    return "sampled" if dataset in SAMPLED_DATASETS else "unknown"


def config_id(config: dict[str, object]) -> str:
    """A hash of a config: the first 32 hex digits of the SHA-256 of its sorted JSON."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sequence_length(lengths: list[object]) -> dict[str, object] | None:
    """A `SequenceLength` from per-request token counts: fixed when all equal, else other.

    None without a count.
    """
    values = np.asarray([v for v in lengths if v is not None], dtype=float)
    if values.size == 0:
        return None
    low, high = int(values.min()), int(values.max())
    if low == high:
        return {"distribution": "fixed", "value": low}
    return {"distribution": "other", "value": float(values.mean()), "min": low, "max": high}


def output_seq_len(trial: ExportTrial) -> dict[str, object] | None:
    """The requested output lengths, where the engine was made to produce them; else None."""
    if not (trial.flag(rec.WORKLOAD_IGNORE_EOS) and trial.flag(rec.BACKEND_IGNORE_EOS)):
        return None
    return sequence_length(trial.request_column(rec.REQUESTED_OUTPUT_TOKENS))


def offered_load(trial: ExportTrial) -> dict[str, object]:
    """`rate_qps` of an open loop and `concurrency`: streams in flight, `.inf` without a cap."""
    load: dict[str, object] = {}
    if trial.request_rate is not None:
        load["rate_qps"] = trial.request_rate
    if trial.streams is not None:
        load["concurrency"] = trial.streams
    elif trial.request_rate is not None:
        load["concurrency"] = math.inf
    return load


def results(trial: ExportTrial) -> dict[str, object]:
    """`results`: the aggregate request performance, and the engine's resources."""
    aggregate: dict[str, object] = {"requests": requests(trial)}
    latency = {
        name: stats
        for name, (metric, units) in LATENCIES.items()
        if (stats := latency_statistics(trial, metric, units)) is not None
    }
    if latency:
        aggregate["latency"] = latency
    throughput = throughputs(trial)
    if throughput:
        aggregate["throughput"] = throughput
    section: dict[str, object] = {"request_performance": {"aggregate": aggregate}}
    resources = observed(trial)
    if resources:
        section["observability"] = {
            "components": [{"component_label": engine_label(trial), "aggregate": resources}]
        }
    return section


def requests(trial: ExportTrial) -> dict[str, object]:
    """Request counts, and the completed requests' input and output lengths."""
    section: dict[str, object] = {
        "total": trial.num_requests,
        "failures": trial.failed_requests,
    }
    for name, column in (("input_length", rec.INPUT_TOKENS), ("output_length", rec.OUTPUT_TOKENS)):
        lengths = trial.request_column(column, trial.ok)
        stats = length_statistics(lengths)
        if stats is not None:
            section[name] = stats
    return section


def length_statistics(lengths: list[object]) -> dict[str, object] | None:
    """`Statistics` of token counts (units count); None without a count."""
    values = np.asarray([v for v in lengths if v is not None], dtype=float)
    if values.size == 0:
        return None
    stats: dict[str, object] = {"units": "count", "mean": float(values.mean())}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        stats[name] = float(np.percentile(values, q))
    return {**stats, **spread(values)}


def latency_statistics(trial: ExportTrial, metric: str, units: str) -> dict[str, object] | None:
    """`Statistics` of one latency in ms: the summary's, with the samples' spread."""
    stats: dict[str, object] = {"units": units}
    for name, stat in STATISTICS.items():
        value = trial.latency_ms(metric, stat)
        if value is not None:
            stats[name] = value
    if "mean" not in stats:
        return None
    return {**stats, **spread(trial.latency_samples_ms[metric])}


def throughputs(trial: ExportTrial) -> dict[str, object]:
    """Token and request rates over the throughputs' span (first send to last end)."""
    rates = {
        "input_token_rate": (trial.input_token_rate, "tokens/s"),
        "output_token_rate": (trial.rate(rec.OUTPUT_THROUGHPUT), "tokens/s"),
        "total_token_rate": (trial.rate(rec.TOTAL_THROUGHPUT), "tokens/s"),
        "request_rate": (trial.rate(rec.REQUEST_THROUGHPUT), "queries/s"),
    }
    return {
        name: {"units": units, "mean": value}
        for name, (value, units) in rates.items()
        if value is not None
    }


def observed(trial: ExportTrial) -> dict[str, object]:
    """The engine's KV-cache use and prefix-cache hits (percent), and the mean power (W)."""
    kv_mean, kv_peak = trial.number(rec.MEAN_KV_CACHE_USAGE), trial.number(rec.PEAK_KV_CACHE_USAGE)
    resources: dict[str, object] = {}
    if kv_mean is not None:
        usage: dict[str, object] = {"units": "percent", "mean": kv_mean}
        if kv_peak is not None:
            usage["max"] = kv_peak
        resources["kv_cache_usage"] = usage
    hits = trial.number(rec.SERVER_PREFIX_CACHE_HIT_PERCENT)
    if hits is not None:
        resources["cache_hit_rate"] = {"units": "percent", "mean": hits}
    power = trial.number(rec.MEAN_POWER_W)
    if power is not None:
        resources["power_consumption"] = {"units": "Watts", "mean": power}
    return resources
