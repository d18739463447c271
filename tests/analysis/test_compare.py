"""Comparative analysis: baseline decomposition, Pareto front, SLO goodput and roofline numbers.

The reference sweep's numbers by hand (see make_reference.py):
- hf bs=1: 4 sequential requests over 2.0 s, 16 tokens -> 8 tok/s, TTFT 200 ms, TPOT 100 ms.
- hf bs=2: 3 ok requests over 1.5 s, 12 tokens -> 8 tok/s, TTFT 300 ms.
- vllm_server c=1: 4 requests over 0.73 s, 16 tokens -> 16/0.73 tok/s, TTFT 50 ms.
Price 0.10 USD per hour, no GPU (priced as one): cost = 0.1 / 3600 / tok_s * 1e6.
"""

import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.read.load import load_requests, load_summary
from analysis.report.sections import comparison_sections
from analysis.stats.compare import (
    analyse,
    decomposition,
    engine_labels,
    pareto_mask,
    pareto_points,
    parse_slo,
    slo_goodput,
    task_values,
)
from analysis.stats.roofline import BASIS_WEIGHTS, BASIS_WEIGHTS_KV, bytes_per_param, roofline
from sweep.core import records as rec
from sweep.core.errors import ConfigError
from tests.helpers import analysis_in_process

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
VLLM_TOK_S = 16 / 0.73


def cost(tok_s: float) -> float:
    return 0.10 / 3600 / tok_s * 1e6


def test_decomposition_against_hf_by_hand():
    table = decomposition(load_summary(REF)).set_index(["task", "load", "engine"])
    assert len(table) == 3  # the failed vllm_server c=2 is not compared
    vllm = table.loc[("random", 1.0, "vllm_server")]
    assert vllm["baseline"] == "hf"
    assert vllm["throughput_x"] == pytest.approx(VLLM_TOK_S / 8.0)
    assert vllm["ttft_x"] == pytest.approx(50.0 / 200.0)
    assert vllm["cost_x"] == pytest.approx(cost(VLLM_TOK_S) / cost(8.0))
    hf = table.loc[("random", 2.0, "hf")]
    assert (hf["throughput_x"], hf["ttft_x"], hf["cost_x"]) == pytest.approx((1.0, 1.0, 1.0))


def test_decomposition_with_another_baseline_and_no_baseline_at_a_point():
    table = decomposition(load_summary(REF), baseline="vllm_server").set_index(["load", "engine"])
    assert table.loc[(1.0, "hf"), "throughput_x"] == pytest.approx(8.0 / VLLM_TOK_S)
    assert math.isnan(table.loc[(2.0, "hf"), "throughput_x"])  # vllm_server c=2 failed


def test_a_folder_without_the_baseline_fact_has_none_unless_named():
    # Written before backends recorded their facts: nothing says which backend is the baseline.
    old = load_summary(REF).drop(columns=list(rec.BACKEND_FACTS))
    table = decomposition(old)
    assert table["baseline"].isna().all() and table["throughput_x"].isna().all()
    named = decomposition(old, baseline="hf").set_index(["load", "engine"])
    assert named.loc[(1.0, "vllm_server"), "throughput_x"] == pytest.approx(VLLM_TOK_S / 8.0)
    sections = comparison_sections(analyse(old), Path("pareto.png"))
    text = next(s.text for s in sections if s.title == "Against the baseline")
    assert "(none recorded: name one with `--baseline`)" in text


def test_tasks_engines_and_repeats_average():
    rows = [
        {
            rec.BACKEND_NAME: backend,
            rec.BACKEND_BASELINE: backend == "hf",  # as the backends record it
            "backend.mode": mode,
            rec.DATASET_NAME: "prompts",
            rec.DATASET_TASK: task,
            rec.WORKLOAD_BATCH_SIZE: 4,
            rec.REPEAT: repeat,
            rec.TRIAL_STATUS: rec.STATUS_OK,
            rec.OUTPUT_THROUGHPUT: tok_s,
            rec.latency_column("ttft", "median"): 100.0,
            rec.COST_PER_1M_OUTPUT: 1.0,
        }
        for backend, mode, task, repeat, tok_s in [
            ("hf", "per_request", "qa", 0, 100.0),
            ("hf", "per_request", "qa", 1, 140.0),
            ("hf", "static_batch", "qa", 0, 240.0),
            ("vllm", None, "qa", 0, 600.0),
            ("hf", "per_request", None, 0, 50.0),
            ("vllm", None, None, 0, 75.0),
        ]
    ]
    summary = pd.DataFrame(rows)
    assert list(task_values(summary)) == ["qa"] * 4 + ["prompts"] * 2
    assert engine_labels(summary).iloc[0] == "hf per_request"
    table = decomposition(summary).set_index(["task", "engine"])
    # The baseline is hf's first configuration (per_request), its two repeats averaged: 120.
    assert table.loc[("qa", "hf per_request"), "trials"] == 2
    assert table.loc[("qa", "hf static_batch"), "throughput_x"] == pytest.approx(2.0)
    assert table.loc[("qa", "vllm"), "throughput_x"] == pytest.approx(5.0)
    assert table.loc[("prompts", "vllm"), "throughput_x"] == pytest.approx(1.5)
    assert set(table["baseline"]) == {"hf per_request"}


def test_pareto_front_membership():
    latency = pd.Series([10.0, 20.0, 20.0, 30.0, 5.0, None, 5.0])
    throughput = pd.Series([100.0, 200.0, 150.0, 200.0, 50.0, 900.0, 50.0])
    # A, B and E are optimal; C and D are beaten by B; F has no latency; G ties E (not beaten).
    assert pareto_mask(latency, throughput).tolist() == [
        True,
        True,
        False,
        False,
        True,
        False,
        True,
    ]


def test_pareto_points_name_configurations_and_divide_by_gpus():
    rows = [
        {
            rec.BACKEND_NAME: b,
            rec.BACKEND_NUM_GPUS: g,
            rec.WORKLOAD_CONCURRENCY: c,
            rec.TRIAL_STATUS: rec.STATUS_OK,
            rec.OUTPUT_THROUGHPUT: tok_s,
            rec.latency_column("tpot", "median"): tpot,
        }
        for b, g, c, tok_s, tpot in [
            ("hf", 1, 1, 30.0, 30.0),
            ("hf", 1, 8, 100.0, 60.0),
            ("vllm", 2, 8, 600.0, 20.0),
            ("vllm", 2, 64, 1200.0, 45.0),
        ]
    ]
    points = pareto_points(pd.DataFrame(rows)).set_index("configuration")
    assert points.loc["vllm @ concurrency 8", rec.THROUGHPUT_PER_GPU] == 300.0
    front = set(points.index[points[rec.ON_PARETO_FRONT]])
    assert front == {"vllm @ concurrency 8", "vllm @ concurrency 64"}


def test_goodput_with_a_cli_slo():
    summary, requests = load_summary(REF), load_requests(REF)
    table = slo_goodput(summary, requests, parse_slo("ttft_ms=250")).set_index(rec.LABEL)
    assert table.loc["hf bs=1", rec.SLO_GOODPUT] == pytest.approx(4 / 2.0)
    assert table.loc["hf bs=1", rec.SLO_COST_PER_1M_OUTPUT] == pytest.approx(cost(8.0))
    assert table.loc["hf bs=2", rec.SLO_GOODPUT_OUTPUT_THROUGHPUT] == 0.0  # TTFT 300 ms
    assert pd.isna(table.loc["hf bs=2", rec.SLO_COST_PER_1M_OUTPUT])
    assert table.loc["vllm_server c=1", rec.SLO_GOODPUT_OUTPUT_THROUGHPUT] == pytest.approx(
        VLLM_TOK_S
    )
    # A TPOT bound of 50 ms drops hf (100 ms per token) and keeps vllm_server (26.7 ms).
    strict = slo_goodput(summary, requests, parse_slo("ttft_ms=250, tpot_ms=50"))
    strict = strict.set_index(rec.LABEL)
    assert strict.loc["hf bs=1", rec.SLO_GOODPUT] == 0.0
    assert strict.loc["vllm_server c=1", rec.SLO_GOODPUT] == pytest.approx(4 / 0.73)
    assert strict.loc["vllm_server c=1", "slo"] == "ttft_ms<=250, tpot_ms<=50"


def test_goodput_defaults_to_the_config_slo_and_matches_the_summary():
    summary = load_summary(REF)
    table = slo_goodput(summary, load_requests(REF)).set_index(rec.TRIAL_ID)
    assert set(table["slo"]) == {"ttft_ms<=250"}  # slo.ttft_ms of the reference config
    recorded = summary.set_index(rec.TRIAL_ID).loc[table.index, rec.GOODPUT]
    pd.testing.assert_series_equal(table[rec.SLO_GOODPUT], recorded, check_names=False)


def test_parse_slo_rejects_nonsense():
    assert parse_slo("ttft_ms=500,tpot_ms=50") == {"ttft_ms": 500.0, "tpot_ms": 50.0}
    for bad in ("ttft=500", "ttft_ms", "ttft_ms=fast", "e2e_ms=-1"):
        with pytest.raises(ConfigError, match="bad SLO"):
            parse_slo(bad)


def roofline_row(**overrides):
    row = {
        rec.MODEL_NUM_PARAMS_B: 7.0,
        rec.BACKEND_DTYPE: "fp16",
        rec.BACKEND_NUM_GPUS: 1,
        rec.HARDWARE_MEMORY_BANDWIDTH: 3350.0,
        rec.HARDWARE_PEAK_FP16_TFLOPS: 989.0,
        rec.OUTPUT_THROUGHPUT: 1000.0,
        rec.latency_column("tpot", "median"): 20.0,
        rec.REQUEST_THROUGHPUT: 4.0,
        rec.latency_column("e2e", "mean"): 500.0,
        rec.COMPLETED_REQUESTS: 10,
        rec.INPUT_TOKENS_TOTAL: 1000,
        rec.OUTPUT_TOKENS_TOTAL: 1000,
        rec.WORKLOAD_BATCH_SIZE: 8,
    }
    return {**row, **overrides}


def test_mbu_and_mfu_on_known_numbers():
    frame = pd.DataFrame(
        [
            roofline_row(),
            roofline_row(**{rec.BACKEND_NUM_GPUS: 2}),
            roofline_row(**{rec.BACKEND_QUANTIZATION: "awq"}),
            roofline_row(
                **{rec.MODEL_NUM_LAYERS: 32, rec.MODEL_NUM_KV_HEADS: 8, rec.MODEL_HEAD_DIM: 128}
            ),
            roofline_row(**{rec.latency_column("tpot", "median"): None}),
            roofline_row(**{rec.MODEL_NUM_PARAMS_B: None}),
        ]
    )
    out = roofline(frame)
    weights = 7e9 * 2  # fp16
    # 50 decode steps per second (1 / 20 ms), each reading every weight once.
    assert out[rec.MBU][0] == pytest.approx(weights * 50 / 3350e9)  # 0.209
    assert out[rec.MFU][0] == pytest.approx(2 * 7e9 * 1000 / 989e12)  # 0.0142
    assert out[rec.MBU][1] == pytest.approx(out[rec.MBU][0] / 2)  # two GPUs' bandwidth
    assert out[rec.MBU][2] == pytest.approx(7e9 * 0.5 * 50 / 3350e9)  # 4-bit weights
    # KV: 2 x 32 layers x 8 heads x 128 x 2 bytes per token, 100 + 1000/10/2 = 150 tokens of
    # context per sequence, 4 req/s x 0.5 s = 2 sequences in flight.
    kv = 2 * 32 * 8 * 128 * 2 * 150 * 2
    assert out[rec.MBU][3] == pytest.approx((weights + kv) * 50 / 3350e9)
    assert list(out[rec.ROOFLINE_BASIS][:4]) == [BASIS_WEIGHTS] * 3 + [BASIS_WEIGHTS_KV]
    # Without TPOT: steps = 1000 tok/s / 2 sequences in flight.
    assert out[rec.MBU][4] == pytest.approx(weights * 500 / 3350e9)
    assert out[rec.MBU].isna()[5] and out[rec.MFU].isna()[5]
    assert bytes_per_param("auto") == 2.0 and bytes_per_param("fp32", "int8") == 1.0


def test_analyse_adds_the_comparison_columns():
    comparison = analyse(load_summary(REF), load_requests(REF))
    trials = comparison.trials.set_index(rec.LABEL)
    assert {rec.MBU, rec.MFU, rec.THROUGHPUT_PER_GPU, rec.ON_PARETO_FRONT, rec.SLO_GOODPUT} <= set(
        trials.columns
    )
    assert trials[rec.ON_PARETO_FRONT].tolist().count(True) == 1
    assert trials.loc["vllm_server c=1", rec.ON_PARETO_FRONT]
    assert comparison.notes  # the reference has no model size: MBU is said to be approximate


def test_cli_writes_the_comparison_sections(tmp_path):
    result = analysis_in_process(
        str(REF), "--out", str(tmp_path), "--slo", "ttft_ms=250", "--baseline", "hf"
    )
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    for heading in (
        "## Against the baseline",
        "## Pareto front",
        "## Goodput under SLOs",
        "## Roofline",
        "## Timelines",
    ):
        assert heading in text
    assert "| random | 1 | vllm_server | 21.9 | 2.74× [" in text
    assert str(tmp_path / "report.html") in result.stdout
    bad = analysis_in_process(str(REF), "--slo", "ttft=1")
    assert bad.returncode == 2 and bad.stderr.startswith("error: bad SLO")
