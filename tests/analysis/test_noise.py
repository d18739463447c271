"""Intervals of comparing figures (`analysis.stats.noise`), the noise-aware Pareto front, the A/A
table and the terminal table's width: values checked against what statistics says they must be."""

import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from analysis.read.columns import CONFIGURATION, LATENCY_MS
from analysis.report import console as console_module
from analysis.report.report import console_table
from analysis.stats.compare import noisy_pareto_mask, pareto_mask
from analysis.stats.noise import (
    BETTER,
    BOOTSTRAP,
    REPEATS,
    WITHIN_NOISE,
    WORSE,
    Estimate,
    compare,
    estimates,
    welch_df,
    window_rates,
)
from analysis.stats.noise_check import spread_table
from sweep.core import records as R


def test_a_ratio_interval_is_taken_on_its_log():
    a, b = (
        Estimate(200.0, 10.0, math.inf, 1, BOOTSTRAP),
        Estimate(100.0, 5.0, math.inf, 1, BOOTSTRAP),
    )
    diff = compare(a, b, higher_is_better=True)
    half = 1.959964 * math.hypot(0.05, 0.05)
    assert diff.ratio == pytest.approx(2.0)
    assert diff.low == pytest.approx(2.0 * math.exp(-half), rel=1e-6)
    assert diff.high == pytest.approx(2.0 * math.exp(half), rel=1e-6)
    assert diff.verdict == BETTER
    assert compare(b, a, higher_is_better=True).verdict == WORSE
    assert compare(a, b, higher_is_better=False).verdict == WORSE  # more latency is worse
    # Mirrored: b / a has the reciprocal interval.
    back = compare(b, a, higher_is_better=True)
    assert back.low == pytest.approx(1 / diff.high) and back.high == pytest.approx(1 / diff.low)


def test_an_aa_pair_is_within_noise_and_welch_counts_the_degrees_of_freedom():
    a = Estimate(100.0, 3.0, 2.0, 3, REPEATS)
    b = Estimate(104.0, 3.0, 2.0, 3, REPEATS)
    va, vb = (3 / 100) ** 2, (3 / 104) ** 2
    assert welch_df(a, b) == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 2))
    assert compare(a, b, higher_is_better=True).verdict == WITHIN_NOISE
    # The same 4% with tiny errors is a real difference.
    tight = Estimate(104.0, 0.1, 30.0, 3, REPEATS)
    assert compare(tight, Estimate(100.0, 0.1, 30.0, 3, REPEATS), True).verdict == BETTER


def test_throughput_windows_average_to_the_trial_rate():
    rng = np.random.default_rng(1)
    sent = np.sort(rng.uniform(0, 10, 80))
    first = sent + 0.05
    end = first + rng.uniform(0.2, 1.0, 80)
    tokens = rng.integers(8, 64, 80).astype(float)
    ok = pd.DataFrame(
        {R.SENT_S: sent, R.FIRST_TOKEN_S: first, R.END_S: end, R.OUTPUT_TOKENS: tokens}
    )
    rates = window_rates(ok)
    assert len(rates) == 20
    assert rates.mean() == pytest.approx(tokens.sum() / (end.max() - sent.min()), rel=1e-9)


def _trial(trial_id, config, ttft_s, repeat=0):
    n = len(ttft_s)
    sent = np.arange(n) * 0.1
    requests = pd.DataFrame(
        {
            R.TRIAL_ID: trial_id,
            R.STATUS: R.STATUS_OK,
            R.SENT_S: sent,
            R.FIRST_TOKEN_S: sent + ttft_s,
            R.END_S: sent + ttft_s + 0.2,
            R.TTFT_S: ttft_s,
            R.E2E_S: ttft_s + 0.2,
            R.OUTPUT_TOKENS: 10.0,
            R.ITL_S: [np.full(9, 0.2 / 9)] * n,
        }
    )
    summary = {
        R.TRIAL_ID: trial_id,
        R.TRIAL_STATUS: R.STATUS_OK,
        "config": config,
        R.latency_column("ttft", "median"): float(np.median(ttft_s) * 1e3),
    }
    return summary, requests


def test_a_single_trial_gets_a_bootstrap_error_that_matches_theory():
    rng = np.random.default_rng(7)
    ttft = rng.normal(0.100, 0.010, 400)
    summary, requests = _trial("t1", "a", ttft)
    trials = pd.DataFrame([summary])
    found = estimates(trials, requests, trials["config"], (R.latency_column("ttft", "median"),))
    est = found["a"][R.latency_column("ttft", "median")]
    assert est.method == BOOTSTRAP and est.trials == 1 and math.isinf(est.df)
    theory = 1.2533 * 10.0 / math.sqrt(400)  # se of a normal sample's median, in ms
    assert est.se == pytest.approx(theory, rel=0.3)


def test_repeats_give_a_student_t_estimate():
    rows, frames = [], []
    for i, level in enumerate((0.100, 0.104, 0.098)):
        summary, requests = _trial(f"t{i}", "a", np.full(30, level), repeat=i)
        rows.append(summary), frames.append(requests)
    trials = pd.DataFrame(rows)
    metric = R.latency_column("ttft", "median")
    est = estimates(trials, pd.concat(frames), trials["config"], (metric,))["a"][metric]
    values = np.array([100.0, 104.0, 98.0])
    assert est.method == REPEATS and est.df == 2 and est.trials == 3
    assert est.value == pytest.approx(values.mean())
    assert est.se == pytest.approx(values.std(ddof=1) / math.sqrt(3))


def test_the_front_keeps_configurations_within_noise_of_a_better_one():
    ttft = R.latency_column("ttft", "median")
    points = pd.DataFrame(
        {
            CONFIGURATION: ["a", "b", "c"],
            LATENCY_MS: [10.0, 10.2, 20.0],
            R.THROUGHPUT_PER_GPU: [100.0, 98.0, 50.0],
        }
    )

    def est(value, se):
        return Estimate(value, se, math.inf, 1, BOOTSTRAP)

    found = {
        "a": {ttft: est(10.0, 1.0), R.THROUGHPUT_PER_GPU: est(100.0, 10.0)},
        "b": {ttft: est(10.2, 1.0), R.THROUGHPUT_PER_GPU: est(98.0, 10.0)},
        "c": {ttft: est(20.0, 0.5), R.THROUGHPUT_PER_GPU: est(50.0, 2.0)},
    }
    plain = pareto_mask(points[LATENCY_MS], points[R.THROUGHPUT_PER_GPU])
    assert plain.tolist() == [True, False, False]  # without noise, b looks beaten by a
    assert noisy_pareto_mask(points, found, ttft).tolist() == [True, True, False]


def test_the_aa_table_reports_the_spread_of_repeated_configurations():
    summary = pd.DataFrame(
        {
            R.TRIAL_STATUS: R.STATUS_OK,
            R.BACKEND_NAME: "hf",
            R.WORKLOAD_NAME: "throughput_bound",
            R.WORKLOAD_BATCH_SIZE: 8,
            R.OUTPUT_THROUGHPUT: [100.0, 110.0, 90.0],
        }
    )
    table = spread_table(summary)
    row = table[table["Metric"] == "Output tok/s"].iloc[0]
    assert row["Runs"] == "3" and row["Mean"] == "100.00"
    assert row["CV (%)"] == "10.0" and row["Max - min (%)"] == "20.0"
    assert row["95% CI ± (%)"] == f"{4.302653 * 10 / math.sqrt(3):.1f}"


def test_the_terminal_table_fits_100_columns_with_every_number_whole(monkeypatch, tmp_path):
    summary = pd.DataFrame(
        {
            R.TRIAL_ID: [f"id{i}" for i in range(3)],
            R.LABEL: ["hf-static_batch-prompts-b8-r0", "vllm_server-tp1-c16-r1", "sim-40-c8-r2"],
            R.TRIAL_STATUS: R.STATUS_OK,
            R.BACKEND_NAME: ["hf", "vllm_server", "sim"],
            R.WORKLOAD_BATCH_SIZE: 8,
            R.NUM_REQUESTS: 480,
            R.COMPLETED_REQUESTS: 480,
            R.OUTPUT_THROUGHPUT: [12345.6, 987.6, 1.5],
            R.latency_column("ttft", "median"): [12345.6, 2.5, 7.0],
            R.latency_column("tpot", "median"): [1234.5, 1.25, 3.0],
            R.COST_PER_1M_OUTPUT: [1234.56, 0.01, 2.0],
        }
    )
    with (tmp_path / "terminal.txt").open("w") as sink:
        console = Console(width=100, record=True, file=sink)
        monkeypatch.setattr(console_module, "make_console", lambda: console)
        console_module.print_table(console_table(summary), title="Sweep t")
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    for value in ("12,345.6", "987.6", "1,234.5", "1,234.56", "480/480"):
        assert value in text, value
