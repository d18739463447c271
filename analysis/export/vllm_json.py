"""The JSON `vllm bench serve --save-result` writes: one file per trial.

The keys, their order and their units are those of `result_json` in vLLM's
`vllm/benchmarks/serve.py` (vLLM 0.32: `main_async` and `benchmark`) for the command
`vllm bench serve --save-result --save-detailed --percentile-metrics ttft,tpot,itl,e2el
--metric-percentiles 90,99` (no `--metadata`, no ramp-up): `KEYS` lists them. Its times are in
seconds (`duration`, the per-request lists) or in ms (the `*_ms` statistics); rates per second.

How our trial fills them:

- `date`: the trial's end (start plus wall time) as `%Y%m%d-%H%M%S`, in UTC (vLLM writes the
  local time of its machine). `endpoint_type` and `backend`: our backend's name (vLLM names its
  request function there, e.g. `openai`); `label`: the trial's label; `model_id`: the model as
  loaded (`model.resolved_path`, else `model.name`); `tokenizer_id`: `model.tokenizer`, null
  where not recorded.
- `num_prompts`, `completed`, `failed`: the requests the summary counts (in the steady-state
  window); `request_rate`: an open loop's `workload.request_rate`, else "inf" as vLLM writes an
  unpaced load; `burstiness`: `workload.burstiness`; `max_concurrency`: the streams the load kept
  in flight (`streams_of`; null for an uncapped open loop).
- `duration`: `duration_s`, first send to last end of the completed requests (vLLM's runs from
  its first send to the last reply, failures included); every rate is the summary's, over it.
  `request_goodput`: `goodput_req_s` under the trial's `slo.*` bounds (null without one).
  `max_output_tokens_per_s`: `peak_output_throughput_tok_s` (the busiest 1-s bucket, as vLLM);
  `max_concurrent_requests`: the most completed requests active in one 1-s bucket, counted from
  our requests as vLLM counts them; `rtfx`: 0.0, as for any request without audio.
- Per request, in request order: `input_lens` (prompt tokens), `output_lens` (0 for a failed
  one, as vLLM), `ttfts` and `latencies` in s (a failed request's latency is 0.0 and its TTFT 0.0
  unless a token came, as vLLM's client leaves them), `itls` in s, `start_times` (send times on
  the trial's clock), `queue_times` (send time minus the time our schedule had for it),
  `errors` ("" for a completed request).
- `mean_/median_/std_/p90_/p99_{ttft,tpot,itl,e2el}_ms`: mean, median, p90 and p99 from the
  summary (`ttft_ms_mean`, ...), std (numpy's, over the population, as vLLM) from the same
  samples.

What does not match vLLM's, and what stands in its place:

- `generated_texts`: null for each request: our results do not keep the texts.
- Our ITL counts a chunk of k tokens as k gaps of a k-th of its gap each (vLLM: one gap a
  chunk), so `itls` and the ITL statistics are per token.
- A statistic with no sample, and a rate of a trial that spanned no time, is null (vLLM writes
  0.0, which would read as a measurement).
- A trial that failed before it sent a request (no request records) has `num_prompts`,
  `completed` and `failed` 0, empty per-request lists, and its error, `<error_kind>: <message>`,
  as the one entry of `errors`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis.export.trial import ExportTrial, spread
from sweep.core import records as rec

SUFFIX = ".json"
DATE_FORMAT = "%Y%m%d-%H%M%S"
UNPACED = "inf"
# vLLM's metric names (`--percentile-metrics`) -> ours (`records.LATENCY_METRICS`).
METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2e"}
# `--metric-percentiles 90,99`: our summary's percentiles (`records.LATENCY_STATS`).
PERCENTILES = tuple(stat for stat in rec.LATENCY_STATS if stat.startswith("p"))
SETUP_KEYS = (
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
    "request_rate", "burstiness", "max_concurrency",
)  # fmt: skip
RESULT_KEYS = (
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
    "generated_texts", "errors", "max_output_tokens_per_s", "max_concurrent_requests", "rtfx",
)  # fmt: skip
STAT_KEYS = tuple(
    key
    for name in METRICS
    for key in (
        f"mean_{name}_ms",
        f"median_{name}_ms",
        f"std_{name}_ms",
        *(f"{stat}_{name}_ms" for stat in PERCENTILES),
    )
)
KEYS = SETUP_KEYS + RESULT_KEYS + STAT_KEYS


def render(trial: ExportTrial) -> str:
    """The trial's `vllm bench serve` result as JSON (no NaN: nulls)."""
    return json.dumps(result_json(trial), allow_nan=False)


def result_json(trial: ExportTrial) -> dict[str, object]:
    """The trial's `result_json`, keys in vLLM's order (`KEYS`)."""
    result = {**setup(trial), **benchmark_result(trial), **statistics(trial)}
    return {key: result[key] for key in KEYS}


def setup(trial: ExportTrial) -> dict[str, object]:
    """What vLLM writes from its arguments: date, backend, model, prompts and the load."""
    backend = trial.text(rec.BACKEND_NAME)
    return {
        "date": trial.ended.strftime(DATE_FORMAT) if trial.ended is not None else None,
        "endpoint_type": backend,
        "backend": backend,
        "label": trial.text(rec.LABEL),
        "model_id": trial.model_id,
        "tokenizer_id": trial.text(rec.MODEL_TOKENIZER),
        "num_prompts": trial.num_requests,
        "request_rate": trial.request_rate if trial.request_rate is not None else UNPACED,
        "burstiness": trial.number(rec.WORKLOAD_BURSTINESS),
        "max_concurrency": trial.streams,
    }


def benchmark_result(trial: ExportTrial) -> dict[str, object]:
    """Counts, rates and the per-request lists (`benchmark`'s `result`)."""
    return {
        "duration": trial.number(rec.DURATION_S),
        "completed": trial.completed,
        "failed": trial.failed_requests,
        "total_input_tokens": trial.integer(rec.INPUT_TOKENS_TOTAL) or 0,
        "total_output_tokens": trial.integer(rec.OUTPUT_TOKENS_TOTAL) or 0,
        "request_throughput": trial.rate(rec.REQUEST_THROUGHPUT),
        "request_goodput": trial.rate(rec.GOODPUT),
        "output_throughput": trial.rate(rec.OUTPUT_THROUGHPUT),
        "total_token_throughput": trial.rate(rec.TOTAL_THROUGHPUT),
        **per_request(trial),
        "max_output_tokens_per_s": trial.rate(rec.PEAK_OUTPUT_THROUGHPUT),
        "max_concurrent_requests": max_concurrent_requests(trial.ok),
        "rtfx": 0.0,
    }


def per_request(trial: ExportTrial) -> dict[str, list[object]]:
    """One entry per request the trial counts, in request order."""
    requests = trial.requests
    ok = (requests[rec.STATUS] == rec.STATUS_OK).tolist() if len(requests) else []
    outputs = trial.request_column(rec.OUTPUT_TOKENS)
    ttfts = trial.request_column(rec.TTFT_S)
    latencies = trial.request_column(rec.E2E_S)
    errors = trial.request_column(rec.ERROR)
    sent = trial.request_column(rec.SENT_S)
    lists = {
        "input_lens": counts(trial.request_column(rec.INPUT_TOKENS)),
        "output_lens": [n if good else 0 for n, good in zip(counts(outputs), ok, strict=True)],
        "ttfts": [t if t is not None else 0.0 for t in ttfts],
        "itls": [gaps or [] for gaps in trial.request_column(rec.ITL_S)],
        "latencies": [e if good else 0.0 for e, good in zip(latencies, ok, strict=True)],
        "start_times": sent,
        "queue_times": queue_times(sent, trial.request_column(rec.SCHEDULED_S)),
        "generated_texts": [None] * len(requests),
        "errors": ["" if good else (e or "") for e, good in zip(errors, ok, strict=True)],
    }
    if not len(requests) and trial.error is not None:
        lists["errors"] = [trial.error]
    return lists


def counts(values: list[object]) -> list[int | None]:
    """Token counts as ints (a column with nulls reads as floats), None where null."""
    return [None if value is None else int(value) for value in values]


def queue_times(sent: list[object], scheduled: list[object]) -> list[float | None]:
    """Each request's send time minus the time its schedule had for it, in s."""
    return [
        None if s is None or due is None else float(s) - float(due)
        for s, due in zip(sent, scheduled, strict=True)
    ]


def max_concurrent_requests(ok: pd.DataFrame) -> int:
    """The most completed requests active in one 1-s bucket from the first send, as vLLM counts.

    Each request counts in every bucket from its send's to its end's (both included).
    """
    if ok.empty:
        return 0
    sent = pd.to_numeric(ok[rec.SENT_S], errors="coerce").to_numpy(dtype=float)
    ends = sent + pd.to_numeric(ok[rec.E2E_S], errors="coerce").to_numpy(dtype=float)
    keep = ~(np.isnan(sent) | np.isnan(ends))
    if not keep.any():
        return 0
    sent, ends = sent[keep], ends[keep]
    start = sent.min()
    buckets = np.zeros(int(np.ceil(ends.max() - start)) + 1, dtype=np.int64)
    for first, last in zip((sent - start).astype(int), (ends - start).astype(int), strict=True):
        buckets[first : last + 1] += 1
    return int(buckets.max())


def statistics(trial: ExportTrial) -> dict[str, float | None]:
    """Mean, median, std and percentiles of TTFT, TPOT, ITL and E2E, in ms."""
    stats: dict[str, float | None] = {}
    for name, metric in METRICS.items():
        stats[f"mean_{name}_ms"] = trial.latency_ms(metric, "mean")
        stats[f"median_{name}_ms"] = trial.latency_ms(metric, "median")
        stats[f"std_{name}_ms"] = spread(trial.latency_samples_ms[metric]).get("stddev")
        for stat in PERCENTILES:
            stats[f"{stat}_{name}_ms"] = trial.latency_ms(metric, stat)
    return stats
