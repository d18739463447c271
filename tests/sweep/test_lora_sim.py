"""LoRA adapters end to end against the sim server: assignment, per-adapter rows, the report.

The sim answers for the configured adapters by name and stamps the `model` each request asked
for (`backends.sim_server`), written to `$SIM_STAMPS_DIR` as it stops: the server's own count per
adapter, compared with what the client recorded.
"""

import json
from collections import Counter

import pandas as pd
import pytest

from analysis.report.report import write_report
from sweep.core import records as R
from tests.helpers import run_sweep_here

ADAPTERS = "+backend.lora_adapters={sql: generated, chat: generated, code: generated}"
SIM = [
    "backend=sim",
    "sweep.name=lora_sim",
    "workload=closed_loop",
    "workload.concurrency=4",
    "workload.num_requests=60",
    "workload.warmup_requests=0",
    "workload.output_len=4",
    "dataset.input_len=16",
    "backend.ttft_ms=2",
    "backend.itl_ms=10",
]


@pytest.fixture
def stamps_dir(tmp_path, monkeypatch):
    """Where the sim writes its stamps as it stops; adapters generated into this test's cache."""
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SIM_STAMPS_DIR", str(tmp_path))
    return tmp_path


def server_models(folder):
    (path,) = folder.glob("sim-stamps-*.json")
    return Counter(s["model"] for s in json.loads(path.read_text()).values())


def test_zipf_requests_reach_their_adapters_and_are_reported_per_adapter(stamps_dir, tmp_path):
    overrides = [*SIM, ADAPTERS, "workload.lora_assignment=zipf", "workload.lora_skew=1.5"]
    out = run_sweep_here(tmp_path / "out", overrides)
    (trial,) = out.glob("*/*/")
    requests = pd.read_parquet(trial / R.REQUESTS_FILE)
    assert (requests[R.STATUS] == R.STATUS_OK).all()
    sent = Counter(requests[R.ADAPTER])
    assert set(sent) == {"sql", "chat", "code"} and sum(sent.values()) == 60
    assert sent["sql"] > sent["chat"] > sent["code"]  # the first listed is the most popular
    assert server_models(stamps_dir) == sent  # the server saw each request's adapter
    adapters = pd.read_parquet(trial / R.ADAPTERS_FILE).set_index(R.ADAPTER)
    assert adapters[R.ADAPTER_REQUESTS].to_dict() == dict(sent)
    assert adapters[R.COMPLETED_REQUESTS].to_dict() == dict(sent)
    assert adapters[R.ADAPTER_SHARE].sum() == pytest.approx(1.0)
    assert (adapters[R.latency_column("ttft", "median")] > 0).all()
    # each adapter's TPOT is its own requests' (a request read in one go has a TPOT of 0, so
    # the values are compared, not their sign; 10 ms apart, most replies arrive split)
    tpot_ms = (requests[R.E2E_S] - requests[R.TTFT_S]) / (requests[R.OUTPUT_TOKENS] - 1) * 1e3
    by_adapter = tpot_ms.groupby(requests[R.ADAPTER]).median()
    tpot_column = adapters[R.latency_column("tpot", "median")]
    assert tpot_column.to_dict() == pytest.approx(by_adapter.to_dict(), abs=1e-6)
    assert tpot_ms.median() > 0
    assert (adapters[R.OUTPUT_TOKENS_TOTAL] == adapters[R.ADAPTER_REQUESTS] * 4).all()
    report = write_report(out).report_md.read_text()
    section = report.split("## LoRA adapters", 1)[1].split("\n## ", 1)[0]
    for name, count in sent.items():
        assert f"| {name} " in section and f"| {count} " in section


def test_without_adapters_requests_go_to_the_base_model_and_no_adapter_file(stamps_dir, tmp_path):
    out = run_sweep_here(tmp_path / "out", SIM)
    (trial,) = out.glob("*/*/")
    assert pd.read_parquet(trial / R.REQUESTS_FILE)[R.ADAPTER].isna().all()
    assert not (trial / R.ADAPTERS_FILE).exists()
    assert "## LoRA adapters" not in write_report(out).report_md.read_text()


def test_base_assignment_sends_every_request_to_the_base_model_with_adapters_loaded(
    stamps_dir, tmp_path
):
    """`lora_assignment=base`: the adapters are served, no request names one."""
    overrides = [*SIM, ADAPTERS, "workload.lora_assignment=base"]
    out = run_sweep_here(tmp_path / "out", overrides)
    (trial,) = out.glob("*/*/")
    assert pd.read_parquet(trial / R.REQUESTS_FILE)[R.ADAPTER].isna().all()
    ((model, count),) = server_models(stamps_dir).items()  # one name for every request:
    assert count == 60 and model.endswith("tiny-llama-v1")  # the base model's, not an adapter
    assert not (trial / R.ADAPTERS_FILE).exists()


def test_an_adapter_path_that_does_not_exist_fails_in_one_line_before_any_request(
    stamps_dir, tmp_path
):
    gone = tmp_path / "no_such_adapter"
    out = run_sweep_here(tmp_path / "out", [*SIM, f"+backend.lora_adapters={{a: {gone}}}"])
    (trial,) = out.glob("*/*/")
    summary = pd.read_parquet(trial / R.SUMMARY_FILE).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert summary[R.ERROR_MESSAGE] == f"backend.lora_adapters.a: {gone} does not exist"
    assert len(pd.read_parquet(trial / R.REQUESTS_FILE)) == 0
    assert not list(stamps_dir.glob("sim-stamps-*.json"))  # no server was started at all
