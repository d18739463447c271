"""`sweep.report=false`: a sweep writes its trials only, `python -m analysis` its report later.

A sweep's report (summary.csv, the plots, report.md and .html) is most of what its driver does
after the trials (about 2 CPU-s for a small sweep, its plotting library's import besides). A
sweep told not to write it says how to write it, and that command writes the report the sweep
would have written.
"""

import pyarrow.parquet as pq

from sweep.core import records as R
from tests.helpers import analysis_in_process, sweep_in_process


def test_a_sweep_without_its_report_writes_the_trials_and_says_how_to_write_it(
    tmp_path, ray_cluster
):
    result = sweep_in_process(
        "+experiment=sim_cluster",
        "hardware=cpu",
        "backend.num_gpus=0",
        "sweep.name=no_report",
        "sweep.grid.backend.ttft_ms=[5]",
        "sweep.grid.workload.concurrency=[2,4]",
        "workload.num_requests=8",
        "workload.output_len=4",
        "sweep.report=false",
        f"cluster.address={ray_cluster}",
        f"output.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    root = tmp_path / "no_report"
    summaries = sorted(root.glob(f"*/*/{R.SUMMARY_FILE}"))
    rows = [pq.read_table(p).to_pylist()[0] for p in summaries]
    assert sorted(r["workload.concurrency"] for r in rows) == [2, 4]
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    written = {p.name for p in root.iterdir() if p.is_file()}
    assert not written & {"report.md", "report.html", "summary.csv"}, written
    assert not list(root.glob("*.png"))
    assert "finished: 2 ok, 0 failed" in result.stdout
    assert "report not written (sweep.report=false)" in result.stdout
    command = result.stdout.split("write it with: ", 1)[1].split()[:3]
    assert command == ["python", "-m", "analysis"]

    # The command it names writes the report of those trials.
    assert analysis_in_process(str(root)).returncode == 0
    assert (root / "report.md").read_text().startswith("# ")
    csv = (root / "summary.csv").read_text()
    assert csv.count("\n") == 3  # a header and the two trials
    assert all(r[R.TRIAL_ID] in csv for r in rows)
    assert list(root.glob("*.png"))
