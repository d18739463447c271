"""A tuned configuration's outcome, read from its probes' rows as the results folder holds them.

Capacity and cost objectives, a pruned search, a deployment that failed before any probe, and
a summary-column objective; the rows are written as the worker writes them (`search_*`,
`slo_*`, wall and start-up columns), the folder stood in for by a stub.
"""

import dataclasses

import pytest

from sweep.core import records as R
from sweep.plan.plan import build_plan
from sweep.tune.outcome import COMPLETE, FAILED, PRUNED, read_outcome

BASE = ["+experiment=tune_sim", "sweep.report=false", "tracking=none"]


class Folder:
    """The two reads `read_outcome` makes of a results folder."""

    def __init__(self, probes=(), row=None):
        self.probes, self.row = list(probes), row

    def probe_rows(self, deployment_id, search_id):
        return self.probes

    def trial_row(self, deployment_id, trial_id):
        return self.row


def probe(index, load, passed, cost=1.0):
    return {
        R.SEARCH_PROBE: index,
        R.SEARCH_LOAD: load,
        R.SLO_PASSED: passed,
        R.WALL_S: 2.0,
        R.SERVER_START_S: 1.5,
        R.COST_PER_1M_OUTPUT: cost,
        R.TRIAL_STATUS: R.STATUS_OK,
    }


@pytest.fixture(scope="module")
def seed():
    (spec,) = build_plan(BASE, point={"backend.max_num_seqs": 8}).trials
    return spec


def test_a_complete_search_gives_its_capacity_interval_and_hours(seed):
    rows = [probe(0, 16.0, True, 0.2), probe(1, 32.0, True, 0.1), probe(2, 64.0, False),
            probe(3, 45.0, True, 0.08), probe(4, 50.0, False)]  # fmt: skip
    found = read_outcome(Folder(rows), seed, "capacity")
    assert found.state == COMPLETE and found.value == 45.0
    assert (found.low, found.high, found.probes) == (45.0, 50.0, 5)
    assert found.deployment_s == pytest.approx(5 * 2.0 + 1.5) and found.start_s == 1.5
    cost = read_outcome(Folder(rows), seed, "cost_per_mtok")
    assert cost.state == COMPLETE and cost.value == 0.08  # the cost at the capacity's load


def test_a_search_stopped_below_the_bound_is_pruned(seed):
    search = dataclasses.replace(seed.config.search, start=40.0, stop_below=40.0)
    bounded = dataclasses.replace(seed, config=dataclasses.replace(seed.config, search=search))
    found = read_outcome(Folder([probe(0, 40.0, False)]), bounded, "capacity")
    assert found.state == PRUNED and found.value is None and found.high == 40.0
    assert found.reason.startswith("pruned: fails at 40 req/s")


def test_a_deployment_that_never_probed_failed_with_its_reason(seed):
    row = {R.TRIAL_STATUS: R.STATUS_FAILED, R.ERROR_MESSAGE: "backend failed to start: boom"}
    found = read_outcome(Folder(row=row), seed, "capacity")
    assert found.state == FAILED and found.reason == "backend failed to start: boom"


def test_no_load_meeting_the_slo_has_no_cost(seed):
    found = read_outcome(Folder([probe(0, 16.0, False), probe(1, 1.0, False)]), seed,
                         "cost_per_mtok")  # fmt: skip
    assert found.state == FAILED and "no cost at capacity" in found.reason


def test_a_summary_column_objective_reads_its_one_trial():
    overrides = [*BASE, "search.tune.objective=output_throughput_tok_s",
                 "search.tune.direction=maximize", "workload.request_rate=8"]  # fmt: skip
    (plain,) = build_plan(overrides, point={"backend.max_num_seqs": 8}).trials
    assert plain.search is None  # one trial, no capacity search
    row = {R.TRIAL_STATUS: R.STATUS_OK, R.OUTPUT_THROUGHPUT: 321.0, R.WALL_S: 4.0}
    found = read_outcome(Folder(row=row), plain, R.OUTPUT_THROUGHPUT)
    assert (found.state, found.value, found.probes, found.deployment_s) == (COMPLETE, 321.0, 1, 4.0)
    failed = read_outcome(Folder(row={**row, R.TRIAL_STATUS: R.STATUS_FAILED}), plain,
                          R.OUTPUT_THROUGHPUT)  # fmt: skip
    assert failed.state == FAILED
