"""The capacity table, its plots, and the capacity section in the report and console (in W&B:
`test_capacity_tracking.py`, whose wandb starts a process of its own).

The probes are built here from a reference trial row: four searches (a rate search, a larger
rate search on two GPUs, one that fails at every load, and a closed loop that passed up to the
highest load it tried), mixed with ordinary grid trials that have no search columns.
"""

import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.__main__ import main
from analysis.figures.capacity_plots import (
    LATENCY_FILE,
    PER_DOLLAR_FILE,
    slo_metric,
    write_capacity_plots,
)
from analysis.read.load import load_summary
from analysis.report.report import ReportOptions, save_report, write_report
from analysis.report.sections import capacity_display
from analysis.stats import capacity as cap
from sweep.core import records as rec

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
OLD = Path(__file__).resolve().parents[1] / "fixtures" / "results_9e73cea" / "main_9e73cea"
TTFT_P99, TPOT_P99 = rec.latency_column("ttft", "p99"), rec.latency_column("tpot", "p99")
RATE, CONCURRENCY = "workload.request_rate", "workload.concurrency"
# name, axis, GPUs, price per GPU-hour, SLO column and limit, {load: (passed, latency, req/s)}
SEARCHES = {
    "vllm-c1": (RATE, 1, 2.0, TTFT_P99, 500, {
        1: (True, 200, 0.98), 2: (True, 300, 1.96), 4: (False, 800, 3.2), 3: (True, 450, 2.94),
        3.5: (False, 520, 3.3),
    }),
    "vllm-c2": (RATE, 2, 2.0, TTFT_P99, 500, {
        2: (True, 100, 2), 4: (True, 150, 4), 8: (True, 250, 8), 16: (False, 2000, 12),
        12: (True, 450, 11.9), 14: (False, 600, 13),
    }),
    "hf": (RATE, 1, 2.0, TTFT_P99, 500, {1: (False, 900, 0.9), 0.5: (False, 700, 0.5)}),
    "sim-closed": (CONCURRENCY, 0, 0.1, TPOT_P99, 50, {
        1: (True, 20, 2.0), 2: (True, 30, 3.8), 4: (True, 45, 7.5),
    }),
}  # fmt: skip


def probe_rows(name, axis, gpus, price, slo, limit, probes, template):
    rows = []
    for index, (load, (passed, latency, req_s)) in enumerate(probes.items()):
        row = dict(template)
        short = "r" if axis == RATE else "c"
        tok_s = req_s * 100
        row.update({
            rec.TRIAL_ID: f"{name}-{load:g}", rec.LABEL: f"{name}-capacity-{short}{load:g}",
            rec.BACKEND_NUM_GPUS: gpus, rec.HARDWARE_PRICE_PER_HOUR: price, axis: load,
            rec.REQUEST_THROUGHPUT: req_s, rec.OUTPUT_THROUGHPUT: tok_s,
            TTFT_P99: latency if slo == TTFT_P99 else 100.0,
            TPOT_P99: latency if slo == TPOT_P99 else 10.0,
            rec.COST_PER_1M_OUTPUT: max(gpus, 1) * price / 3600 / tok_s * 1e6,
            f"{rec.SLO_PREFIX}{slo}": limit,
            rec.SEARCH_ID: f"s-{name}", rec.SEARCH_MODE: "capacity", rec.SEARCH_AXIS: axis,
            rec.SEARCH_LOAD: float(load), rec.SEARCH_PROBE: index, rec.SEARCH_PHASE: "bracket",
            rec.SLO_PASSED: passed, rec.SLO_MARGIN: (limit - latency) / limit,
            rec.SLO_REASON: None if passed else f"{slo} {latency:g} > {limit:g}",
        })  # fmt: skip
        rows.append(row)
    return rows


@pytest.fixture
def trials():
    return capacity_trials()


def capacity_trials() -> pd.DataFrame:
    """The four searches' probes after two ordinary grid trials of the reference sweep."""
    ref = load_summary(REF)
    template = ref.set_index(rec.LABEL, drop=False).loc["vllm_server c=1"].to_dict()
    template[rec.WORKLOAD_NAME] = "open_loop"
    rows = [
        r for n, (axis, *rest) in SEARCHES.items() for r in probe_rows(n, axis, *rest, template)
    ]
    grid = ref[ref[rec.BACKEND_NAME] == "hf"]
    return pd.concat([grid, pd.DataFrame(rows)], ignore_index=True)


def test_capacity_is_the_highest_passing_load_sorted_by_req_s_per_dollar(trials):
    table = cap.capacity_table(trials, target_rate=20, tolerance=0.2).set_index(cap.CONFIGURATION)
    assert list(table.index) == ["sim-closed", "vllm-c2", "vllm-c1", "hf"]
    assert list(table[cap.CAPACITY_LOAD]) == [4, 12, 3, 0]
    # A closed loop's capacity in req/s is what it achieved; a rate search's, the rate it offered.
    assert list(table[cap.CAPACITY_REQ_S]) == [7.5, 12, 3, 0]
    assert list(table[cap.PROBES]) == [3, 6, 5, 2]
    c1 = table.loc["vllm-c1"]
    assert c1[rec.REQUEST_THROUGHPUT] == 2.94 and c1[rec.OUTPUT_THROUGHPUT] == pytest.approx(294)
    assert c1[TTFT_P99] == 450 and c1[TPOT_P99] == 10
    assert c1[cap.FAILING_LOAD] == 3.5 and c1[cap.FAILING_REASON] == "ttft_ms_p99 520 > 500"
    assert c1[cap.RELATIVE_GAP] == pytest.approx(3.5 / 3 - 1) and c1[cap.CONVERGED]
    assert c1[cap.SLO_TEXT] == "ttft_ms_p99<=500"
    # The summary's own cost formula at the capacity probe; one replica costs price x GPUs.
    assert c1[rec.COST_PER_1M_OUTPUT] == pytest.approx(2.0 / 3600 / 294 * 1e6)
    assert c1[cap.USD_PER_HOUR] == 2.0 and c1[cap.REQ_S_PER_USD_HOUR] == pytest.approx(1.5)
    assert table.loc["vllm-c2", cap.REQ_S_PER_USD_HOUR] == pytest.approx(12 / 4.0)
    assert table.loc["sim-closed", cap.REQ_S_PER_USD_HOUR] == pytest.approx(7.5 / 0.1)
    # Replicas for 20 req/s: ceil(target / capacity); GPUs and dollars follow.
    assert list(table[cap.REPLICAS].iloc[:3]) == [3, 2, 7]
    assert pd.isna(table.loc["hf", cap.REPLICAS])  # capacity 0 serves no target
    assert list(table[cap.TARGET_GPUS].iloc[:3]) == [0, 4, 7]
    assert list(table[cap.TARGET_USD_PER_HOUR].iloc[:3]) == pytest.approx([0.3, 8.0, 14.0])


def test_a_search_that_never_passed_says_why_and_one_that_never_failed_is_a_lower_bound(trials):
    table = cap.capacity_table(trials, tolerance=0.2).set_index(cap.CONFIGURATION)
    hf = table.loc["hf"]
    assert hf[cap.CAPACITY_LOAD] == 0 and hf[cap.FAILING_LOAD] == 0.5
    assert hf[cap.FAILING_REASON] == "ttft_ms_p99 700 > 500"  # the lowest failing probe's
    assert pd.isna(hf[rec.OUTPUT_THROUGHPUT]) and hf[cap.REQ_S_PER_USD_HOUR] == 0
    closed = table.loc["sim-closed"]
    assert closed[cap.LOWER_BOUND] and pd.isna(closed[cap.FAILING_LOAD])
    assert closed[cap.CONVERGED] is None and closed[TPOT_P99] == 45
    assert closed[cap.SLO_TEXT] == "tpot_ms_p99<=50"
    assert cap.REPLICAS not in table  # no target rate, no replica columns
    assert slo_metric(cap.search_probes(trials)) == TTFT_P99  # what most searches bound


def test_energy_at_capacity_gives_req_s_per_kw_or_says_not_measured(trials):
    search = trials[rec.SEARCH_ID]
    trials[rec.ENERGY_METHOD] = None
    trials.loc[search == "s-vllm-c1", rec.ENERGY_METHOD] = rec.ENERGY_NVML_COUNTER
    trials.loc[search == "s-vllm-c1", rec.MEAN_POWER_W] = 200.0
    trials.loc[search == "s-vllm-c1", rec.ENERGY_WH_PER_1M_OUTPUT] = 150.0
    trials.loc[search == "s-vllm-c2", rec.ENERGY_METHOD] = rec.ENERGY_NOT_MEASURED
    table = cap.capacity_table(trials).set_index(cap.CONFIGURATION)
    c1 = table.loc["vllm-c1"]
    assert c1[cap.REQ_S_PER_KW] == pytest.approx(3 / 0.2)  # 3 req/s at 200 W
    assert c1[rec.ENERGY_WH_PER_1M_OUTPUT] == 150.0
    assert c1[rec.ENERGY_METHOD] == rec.ENERGY_NVML_COUNTER
    c2 = table.loc["vllm-c2"]
    assert pd.isna(c2[cap.REQ_S_PER_KW]) and c2[rec.ENERGY_METHOD] == rec.ENERGY_NOT_MEASURED
    shown = capacity_display(table.reset_index()).set_index("Configuration")
    assert shown.loc["vllm-c1", "req/s per kW"] == "15"
    assert shown.loc["vllm-c2", "req/s per kW"] == "not measured"
    assert shown.loc["sim-closed", "req/s per kW"] == "—"  # recorded before energy was


def test_grid_trials_and_old_columns_give_an_empty_table(trials):
    assert cap.search_probes(trials)[rec.SEARCH_ID].notna().all()
    for frame in (load_summary(REF), load_summary(OLD)):
        table = cap.capacity_table(frame, target_rate=10)
        assert table.empty and cap.CAPACITY_REQ_S in table


def test_a_failed_probe_fails_and_names_its_error(trials):
    row = trials[trials[rec.TRIAL_ID] == "vllm-c1-3.5"].index[0]
    trials.loc[row, [rec.TRIAL_STATUS, rec.SLO_REASON, rec.ERROR_KIND]] = (
        rec.STATUS_FAILED, None, rec.ERROR_TIMEOUT
    )  # fmt: skip
    trials[rec.SLO_PASSED] = trials[rec.SLO_PASSED].astype(object)
    trials.loc[row, rec.SLO_PASSED] = None
    c1 = cap.capacity_table(trials).set_index(cap.CONFIGURATION).loc["vllm-c1"]
    assert c1[cap.CAPACITY_LOAD] == 3 and c1[cap.FAILING_REASON] == "trial failed: timeout"


def test_names_fall_back_to_the_backend_when_labels_say_nothing(trials):
    single = trials[trials[rec.TRIAL_ID].isin(["hf-1", "vllm-c1-1"])].copy()
    assert set(cap.capacity_table(single)[cap.CONFIGURATION]) == {"hf", "vllm-c1"}
    single[rec.LABEL] = "x"
    names = cap.capacity_table(single)[cap.CONFIGURATION]
    assert len(set(names)) == 2 and all(n.startswith("vllm_server") for n in names)


def test_plots_are_written_beside_the_report(trials, tmp_path):
    table = cap.capacity_table(trials)
    paths = write_capacity_plots(trials, table, tmp_path, "cap")
    assert [p.name for p in paths] == [LATENCY_FILE, PER_DOLLAR_FILE]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert write_capacity_plots(trials, table.iloc[:0], tmp_path / "none") == []


def test_the_report_shows_the_capacity_section(trials, tmp_path):
    paths = save_report(trials, tmp_path, "cap", options=ReportOptions(target_rate=20))
    assert paths.capacity is not None and len(paths.capacity) == 4
    assert {tmp_path / LATENCY_FILE, tmp_path / PER_DOLLAR_FILE} <= set(paths.plots)
    page = paths.report_html.read_text()
    assert "<h2>Capacity within the SLO</h2>" in page
    for text in ("sim-closed", "vllm-c2", "Replicas for target", "ttft_ms_p99 700 &gt; 500"):
        assert text in page
    md = paths.report_md.read_text()
    assert "## Capacity within the SLO" in md and f"]({LATENCY_FILE})" in md
    assert "| sim-closed | capacity | concurrency | 4 | 7.5 |" in md


def test_the_cli_prints_the_table_for_the_sweeps_or_a_given_target_rate(trials, tmp_path, capsys):
    results = tmp_path / "cap"
    for _, row in trials.iterrows():
        folder = results / str(row[rec.DEPLOYMENT_ID]) / str(row[rec.TRIAL_ID])
        folder.mkdir(parents=True)
        clean = {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in row.items()}
        pq.write_table(pa.Table.from_pylist([clean]), folder / rec.SUMMARY_FILE)
    # The sweep's own search settings (sweep.yaml, not the rows) give the target and tolerance.
    (results / rec.SWEEP_YAML).write_text("config:\n  search: {target_rate: 30, tolerance: 0.2}\n")
    assert main([str(results), "--no-html"]) == 0
    md = (results / "report.md").read_text()
    assert "For 30 req/s" in md and "| Converged |" in md and "| yes |" in md
    capsys.readouterr()
    assert main([str(results), "--target-rate", "20", "--no-html"]) == 0
    assert "For 20 req/s" in (results / "report.md").read_text()
    out = capsys.readouterr().out
    assert "Capacity within the SLO" in out and "Replicas" in out
    assert re.search(r"│ sim-closed +│ concurren.*│ 4 +│ 7\.5 +│", out)
    assert re.search(r"│ vllm-c1 +│ rate .*│ 7 +│ 7 +│ 14\.00 +│", out)  # replicas, GPUs, USD/h
    assert "capacity_per_dollar.png" in out
    for bad in ("0", "-1", "inf", "many"):
        with pytest.raises(SystemExit):
            main([str(results), "--target-rate", bad])
    assert "--target-rate: must be a positive number of req/s" in capsys.readouterr().err


def test_old_results_still_report_without_a_capacity_section(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(OLD, folder)
    paths = write_report(folder, options=ReportOptions(target_rate=5))
    assert paths.capacity is None
    assert "Capacity" not in paths.report_md.read_text()
    assert not list(folder.glob("capacity_*.png"))
