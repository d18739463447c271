"""The report, plots and CLI on the reference sweep in tests/analysis/data/ref_sweep."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from make_reference import build

from analysis.read.columns import load_axis_label, load_values, series_labels
from analysis.read.load import load_requests, load_summary, load_timeseries
from analysis.report.report import LEADING_COLUMNS, main_table, write_report
from sweep.core import records as rec
from sweep.core.errors import SweepError
from sweep.core.summary import summarize
from tests.helpers import analysis_in_process

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_loaders_read_every_complete_trial():
    summary = load_summary(REF)
    assert len(summary) == 4
    assert set(summary[rec.BACKEND_NAME]) == {"hf", "vllm_server"}
    assert (summary[rec.TRIAL_STATUS] == rec.STATUS_FAILED).sum() == 1
    # The failed trial wrote a summary row only, without metric columns: those are null.
    failed = summary[summary[rec.TRIAL_STATUS] == rec.STATUS_FAILED].iloc[0]
    assert failed[rec.ERROR_KIND] == rec.ERROR_OUT_OF_MEMORY
    assert pd.isna(failed[rec.OUTPUT_THROUGHPUT])
    assert len(load_requests(REF)) == 12
    assert set(load_timeseries(REF)[rec.METRIC]) >= {rec.PROCESS_RSS_MB}


def test_reference_data_is_up_to_date(tmp_path):
    """The committed files equal what make_reference.py writes with the current metrics."""
    fresh = load_summary(build(tmp_path)).sort_values(rec.TRIAL_ID, ignore_index=True)
    committed = load_summary(REF).sort_values(rec.TRIAL_ID, ignore_index=True)
    pd.testing.assert_frame_equal(fresh[committed.columns], committed, check_dtype=False)


def test_summary_matches_recomputed_requests():
    summary = load_summary(REF).set_index(rec.TRIAL_ID)
    requests = load_requests(REF)
    for trial_id, trial in requests.groupby(rec.TRIAL_ID):
        again = summarize(trial, num_gpus=0, price_per_hour=0.10)
        assert summary.loc[trial_id, rec.OUTPUT_THROUGHPUT] == pytest.approx(
            again[rec.OUTPUT_THROUGHPUT]
        )


def test_load_errors_are_sweep_errors(tmp_path):
    with pytest.raises(SweepError, match="not found"):
        load_summary(tmp_path / "missing")
    with pytest.raises(SweepError, match="no trial results"):
        load_summary(tmp_path)


def test_write_report(tmp_path):
    paths = write_report(REF, tmp_path)

    csv = pd.read_csv(paths.summary_csv)
    assert len(csv) == 4
    leading = [c for c in LEADING_COLUMNS if c in csv.columns]
    assert list(csv.columns[: len(leading)]) == leading
    assert leading[:2] == [rec.LABEL, rec.BACKEND_NAME]
    assert {rec.TRIAL_ID, rec.ERROR_MESSAGE, "env.torch"} <= set(csv.columns)

    text = paths.report_md.read_text()
    for heading in ("# Sweep report: ref_sweep", "## Results", "## Plots", "## Failed trials",
                    "## Environment", "## Request checks"):  # fmt: skip
        assert heading in text
    failed = load_summary(REF).query(f"{rec.TRIAL_STATUS} == '{rec.STATUS_FAILED}'").iloc[0]
    assert failed[rec.TRIAL_ID] in text and "vllm_server c=2" in text
    assert rec.ERROR_OUT_OF_MEMORY in text and "1.5 GiB is free" in text
    assert "1 of 4 requests failed" in text  # the failed request of hf bs=2

    names = {plot.name for plot in paths.plots}
    assert {"throughput.png", "ttft_median.png", "cost.png", "pareto.png"} <= names
    assert {"kv_cache_timeline.png", "process_memory_timeline.png"} <= names  # no GPU samples
    for plot in paths.plots:
        assert plot.parent == tmp_path and plot.stat().st_size > 5_000
        assert f"]({plot.name})" in text  # embedded with a path relative to report.md


def test_main_table_is_human_readable():
    table = main_table(load_summary(REF))
    assert len(table) == 4
    assert list(table.columns[:3]) == ["Trial", "Series", "Concurrency or batch size"]
    row = table[table["Trial"] == "hf bs=1"].iloc[0]
    assert row["Output tok/s"] == "8.0" and row["TTFT p50 (ms)"] == "200.0"
    assert row["E2E p50 (s)"] == "0.50"
    assert table[table["Status"] == rec.STATUS_FAILED]["Output tok/s"].tolist() == ["—"]


def test_the_time_to_the_answer_is_shown_only_where_a_trial_reasoned():
    summary = load_summary(REF)  # written before reasoning tokens were recorded
    answer = "Time to answer p99 (ms)"
    assert answer not in main_table(summary)
    summary[rec.REASONING_TOKENS_TOTAL] = 0  # recorded, none reasoned: the answer time is TTFT's
    assert answer not in main_table(summary)
    summary.loc[0, rec.REASONING_TOKENS_TOTAL] = 64
    summary[rec.latency_column(rec.ANSWER, "p99")] = 1234.0
    table = main_table(summary)
    columns = list(table.columns)
    assert columns.index("TTFT p99 (ms)") + 2 == columns.index(answer)  # beside TTFT
    assert set(table[answer]) == {"1,234.0"}


def test_series_and_load_axis_on_a_quickstart_like_grid():
    rows = [
        {rec.BACKEND_NAME: "hf", "backend.mode": mode, rec.DATASET_NAME: dataset,
         "dataset.input_len": 64 if dataset == "random" else None,
         rec.WORKLOAD_BATCH_SIZE: batch, rec.REPEAT: 0, "env.torch": "2.5.1"}
        for mode in ("per_request", "static_batch")
        for dataset in ("random", "prompts")
        for batch in (1, 2, 4)
    ]  # fmt: skip
    summary = pd.DataFrame(rows)
    labels = series_labels(summary)
    assert labels.iloc[0] == "hf per_request · random"
    assert labels.nunique() == 4  # the load, input_len (follows dataset) and env do not split
    assert load_axis_label(summary) == "batch size"
    summary[rec.WORKLOAD_CONCURRENCY] = 8.0
    assert load_axis_label(summary) == "concurrency"
    assert set(load_values(summary)) == {8.0}


def test_cli_prints_table_and_paths(tmp_path):
    result = run_cli(str(REF), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "hf" in result.stdout and "vllm_server" in result.stdout
    assert str(tmp_path / "report.md") in result.stdout
    assert (tmp_path / "summary.csv").is_file()


def test_cli_missing_folder_is_one_line_error(tmp_path):
    result = analysis_in_process(str(tmp_path / "nope"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
