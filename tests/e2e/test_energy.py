"""Energy through `python -m sweep` on real Ray: what a sim sweep records and reports here.

The sim backend runs on CPU, so its trials' energy would come from RAPL, and only where
`/sys/class/powercap` has a readable zone (`sweep.measure.powercap.rapl_source` tells, as the worker
does). Where it has none, as on the test machines, every energy column must be null with the
method `not_measured` (never 0), and the report must still render and say so.
"""

import pandas as pd

from sweep.core import records as R
from sweep.measure.powercap import rapl_source
from tests.helpers import sweep_in_process

ENERGY_FIGURES = (
    R.ENERGY_J,
    R.ENERGY_J_PER_OUTPUT_TOKEN,
    R.ENERGY_J_PER_REQUEST,
    R.ENERGY_WH_PER_1M_OUTPUT,
    R.MEAN_POWER_W,
)


def test_a_sim_sweep_records_energy_as_this_machine_allows(ray_cluster, tmp_path):
    result = sweep_in_process(
        f"cluster.address={ray_cluster}",
        "sweep.name=energy",
        f"output.dir={tmp_path}",
        "backend=sim",
        "workload=closed_loop",
        "workload.num_requests=8",
        "workload.output_len=8",
        "dataset.input_len=16",
        "+sweep.grid.workload.concurrency=[1,2]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "energy"
    summary = pd.concat(pd.read_parquet(p) for p in root.glob(f"*/*/{R.SUMMARY_FILE}"))
    assert len(summary) == 2 and summary[R.TRIAL_STATUS].eq(R.STATUS_OK).all()
    report = (root / "report.md").read_text()
    if rapl_source() is None:  # no readable RAPL here: not measured, and said so
        assert summary[R.ENERGY_METHOD].eq(R.ENERGY_NOT_MEASURED).all()
        for column in ENERGY_FIGURES:
            assert summary[column].isna().all(), column
        energy = report.split("## Energy", 1)[1].split("\n## ", 1)[0]
        assert "Not measured" in energy
        results = report.split("## Results", 1)[1].split("\n## ", 1)[0]
        assert results.count("not measured") == 2  # each trial's Wh / 1M output tok
    else:  # a readable package counter: every trial measured by it, above 0
        assert summary[R.ENERGY_METHOD].eq(R.ENERGY_RAPL).all()
        assert (summary[R.ENERGY_J] > 0).all()
        assert "RAPL" in report
