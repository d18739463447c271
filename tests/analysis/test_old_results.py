"""A results folder written by main before the layout change (9e73cea) still loads and reports.

`tests/fixtures/results_9e73cea/main_9e73cea` was written by that commit's `python -m sweep`
(sim backend, batch size 1 and 4, server TTFT 10 and 30 ms): no `group_choices` column, no
architecture columns. Analysis must read it from what it recorded, as it reads a new one.
"""

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from sweep.core import records as R
from tests.helpers import analysis_in_process

REPO = Path(__file__).resolve().parents[2]
OLD = REPO / "tests" / "fixtures" / "results_9e73cea" / "main_9e73cea"


def test_an_old_results_folder_gives_the_same_numbers_and_report(tmp_path):
    folder = tmp_path / "main_9e73cea"
    shutil.copytree(OLD, folder)
    done = analysis_in_process(str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(folder / "summary.csv")
    written = pd.concat(pq.read_table(p).to_pandas() for p in OLD.glob(f"*/*/{R.SUMMARY_FILE}"))
    assert sorted(table[R.LABEL]) == sorted(written[R.LABEL]) == [
        "sim-b1-10", "sim-b1-30", "sim-b4-10", "sim-b4-30"
    ]  # fmt: skip
    by_label = written.set_index(R.LABEL)[R.OUTPUT_THROUGHPUT]
    for label, value in table.set_index(R.LABEL)[R.OUTPUT_THROUGHPUT].items():
        assert value == by_label[label]
    # The sim's TTFT schedule shows through: 10 ms and 30 ms servers, a few ms of client and queue.
    ttft = table.set_index(R.LABEL)[R.latency_column("ttft", "median")]
    assert 10 <= ttft["sim-b1-10"] < 20 and 30 <= ttft["sim-b1-30"] < 40
    report = (folder / "report.md").read_text()
    assert all(label in report for label in by_label.index)
    assert (folder / "throughput.png").stat().st_size > 10_000
