"""The report's server view on a small summary frame: where the time went, the server's counters."""

import pandas as pd
import pytest

from analysis.report.server_view import server_sections
from sweep.core import records as rec

col = rec.latency_column


def trial(label, backend, concurrency, status=rec.STATUS_OK, **metrics):
    return {
        rec.LABEL: label,
        rec.TRIAL_ID: label,
        rec.BACKEND_NAME: backend,
        rec.WORKLOAD_NAME: "closed_loop",
        rec.WORKLOAD_CONCURRENCY: concurrency,
        rec.TRIAL_STATUS: status,
        rec.COMPLETED_REQUESTS: 100,
        **metrics,
    }


VLLM = {
    col("ttft", "mean"): 30.0,
    col("tpot", "mean"): 6.0,
    col(rec.SERVER_TTFT, "mean"): 24.0,
    col(rec.SERVER_QUEUE, "mean"): 4.0,
    col(rec.SERVER_PREFILL, "mean"): 18.0,
    col(rec.SERVER_TPOT, "mean"): 5.5,
    rec.SERVER_REQUESTS: 102,
    rec.SERVER_PREFIX_CACHE_HIT_PERCENT: 0.0,
    rec.SERVER_PREEMPTIONS: 0,
}


@pytest.fixture
def frame():
    return pd.DataFrame(
        [
            # two repeats of one vLLM configuration with a drafter: averaged
            trial("v1", "vllm_server", 8, **VLLM, **{rec.SPEC_ACCEPTANCE_PERCENT: 60.0,
                  rec.SERVER_SPEC_DRAFT_TOKENS: 1000}),  # fmt: skip
            trial("v2", "vllm_server", 8, **{**VLLM, col("ttft", "mean"): 34.0,
                  col(rec.SERVER_TTFT, "mean"): 26.0, rec.SERVER_PREEMPTIONS: 2},
                  **{rec.SPEC_ACCEPTANCE_PERCENT: 70.0, rec.SERVER_SPEC_DRAFT_TOKENS: 3000}),
            # TGI: a queue and a TPOT histogram, no first-token one
            trial("t1", "tgi", 8, **{col("ttft", "mean"): 50.0, col(rec.SERVER_QUEUE, "mean"):
                  7.0, col(rec.SERVER_TPOT, "mean"): 9.0, rec.SERVER_REQUESTS: 101}),
            trial("h1", "hf", 8, **{col("ttft", "mean"): 80.0}),  # an engine: no server view
            trial("f1", "vllm_server", 16, status=rec.STATUS_FAILED),
        ]
    )  # fmt: skip


def cells(section):
    return section.table.set_index("Configuration").to_dict("index")


def test_where_the_time_went_puts_the_client_beside_the_server(frame):
    where, counters = server_sections(frame)
    assert where.title == "Where the time went" and counters.title == "Server counters"
    rows = cells(where)
    assert set(rows) == {"vllm_server", "tgi"}  # the engine and the failed trial have no row
    vllm = rows["vllm_server"]
    assert vllm["Load"] == "8" and vllm["Requests (client / server)"] == "100 / 102"
    assert vllm["Client TTFT (ms)"] == "32.00" and vllm["Server TTFT (ms)"] == "25.00"
    assert vllm["Network and client (ms)"] == "7.00"  # 32 - 25, repeats averaged
    assert (vllm["Server queue (ms)"], vllm["Server prefill (ms)"]) == ("4.00", "18.00")
    assert (vllm["Client TPOT (ms)"], vllm["Server TPOT (ms)"]) == ("6.00", "5.50")
    tgi = rows["tgi"]
    assert tgi["Server TTFT (ms)"] == tgi["Network and client (ms)"] == "—"  # not exported
    assert tgi["Server queue (ms)"] == "7.00" and tgi["Server TPOT (ms)"] == "9.00"
    assert "Server ITL (ms)" not in where.table  # no server exported one: no column
    assert "warm-up" in where.text


def test_server_counters_show_acceptance_preemptions_and_cache_hits(frame):
    _, counters = server_sections(frame)
    rows = cells(counters)
    assert set(rows) == {"vllm_server"}  # TGI's counters are not mapped
    assert rows["vllm_server"] == {
        "Load": "8",
        "Prefix-cache hits (%)": "0.0",
        "Preemptions": "1",
        "Draft acceptance (%)": "65.0",
        "Drafted tokens": "2,000",
    }


def test_no_server_view_no_section(frame):
    engines = frame[frame[rec.BACKEND_NAME] == "hf"]
    assert server_sections(engines) == []
    old = frame[[c for c in frame if not c.startswith(("server_", "spec_"))]]
    assert server_sections(old) == []  # results written before the capture existed
