"""LoRA on vLLM's CPU build for real: three generated adapters of the tiny model, Zipf-assigned.

The LoRA trials run on the folder's shared engines (`conftest.py`). The server logs every
request it receives with its adapter (`--enable-log-requests`: "Received request ID: params:
..., lora_request: LoRARequest(lora_name='sql', ...)"), which is the server's own count per
adapter; it must match what the client sent and recorded, per adapter. The trials before it sent
every request to the base model (`lora_request: None`), which the count leaves out. Its
`/metrics` names the adapters it ran (`vllm:lora_requests_info`, one series per set of running
and waiting adapters). The offline engine runs the same adapters as `LoRARequest`s.
"""

import re
from collections import Counter

import pytest

from analysis.report.report import write_report
from sweep.core import records as R
from sweep.core.results import ResultStore
from tests.helpers import table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RECEIVED = re.compile(r"Received request (\S+): .*lora_request: LoRARequest\(lora_name='([^']+)'")


def test_vllm_server_serves_three_adapters_and_its_log_counts_what_was_sent(served, tmp_path):
    trial = served.trials[-1]  # the LoRA trial, after the two base-model ones
    summary = table(trial, "summary").iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = table(trial, "requests")
    assert (requests[R.STATUS] == R.STATUS_OK).all()
    assert (requests[R.OUTPUT_TOKENS] == 16).all()
    sent = Counter(requests[R.ADAPTER])
    assert set(sent) == {"sql", "chat", "code"} and sum(sent.values()) == 36
    assert sent["sql"] > sent["code"]  # Zipf: the first listed is the most popular
    for base in served.trials[:-1]:  # `lora_assignment=base`: no request named an adapter
        assert table(base, "requests")[R.ADAPTER].isna().all()
    served_per_adapter = Counter(name for _, name in RECEIVED.findall(trial.backend_log))
    assert served_per_adapter == sent  # the server's own count per adapter
    capture = table(trial, "server_metrics")
    info = capture[capture[R.FAMILY] == "vllm:lora_requests_info"][R.LABELS]
    assert {"sql", "chat", "code"} <= {n for labels in info for n in re.findall(r"\w+", labels)}
    adapters = table(trial, "adapters").set_index(R.ADAPTER)
    assert adapters[R.COMPLETED_REQUESTS].to_dict() == dict(sent)
    # Stamped per read: on a loaded machine a short answer's tokens can arrive in one read (TPOT
    # 0), so a TPOT per adapter is asserted, not that it is above 0.
    assert (adapters[R.latency_column("tpot", "median")] >= 0).all()
    store = ResultStore(str(tmp_path), "lora_adapters")  # the driver's part: the trial's files
    store.write_trial(trial)
    report = write_report(tmp_path / "lora_adapters").report_md.read_text()
    section = report.split("## LoRA adapters", 1)[1]
    assert all(f"| {name} " in section.split("\n## ", 1)[0] for name in sent)
    # the server's start, by phase: every phase found in vLLM's log, adding up to the whole
    summary = table(trial, "summary").iloc[0]
    phases = [summary[p] for p in R.START_PHASES]
    assert all(p > 0 for p in phases) and summary[R.START_WEIGHTS_S] >= 0
    assert sum(phases) == pytest.approx(summary[R.SERVER_START_S])
    startup = report.split("## Server start-up", 1)[1].split("\n## ", 1)[0]
    assert f"| {summary[R.SERVER_START_S]:,.1f} |" in startup


def test_the_offline_engine_runs_each_request_on_its_adapter(offline):
    (trial,) = offline.trials
    summary = table(trial, "summary").iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK, summary[R.ERROR_MESSAGE]
    requests = table(trial, "requests")
    assert (requests[R.SERVER_OUTPUT_TOKENS] == 16).all()
    assert set(requests[R.ADAPTER]) == {"sql", "chat", "code"}  # the experiment's three
    assert set(table(trial, "adapters")[R.ADAPTER]) == {"sql", "chat", "code"}
