"""Write the small reference results folder the analysis tests read.

Run from the repository root: python tests/analysis/make_reference.py

Layout as the sweep writes it: data/ref_sweep/<deployment_id>/<trial_id>/*.parquet.
Two deployments (hf, vllm_server) x two load points, hand-made request timings:
- hf bs=1: 4 sequential requests, prefill 0.2 s, then 0.1 s per token (4 tokens).
- hf bs=2: 2 batches of 2 requests; the second batch has one failed request.
- vllm_server c=1: 4 sequential streamed requests whose last chunk carries 2 tokens; one
  request's server token count (5) disagrees with the client's (4).
- vllm_server c=2: a failed trial (out of memory) with a summary row only.
Each summary row carries its backend's facts (`records.BACKEND_FACTS`) as the worker writes them.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from backends import backend_class
from sweep.core import records as rec
from sweep.core.summary import summarize

SWEEP = "ref_sweep"
DATA_DIR = Path(__file__).resolve().parent / "data"
SLO = {"ttft_ms": 250.0, "tpot_ms": None, "e2e_ms": None}

COMMON = {
    "model.name": "tiny_llama",
    "model.path": "generated",
    "workload.name": "throughput_bound",
    "workload.num_requests": 4,
    "workload.output_len": 4,
    "dataset.name": "random",
    "dataset.input_len": 16,
    "hardware.name": "cpu",
    "hardware.price_per_hour": 0.10,
    "slo.ttft_ms": SLO["ttft_ms"],
}
HF = {"backend.name": "hf", "backend.mode": "per_request", "backend.dtype": "fp32",
      "backend.num_gpus": 0}  # fmt: skip
VLLM = {"backend.name": "vllm_server", "backend.max_num_seqs": 8, "backend.num_gpus": 0}
ENV = {"env.python": "3.11.9", "env.torch": "2.5.1", "env.transformers": "4.46.3",
       "env.git_sha": "0123abcd", "env.device": "cpu"}  # fmt: skip


def facts(name: str) -> dict:
    """What the worker records about backend `name` (`Backend.facts`), from its default config."""
    cls = backend_class(name)
    return cls(cls.config_class(), "generated").facts()


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def request(idx, batch, sent, first, itl, *, scheduled=None, server=None, input_tokens=16):
    """One OK request whose tokens arrive at `first` and then after each gap in `itl`."""
    end = first + sum(itl)
    out = len(itl) + 1
    return {
        rec.REQUEST_IDX: idx, rec.BATCH_IDX: batch,
        rec.SCHEDULED_S: sent if scheduled is None else scheduled, rec.SENT_S: sent,
        rec.FIRST_TOKEN_S: first, rec.END_S: end, rec.TTFT_S: first - sent, rec.E2E_S: end - sent,
        rec.TPOT_S: (end - first) / (out - 1), rec.ITL_S: list(itl),
        rec.INPUT_TOKENS: input_tokens, rec.OUTPUT_TOKENS: out, rec.REQUESTED_OUTPUT_TOKENS: 4,
        rec.SERVER_OUTPUT_TOKENS: server, rec.STATUS: rec.STATUS_OK, rec.ERROR: None,
    }  # fmt: skip


def failed_request(idx, batch, sent, end, error):
    row = dict.fromkeys(rec.REQUESTS_SCHEMA.names)
    row.update({rec.REQUEST_IDX: idx, rec.BATCH_IDX: batch, rec.SCHEDULED_S: sent,
                rec.SENT_S: sent, rec.END_S: end, rec.E2E_S: end - sent, rec.INPUT_TOKENS: 16,
                rec.OUTPUT_TOKENS: 0, rec.REQUESTED_OUTPUT_TOKENS: 4,
                rec.STATUS: rec.STATUS_FAILED, rec.ERROR: error})  # fmt: skip
    return row


def samples(metric, values, source="process"):
    return [{rec.T_S: float(t), rec.SOURCE: source, rec.METRIC: metric, rec.VALUE: float(v)}
            for t, v in enumerate(values)]  # fmt: skip


TRIALS = [
    {   # hf, batch size 1: one request at a time
        "backend": HF, "load": {"workload.batch_size": 1}, "label": "hf bs=1",
        "requests": [request(i, i, 0.5 * i, 0.5 * i + 0.2, [0.1] * 3) for i in range(4)],
        "timeseries": samples(rec.PROCESS_RSS_MB, [1500, 1600, 1650]),
    },
    {   # hf, batch size 2: the second batch loses one request
        "backend": HF, "load": {"workload.batch_size": 2}, "label": "hf bs=2",
        "requests": [
            request(0, 0, 0.0, 0.3, [0.15] * 3),
            request(1, 0, 0.0, 0.3, [0.15] * 3),
            request(2, 1, 0.75, 1.05, [0.15] * 3),
            failed_request(3, 1, 0.75, 0.8, "RuntimeError: generation failed"),
        ],
        "timeseries": samples(rec.PROCESS_RSS_MB, [1700, 1800]),
    },
    {   # vllm_server, concurrency 1: the last chunk carries 2 tokens (gap 0.04 -> 2 x 0.02)
        "backend": VLLM, "load": {"workload.batch_size": 1, "workload.concurrency": 1},
        "label": "vllm_server c=1",
        "requests": [
            request(i, i, 0.2 * i, 0.2 * i + 0.05, [0.04, 0.02, 0.02],
                    scheduled=0.2 * i - (0.002 if i else 0.0), server=5 if i == 3 else 4)
            for i in range(4)
        ],
        "timeseries": samples(rec.PROCESS_RSS_MB, [900, 950])
        + samples(rec.KV_CACHE_USAGE_PERCENT, [5, 12, 8], source="server")
        + samples(rec.RUNNING_REQUESTS, [1, 1, 1], source="server"),
    },
    {   # vllm_server, concurrency 2: the deployment ran out of memory
        "backend": VLLM, "load": {"workload.batch_size": 1, "workload.concurrency": 2},
        "label": "vllm_server c=2",
        "error": (rec.ERROR_OUT_OF_MEMORY,
                  "KV cache needs 2.1 GiB for max_num_seqs=8 but only 1.5 GiB is free"),
    },
]  # fmt: skip


def write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Tiny files are smaller without compression, statistics and the embedded Arrow schema.
    pq.write_table(table, path, compression="none", write_statistics=False, use_dictionary=False,
                   store_schema=False)  # fmt: skip


def build(out_dir: Path) -> Path:
    """Write the reference sweep into `out_dir`/ref_sweep (replacing it) and return its path."""
    sweep_dir = out_dir / SWEEP
    shutil.rmtree(sweep_dir, ignore_errors=True)
    for n, trial in enumerate(TRIALS):
        config = {**COMMON, **trial["backend"], **trial["load"]}
        deployment_id = short_hash(repr(sorted(trial["backend"].items())))
        trial_id = short_hash(repr(sorted(config.items())))
        trial_dir = sweep_dir / deployment_id / trial_id
        row = {rec.TRIAL_ID: trial_id, rec.DEPLOYMENT_ID: deployment_id, rec.SWEEP_NAME: SWEEP,
               rec.REPEAT: 0, rec.LABEL: trial["label"], **config,
               rec.STARTED_UNIX_S: 1_700_000_000.0 + 60 * n, rec.WALL_S: 12.5}  # fmt: skip
        if "error" in trial:
            kind, message = trial["error"]
            row.update({rec.TRIAL_STATUS: rec.STATUS_FAILED, rec.ERROR_KIND: kind,
                        rec.ERROR_MESSAGE: message})  # fmt: skip
        else:
            requests = pa.Table.from_pylist(
                [{rec.TRIAL_ID: trial_id, **r} for r in trial["requests"]], rec.REQUESTS_SCHEMA
            )
            series = pa.Table.from_pylist(
                [{rec.TRIAL_ID: trial_id, **s} for s in trial["timeseries"]],
                rec.TIMESERIES_SCHEMA,
            )
            write(requests, trial_dir / rec.REQUESTS_FILE)
            write(series, trial_dir / rec.TIMESERIES_FILE)
            row.update({rec.TRIAL_STATUS: rec.STATUS_OK, rec.ERROR_KIND: None,
                        rec.ERROR_MESSAGE: None})  # fmt: skip
            row.update(summarize(requests.to_pandas(), num_gpus=config["backend.num_gpus"],
                                 price_per_hour=config["hardware.price_per_hour"], slo=SLO,
                                 timeseries=series.to_pandas()))  # fmt: skip
        env = {**ENV, "env.vllm": "0.6.4"} if trial["backend"] is VLLM else ENV
        row.update(facts(config["backend.name"]))
        write(pa.Table.from_pylist([{**row, **env}]), trial_dir / rec.SUMMARY_FILE)
    return sweep_dir


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR))
