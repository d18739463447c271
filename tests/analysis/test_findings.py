"""Findings in words on sweeps whose truth is known: the sim server with planted latencies.

Each request's delays get their own lognormal factor (`backend.jitter=0.3`), as real servers'
requests differ, and each configuration runs at the quickstart's size (32 requests, 5 repeats).
An A/A pair (the same schedule, another jitter seed) must be stated as within noise; a planted 2x
in TTFT must be stated with its interval, and a planted 1.05x called within noise. The trials run
in this process (`tests.helpers.run_sweep_here`: the trial code without Ray's start-up).
"""

import re

import pytest

from analysis.compare import TTFT_MEDIAN, analyse
from analysis.findings import findings
from analysis.load import load_requests, load_summary
from analysis.noise import BETTER, WITHIN_NOISE, compare
from analysis.report import sort_trials
from tests.helpers import run_sweep_here

BASE = [
    "+experiment=sim_cluster",
    "sweep.grid.workload.concurrency=[8]",
    "backend.jitter=0.3",
    "backend.itl_ms=5",
    "sweep.repeats=5",
    "workload.num_requests=32",
]


def _comparison(out, grid):
    root = run_sweep_here(out, [*BASE, *grid])
    return analyse(sort_trials(load_summary(root)), load_requests(root), baseline="sim")


@pytest.fixture(scope="module")
def aa(tmp_path_factory):
    return _comparison(
        tmp_path_factory.mktemp("aa"),
        ["sweep.grid.backend.ttft_ms=[20]", "+sweep.grid.backend.seed=[0,1]"],
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return _comparison(
        tmp_path_factory.mktemp("planted"), ["sweep.grid.backend.ttft_ms=[20,21,40]"]
    )


def _name(comparison, ttft):
    (name,) = [n for n in comparison.estimates if re.search(rf"ttft_ms={ttft}\b", n)]
    return name


def test_an_aa_pair_states_no_difference(aa):
    assert len(aa.estimates) == 2
    lines = findings(aa)
    assert lines[0].startswith("Intervals are 95%, from the 5 repeats")
    leads = [line for line in lines if "lead" in line]
    assert len(leads) == 3, lines  # output tok/s, median TTFT, median TPOT
    assert all(line.startswith("No configuration leads on") for line in leads), leads
    same_load = [line for line in lines if line.startswith("At concurrency 8")]
    assert same_load and all("within noise" in line for line in same_load), lines
    assert aa.pareto["on_pareto_front"].all()  # neither beats the other beyond noise


def test_a_planted_2x_is_stated_and_a_planted_5_percent_is_within_noise(planted):
    fast, close, slow = (_name(planted, t) for t in (20, 21, 40))
    est = planted.estimates
    twice = compare(est[fast][TTFT_MEDIAN], est[slow][TTFT_MEDIAN], higher_is_better=False)
    assert twice.verdict == BETTER
    assert 1.5 < 1 / twice.ratio < 2.5 and twice.high < 1.0
    near = compare(est[fast][TTFT_MEDIAN], est[close][TTFT_MEDIAN], higher_is_better=False)
    assert near.verdict == WITHIN_NOISE, near
    (ttft,) = [line for line in findings(planted) if "median TTFT" in line]
    assert ttft.startswith(f"**{fast}**") or ttft.startswith(f"**{close}**"), ttft
    assert "within noise of each other" in ttft
    assert re.search(
        rf"\d\.\d\dx \[\d\.\d\dx, \d\.\d\dx\] lower than the next, \*\*{re.escape(slow)}", ttft
    )
