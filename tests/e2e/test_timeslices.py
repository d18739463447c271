"""A staged trial through the whole pipeline but Ray: planned from the command-line overrides,
run by the deployment's task (`sweep.worker.trial.run_deployment`) against a real sim server,
written by the result store and reported by `analysis.report.report`.

An open-loop stage, then a closed-loop one: the trial writes timeslices.parquet and stages.parquet
beside its other files, the windows add up to its requests and tokens, and the report shows the
per-stage table and the time-slice figure. `python -m sweep` on real Ray writes time slices in
tests/e2e/test_capacity_search.py (shared with its run); bad stages are one line before any
request in tests/sweep/test_stages.py.
"""

import pandas as pd
import pytest

from analysis.report.report import write_report
from sweep.core import records as R
from tests.helpers import run_sweep_here

STAGED = (
    "backend=sim",
    "workload=open_loop",
    "workload.warmup_requests=0",
    "workload.num_requests=200",
    "workload.output_len=8",
    "dataset.input_len=16",
    "workload.stages=[{request_rate: 20, duration_s: 1.5}, {concurrency: 4, duration_s: 1.5}]",
    "workload.slice_s=0.25",
    "sweep.name=staged",
)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = run_sweep_here(tmp_path_factory.mktemp("staged"), STAGED)
    (folder,) = [p.parent for p in root.glob(f"*/*/{R.SUMMARY_FILE}")]
    return root, folder, write_report(root, options=None)


def test_time_slices_are_written_and_add_up(staged):
    _, folder, _ = staged
    slices = pd.read_parquet(folder / R.TIMESLICES_FILE)
    requests = pd.read_parquet(folder / R.REQUESTS_FILE)
    summary = pd.read_parquet(folder / R.SUMMARY_FILE).iloc[0]
    assert summary[R.TRIAL_STATUS] == R.STATUS_OK
    assert list(slices.columns) == R.TIMESLICES_SCHEMA.names
    assert slices[R.SLICE_IDX].tolist() == list(range(len(slices)))
    assert (slices[R.SLICE_END_S] - slices[R.SLICE_START_S]).round(9).eq(0.25).all()
    assert len(slices) == pytest.approx(3.0 / 0.25, abs=3)  # two stages of 1.5 s, and the drain
    assert slices[R.REQUESTS_STARTED].sum() == len(requests)
    assert slices[R.REQUESTS_FINISHED].sum() == summary[R.COMPLETED_REQUESTS] == len(requests)
    assert slices[R.SLICE_OUTPUT_TOKENS].sum() == summary[R.OUTPUT_TOKENS_TOTAL]
    assert slices[R.REQUESTS_IN_FLIGHT].iloc[-1] == 0
    # The sim server's KV-cache gauge is sampled once a second: some windows have it.
    assert slices[R.SLICE_KV_CACHE_USAGE].notna().any()


def test_each_stage_has_its_row_and_the_report_shows_them(staged):
    root, folder, paths = staged
    stages = pd.read_parquet(folder / R.STAGES_FILE).set_index(R.STAGE)
    requests = pd.read_parquet(folder / R.REQUESTS_FILE)
    assert stages.index.tolist() == [0, 1]
    assert stages[R.NUM_REQUESTS].tolist() == requests.groupby(R.STAGE).size().tolist()
    assert stages.loc[0, R.SEND_RATE] == pytest.approx(20, rel=0.1)
    assert stages.loc[1, R.STAGE_CONCURRENCY] == 4
    report = paths.report_md.read_text()
    assert "## Stages" in report and "| 20 req/s |" in report and "| 4 streams |" in report
    assert "## Metrics per time slice" in report and (root / "timeslices.png") in paths.plots
