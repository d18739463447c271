"""LoRA on vLLM's CPU build for real: three generated adapters of the tiny model, Zipf-assigned.

The server logs every request it receives with its adapter (`--enable-log-requests`: "Received
request ID: params: ..., lora_request: LoRARequest(lora_name='sql', ...)"), which is the
server's own count per adapter; it must match what the client sent and recorded, per adapter.
Its `/metrics` names the adapters it ran (`vllm:lora_requests_info`, one series per set of
running and waiting adapters). The offline engine runs the same adapters as `LoRARequest`s.
"""

import re
from collections import Counter

import pandas as pd
import pytest

from analysis.report import write_report
from sweep.core import records as R
from tests.helpers import run_sweep_here

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LORA = [
    "+experiment=lora_adapters",
    "sweep.grid={backend.lora_count: [3]}",
    "workload.warmup_requests=0",
    "workload.num_requests=36",
    "+backend.extra_args.enable-log-requests=true",
]
RECEIVED = re.compile(r"Received request (\S+): .*lora_request: LoRARequest\(lora_name='([^']+)'")


def test_vllm_server_serves_three_adapters_and_its_log_counts_what_was_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))  # adapters made here
    collected = []
    out = run_sweep_here(tmp_path / "out", LORA, collected)
    (trial,) = out.glob("*/*/")
    summary = pd.read_parquet(trial / R.SUMMARY_FILE).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = pd.read_parquet(trial / R.REQUESTS_FILE)
    assert (requests[R.STATUS] == R.STATUS_OK).all()
    assert (requests[R.OUTPUT_TOKENS] == 16).all()
    sent = Counter(requests[R.ADAPTER])
    assert set(sent) == {"sql", "chat", "code"} and sum(sent.values()) == 36
    assert sent["sql"] > sent["code"]  # Zipf: the first listed is the most popular
    log = collected[-1].backend_log  # what the driver keeps as backend.log
    served = Counter(name for _, name in RECEIVED.findall(log))
    assert served == sent  # the server's own count per adapter
    capture = pd.read_parquet(trial / R.SERVER_METRICS_FILE)
    info = capture[capture[R.FAMILY] == "vllm:lora_requests_info"][R.LABELS]
    assert {"sql", "chat", "code"} <= {n for labels in info for n in re.findall(r"\w+", labels)}
    adapters = pd.read_parquet(trial / R.ADAPTERS_FILE).set_index(R.ADAPTER)
    assert adapters[R.COMPLETED_REQUESTS].to_dict() == dict(sent)
    # Stamped per read: on a loaded machine a short answer's tokens can arrive in one read (TPOT
    # 0), so a TPOT per adapter is asserted, not that it is above 0.
    assert (adapters[R.latency_column("tpot", "median")] >= 0).all()
    section = write_report(out).report_md.read_text().split("## LoRA adapters", 1)[1]
    assert all(f"| {name} " in section.split("\n## ", 1)[0] for name in sent)


def test_the_offline_engine_runs_each_request_on_its_adapter(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    out = run_sweep_here(
        tmp_path / "out",
        [
            *LORA[:4],
            "backend=vllm",
            "workload=throughput_bound",
            "workload.batch_size=6",
            "workload.num_requests=12",
        ],
    )
    (trial,) = out.glob("*/*/")
    summary = pd.read_parquet(trial / R.SUMMARY_FILE).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = pd.read_parquet(trial / R.REQUESTS_FILE)
    assert (requests[R.SERVER_OUTPUT_TOKENS] == 16).all()
    assert set(requests[R.ADAPTER]) == {"sql", "chat", "code"}  # the experiment's three
    assert set(pd.read_parquet(trial / R.ADAPTERS_FILE)[R.ADAPTER]) == {"sql", "chat", "code"}
