"""`python -m analysis DIR --export`: llm-d's benchmark report and vLLM's bench JSON.

Run on a copy of the reference sweep (tests/analysis/data/ref_sweep): every llm-d report must
validate against the format's own v0.2 schema (vendored in data/llmd_schema/, with its source),
every vLLM file must have exactly the keys of vLLM's `result_json`, and both must read back the
summary's numbers in the format's units.
"""

import json
import math
import shutil
from datetime import datetime
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from analysis.export.registry import parse_formats
from analysis.read.load import load_summary
from sweep.core import records as rec
from sweep.core.errors import SweepError
from tests.helpers import analysis_in_process

DATA = Path(__file__).resolve().parent / "data"
REF = DATA / "ref_sweep"
SCHEMA = DATA / "llmd_schema" / "benchmark_report_v0_2.schema.json"

# vLLM 0.32.0, vllm/benchmarks/serve.py: the keys of `result_json` (main_async: the set-up keys,
# then `benchmark`'s `result`, then `process_one_metric` for each of --percentile-metrics) for
# `vllm bench serve --save-result --save-detailed --percentile-metrics ttft,tpot,itl,e2el
# --metric-percentiles 90,99`, without --goodput (request_goodput is then null, the key stays),
# --metadata or ramp-up.
VLLM_KEYS = [
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
    "request_rate", "burstiness", "max_concurrency",
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
    "generated_texts", "errors", "max_output_tokens_per_s", "max_concurrent_requests", "rtfx",
    "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p90_ttft_ms", "p99_ttft_ms",
    "mean_tpot_ms", "median_tpot_ms", "std_tpot_ms", "p90_tpot_ms", "p99_tpot_ms",
    "mean_itl_ms", "median_itl_ms", "std_itl_ms", "p90_itl_ms", "p99_itl_ms",
    "mean_e2el_ms", "median_e2el_ms", "std_e2el_ms", "p90_e2el_ms", "p99_e2el_ms",
]  # fmt: skip
VLLM_PER_REQUEST = [
    "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
    "generated_texts", "errors",
]  # fmt: skip

# The unit checks of llm-d's Pydantic validators (`check_units` in schema_v0_2.py), which the
# JSON Schema cannot express: each Statistics field's allowed units.
LLMD_UNITS = {
    "time_to_first_token": {"ms", "s"},
    "request_latency": {"ms", "s"},
    "time_per_output_token": {"ms/token", "s/token"},
    "inter_token_latency": {"ms/token", "s/token"},
    "normalized_time_per_output_token": {"ms/token", "s/token"},
    "input_token_rate": {"tokens/s"},
    "output_token_rate": {"tokens/s"},
    "total_token_rate": {"tokens/s"},
    "request_rate": {"queries/s"},
    "input_length": {"count", "pixels"},
    "output_length": {"count", "pixels"},
    "kv_cache_usage": {"percent", "fraction"},
    "cache_hit_rate": {"percent", "fraction"},
    "power_consumption": {"Watts"},
}

FAILED_ERROR = "out_of_memory: KV cache needs 2.1 GiB for max_num_seqs=8 but only 1.5 GiB is free"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A copy of the reference sweep, exported in both formats by the CLI."""
    sweep = tmp_path_factory.mktemp("export") / "ref_sweep"
    shutil.copytree(REF, sweep)
    result = analysis_in_process(str(sweep), "--export", "llmd,vllm")
    assert result.returncode == 0, result.stderr
    return sweep, result


@pytest.fixture(scope="module")
def summary(exported):
    sweep, _ = exported
    return load_summary(sweep).set_index(rec.TRIAL_ID)


def by_label(summary, label):
    return summary.index[summary[rec.LABEL] == label][0]


def llmd_report(sweep, trial_id):
    return yaml.safe_load((sweep / "export" / "llmd" / f"{trial_id}.yaml").read_text())


def vllm_result(sweep, trial_id):
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    text = (sweep / "export" / "vllm" / f"{trial_id}.json").read_text()
    return json.loads(text, parse_constant=refuse)


def test_cli_writes_one_file_per_trial_and_prints_each_folder(exported, summary):
    sweep, result = exported
    export = sweep / "export"
    assert result.stdout.splitlines() == [
        f"llmd: {export / 'llmd'} (4 trials)",
        f"vllm: {export / 'vllm'} (4 trials)",
    ]
    assert {p.name for p in (export / "llmd").iterdir()} == {f"{t}.yaml" for t in summary.index}
    assert {p.name for p in (export / "vllm").iterdir()} == {f"{t}.json" for t in summary.index}
    assert not (REF / "export").exists()


def test_formats_are_comma_separated_or_repeated_and_checked():
    assert parse_formats(["llmd"]) == ["llmd"]
    assert parse_formats(["vllm, llmd", "llmd"]) == ["vllm", "llmd"]
    with pytest.raises(SweepError, match="'csv'.*choose from llmd, vllm"):
        parse_formats(["llmd,csv"])


def test_an_unknown_format_is_one_line_and_exit_2(tmp_path):
    sweep = tmp_path / "ref_sweep"
    shutil.copytree(REF, sweep)
    result = analysis_in_process(str(sweep), "--export", "llmd,csv")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "'csv'" in lines[0] and "llmd, vllm" in lines[0]
    assert not (sweep / "export").exists()


# --- llm-d: benchmark report v0.2 ---


def units_of(node, path=()):
    """(field name, units) of every Statistics object in a report."""
    if isinstance(node, dict):
        if "units" in node and path:
            yield path[-1], node["units"]
        for key, value in node.items():
            yield from units_of(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from units_of(item, path)


def test_every_llmd_report_validates_against_the_v0_2_schema(exported, summary):
    sweep, _ = exported
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for trial_id in summary.index:
        report = llmd_report(sweep, trial_id)
        validator.validate(report)
        assert report["version"] == "0.2"
        units = list(units_of(report))
        ran = summary.loc[trial_id, rec.TRIAL_STATUS] == rec.STATUS_OK
        assert bool(units) == ran, (trial_id, units)  # a failed one has no statistic to state
        for name, unit in units:
            assert unit in LLMD_UNITS[name], (trial_id, name, unit)
        for key in ("start", "end"):
            assert datetime.fromisoformat(report["run"]["time"][key]).tzinfo is not None


def test_the_schema_check_can_fail(exported, summary):
    sweep, _ = exported
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    report = llmd_report(sweep, by_label(summary, "hf bs=1"))
    del report["run"]["uid"]
    with pytest.raises(jsonschema.ValidationError, match="'uid' is a required property"):
        validator.validate(report)
    report = llmd_report(sweep, by_label(summary, "hf bs=1"))
    report["results"]["request_performance"]["aggregate"]["requests"]["total"] = -1
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(report)
    report = llmd_report(sweep, by_label(summary, "hf bs=1"))
    report["scenario"]["stack"][0]["standardized"]["gpus"] = 1  # extra fields are forbidden
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(report)


def test_llmd_reports_read_back_the_summary(exported, summary):
    sweep, _ = exported
    for trial_id, row in summary[summary[rec.TRIAL_STATUS] == rec.STATUS_OK].iterrows():
        report = llmd_report(sweep, trial_id)
        assert report["run"]["uid"] == trial_id
        aggregate = report["results"]["request_performance"]["aggregate"]
        requests = aggregate["requests"]
        assert requests["total"] == row[rec.NUM_REQUESTS]
        assert requests["failures"] == row[rec.FAILED_REQUESTS]
        assert requests["input_length"]["mean"] == pytest.approx(
            row[rec.INPUT_TOKENS_TOTAL] / row[rec.COMPLETED_REQUESTS]
        )
        assert requests["output_length"]["mean"] == pytest.approx(
            row[rec.OUTPUT_TOKENS_TOTAL] / row[rec.COMPLETED_REQUESTS]
        )
        throughput = aggregate["throughput"]
        assert throughput["output_token_rate"]["mean"] == pytest.approx(row[rec.OUTPUT_THROUGHPUT])
        assert throughput["total_token_rate"]["mean"] == pytest.approx(row[rec.TOTAL_THROUGHPUT])
        assert throughput["request_rate"]["mean"] == pytest.approx(row[rec.REQUEST_THROUGHPUT])
        assert throughput["input_token_rate"]["mean"] == pytest.approx(
            row[rec.INPUT_TOKENS_TOTAL] / row[rec.DURATION_S]
        )
        latency = aggregate["latency"]
        for name, metric in (
            ("time_to_first_token", "ttft"),
            ("request_latency", "e2e"),
            ("time_per_output_token", "tpot"),
            ("inter_token_latency", "itl"),
        ):
            stats = latency[name]
            assert stats["mean"] == pytest.approx(row[rec.latency_column(metric, "mean")])
            assert stats["p50"] == pytest.approx(row[rec.latency_column(metric, "median")])
            assert stats["p90"] == pytest.approx(row[rec.latency_column(metric, "p90")])
            assert stats["p99"] == pytest.approx(row[rec.latency_column(metric, "p99")])
            assert stats["min"] <= stats["p50"] <= stats["max"]
        engine = report["scenario"]["stack"][0]["standardized"]
        assert engine["tool"] == row[rec.BACKEND_NAME]
        assert engine["model"]["name"] == row[rec.MODEL_NAME]
        assert engine["accelerator"] == {
            "model": row[rec.HARDWARE_NAME], "count": row[rec.BACKEND_NUM_GPUS], "parallelism": {},
        }  # fmt: skip


def test_llmd_units_and_hand_computed_values(exported, summary):
    """hf bs=1: 4 requests one after another, TTFT 0.2 s, 0.1 s a token after, 16 tokens in 2 s."""
    sweep, _ = exported
    report = llmd_report(sweep, by_label(summary, "hf bs=1"))
    aggregate = report["results"]["request_performance"]["aggregate"]
    assert aggregate["latency"]["time_to_first_token"] == {
        "units": "ms", "mean": pytest.approx(200.0), "p50": pytest.approx(200.0),
        "p90": pytest.approx(200.0), "p99": pytest.approx(200.0),
        "stddev": pytest.approx(0.0, abs=1e-9), "min": pytest.approx(200.0),
        "max": pytest.approx(200.0),
    }  # fmt: skip
    assert aggregate["latency"]["time_per_output_token"]["units"] == "ms/token"
    assert aggregate["latency"]["time_per_output_token"]["mean"] == pytest.approx(100.0)
    assert aggregate["latency"]["request_latency"]["mean"] == pytest.approx(500.0)
    assert aggregate["throughput"]["output_token_rate"] == {
        "units": "tokens/s",
        "mean": pytest.approx(8.0),
    }
    assert aggregate["requests"]["input_length"]["mean"] == 16
    load = report["scenario"]["load"]["standardized"]
    assert load["input_seq_len"] == {"distribution": "fixed", "value": 16}
    assert load["concurrency"] == 1 and "rate_qps" not in load
    assert load["source"] == "random"
    # hf bs=2: two streams; the failed request counts as a failure of 4 requests sent.
    report = llmd_report(sweep, by_label(summary, "hf bs=2"))
    assert report["scenario"]["load"]["standardized"]["concurrency"] == 2
    requests = report["results"]["request_performance"]["aggregate"]["requests"]
    assert (requests["total"], requests["failures"]) == (4, 1)


def test_llmd_observability_of_the_server(exported, summary):
    sweep, _ = exported
    trial_id = by_label(summary, "vllm_server c=1")
    report = llmd_report(sweep, trial_id)
    component = report["results"]["observability"]["components"][0]
    assert component["component_label"] == report["scenario"]["stack"][0]["metadata"]["label"]
    assert component["aggregate"]["kv_cache_usage"] == {
        "units": "percent",
        "mean": pytest.approx(summary.loc[trial_id, rec.MEAN_KV_CACHE_USAGE]),
        "max": pytest.approx(12.0),
    }


def test_a_failed_trial_is_a_report_with_its_error_and_no_numbers(exported, summary):
    sweep, _ = exported
    report = llmd_report(sweep, by_label(summary, "vllm_server c=2"))
    assert report["run"]["description"].endswith(f"failed: {FAILED_ERROR}")
    assert "load" not in report["scenario"]  # it sent no request: no input length measured
    assert report["results"] == {
        "request_performance": {"aggregate": {"requests": {"total": 0, "failures": 0}}}
    }


# --- vLLM: vllm bench serve --save-result --save-detailed ---


def test_vllm_json_has_exactly_vllms_keys(exported, summary):
    sweep, _ = exported
    for trial_id in summary.index:
        result = vllm_result(sweep, trial_id)
        assert list(result) == VLLM_KEYS
        lengths = {key: len(result[key]) for key in VLLM_PER_REQUEST}
        if summary.loc[trial_id, rec.TRIAL_STATUS] == rec.STATUS_OK:
            assert set(lengths.values()) == {result["num_prompts"]}, lengths


def test_vllm_json_agrees_with_the_summary(exported, summary):
    sweep, _ = exported
    for trial_id, row in summary[summary[rec.TRIAL_STATUS] == rec.STATUS_OK].iterrows():
        result = vllm_result(sweep, trial_id)
        assert result["num_prompts"] == row[rec.NUM_REQUESTS]
        assert result["completed"] == row[rec.COMPLETED_REQUESTS]
        assert result["failed"] == row[rec.FAILED_REQUESTS]
        assert result["total_input_tokens"] == row[rec.INPUT_TOKENS_TOTAL]
        assert result["total_output_tokens"] == row[rec.OUTPUT_TOKENS_TOTAL]
        assert result["duration"] == pytest.approx(row[rec.DURATION_S])
        assert result["output_throughput"] == pytest.approx(row[rec.OUTPUT_THROUGHPUT])
        assert result["request_throughput"] == pytest.approx(row[rec.REQUEST_THROUGHPUT])
        assert result["total_token_throughput"] == pytest.approx(row[rec.TOTAL_THROUGHPUT])
        assert result["request_goodput"] == pytest.approx(row[rec.GOODPUT])
        assert result["max_output_tokens_per_s"] == pytest.approx(row[rec.PEAK_OUTPUT_THROUGHPUT])
        for name, metric in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2el", "e2e")):
            for stat in ("mean", "median", "p90", "p99"):
                key = f"{stat}_{name}_ms"
                assert result[key] == pytest.approx(row[rec.latency_column(metric, stat)])
        ok = [not error for error in result["errors"]]
        ttfts_ms = 1e3 * np.array([t for t, good in zip(result["ttfts"], ok, strict=True) if good])
        assert result["std_ttft_ms"] == pytest.approx(float(np.std(ttfts_ms)))
        assert result["median_ttft_ms"] == pytest.approx(float(np.median(ttfts_ms)))
        completed_outputs = [n for n, good in zip(result["output_lens"], ok, strict=True) if good]
        assert sum(completed_outputs) == row[rec.OUTPUT_TOKENS_TOTAL]
        assert result["generated_texts"] == [None] * result["num_prompts"]
        assert result["rtfx"] == 0.0


def test_vllm_json_per_request_values_and_load(exported, summary):
    sweep, _ = exported
    result = vllm_result(sweep, by_label(summary, "hf bs=1"))
    assert result["date"] == "20231114-221332"  # 1_700_000_000 + 12.5 s wall, UTC
    assert (result["backend"], result["endpoint_type"]) == ("hf", "hf")
    assert result["label"] == "hf bs=1" and result["model_id"] == "tiny_llama"
    assert result["request_rate"] == "inf" and result["max_concurrency"] == 1
    assert result["ttfts"] == pytest.approx([0.2] * 4)  # seconds, as vLLM
    assert result["latencies"] == pytest.approx([0.5] * 4)
    assert result["start_times"] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert result["itls"] == [pytest.approx([0.1] * 3)] * 4
    assert result["input_lens"] == [16] * 4 and result["output_lens"] == [4] * 4
    assert result["errors"] == [""] * 4
    assert result["max_concurrent_requests"] == 3  # 1-s buckets: 2, 3 and 1 requests active
    assert result["request_goodput"] == pytest.approx(2.0)  # all 4 within 250 ms, over 2 s

    result = vllm_result(sweep, by_label(summary, "hf bs=2"))
    assert result["max_concurrency"] == 2
    assert result["errors"] == ["", "", "", "RuntimeError: generation failed"]
    assert result["output_lens"] == [4, 4, 4, 0]
    assert result["ttfts"][3] == 0.0 and result["latencies"][3] == 0.0
    assert (result["completed"], result["failed"]) == (3, 1)

    result = vllm_result(sweep, by_label(summary, "vllm_server c=1"))
    assert result["itls"] == [pytest.approx([0.04, 0.02, 0.02])] * 4
    assert result["queue_times"] == pytest.approx([0.0, 0.002, 0.002, 0.002])
    assert result["max_concurrency"] == 1 and result["max_concurrent_requests"] == 4


def test_a_failed_trial_has_its_error_and_no_numbers(exported, summary):
    sweep, _ = exported
    result = vllm_result(sweep, by_label(summary, "vllm_server c=2"))
    assert (result["num_prompts"], result["completed"], result["failed"]) == (0, 0, 0)
    assert result["errors"] == [FAILED_ERROR]
    for key in VLLM_PER_REQUEST:
        if key != "errors":
            assert result[key] == [], key
    for key in ("duration", "output_throughput", "request_throughput", "mean_ttft_ms",
                "p99_e2el_ms", "std_itl_ms"):  # fmt: skip
        assert result[key] is None, key
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.values())
