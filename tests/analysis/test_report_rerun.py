"""A report re-run from the per-trial cache writes what a cold run writes.

The folder grows between the runs (new trials, one of them with a setting no other trial has,
in the folder's first deployment), one trial is rewritten (its summary's numbers change) and
one is removed, so the cached rows must be topped up, refreshed and pruned, and their columns
kept in the order of a cold read; a cold report of the same folder, in a fresh output folder
with no cache, is the reference.
"""

import logging
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from large_folder import write_copies

from analysis.report.report import write_report
from sweep.core import records as rec
from sweep.core.results import ResultStore

TEXT_FILES = ("report.md", "summary.csv", "trials.csv")
NEW_SETTING = "backend.new_knob"
_TABLE_ID = re.compile(r"itables_[0-9a-f_]+")  # ITables names each table at random


def outputs(out: Path) -> dict[str, object]:
    """What a report wrote that a reader sees: its text files, typed summary, page and plots."""
    found: dict[str, object] = {name: (out / name).read_text() for name in TEXT_FILES}
    found["summary.parquet"] = pd.read_parquet(out / "summary.parquet")
    found["report.html"] = _TABLE_ID.sub("itables_", (out / "report.html").read_text())
    found.update({png.name: png.read_bytes() for png in sorted(out.glob("*.png"))})
    return found


def rewrite(summary: Path, factor: float) -> float:
    """The trial's summary written again with its output tok/s scaled (a resumed trial).

    Returns:
        The new output tok/s.
    """
    table = pq.read_table(summary)
    column = table.schema.get_field_index(rec.OUTPUT_THROUGHPUT)
    scaled = pc.multiply(table[rec.OUTPUT_THROUGHPUT], pa.scalar(factor))
    pq.write_table(table.set_column(column, rec.OUTPUT_THROUGHPUT, scaled), summary)
    stat = summary.stat()  # a later stamp even on a coarse clock
    os.utime(summary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    return scaled[0].as_py()


def add_setting(summary: Path, name: str, value: float) -> None:
    """The trial's summary written again with one more config column (a new backend option)."""
    table = pq.read_table(summary)
    pq.write_table(table.append_column(name, pa.array([value] * table.num_rows)), summary)


def test_a_cached_rerun_writes_what_a_cold_run_writes(tmp_path, caplog):
    store = ResultStore(str(tmp_path / "results"), "grow")
    write_copies(store, range(15))  # 60 trials: pooled, with trials.csv and summary.parquet
    root = Path(store.root)
    write_report(root, tmp_path / "warm")
    write_copies(store, range(15, 20))  # 20 trials more
    trials = sorted(p.parent for p in root.glob(f"*/*/{rec.SUMMARY_FILE}"))
    assert trials[15].name.endswith("0015")  # the first deployment's first new trial
    add_setting(trials[15] / rec.SUMMARY_FILE, NEW_SETTING, 2.5)
    tripled = rewrite(trials[3] / rec.SUMMARY_FILE, 3.0)
    shutil.rmtree(trials[0])  # a trial the cache holds
    with caplog.at_level(logging.INFO, logger="analysis.read.load"):
        warm = write_report(root, tmp_path / "warm")
    cold = write_report(root, tmp_path / "cold")
    assert "read 21 of 79 trial summaries" in caplog.text  # 20 new, 1 rewritten
    again, reference = outputs(warm.report_md.parent), outputs(cold.report_md.parent)
    assert again.keys() == reference.keys()
    assert len(reference["summary.parquet"]) == 79
    summary = reference["summary.parquet"].set_index(rec.TRIAL_ID)
    assert summary[NEW_SETTING].notna().sum() == 1
    assert summary.loc[trials[3].name, rec.OUTPUT_THROUGHPUT] == tripled
    assert trials[0].name not in summary.index
    for name, value in reference.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(again[name], value)
        else:
            assert again[name] == value, name
