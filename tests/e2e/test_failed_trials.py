"""A deployment that cannot start is recorded as failed trials and the rest of the sweep goes on."""

import pandas as pd

from backends.models.tiny import ensure_tiny_model
from sweep.core import records as R
from tests.helpers import sweep_in_process


def test_unloadable_model_becomes_failed_trials(tmp_path, ray_cluster):
    good = ensure_tiny_model()
    result = sweep_in_process(
        f"cluster.address={ray_cluster}",
        "sweep.name=mixed",
        f"output.dir={tmp_path}",
        "model.generator=null",
        f"+sweep.grid.model.path=[{good},{tmp_path}/missing-model]",
        "workload.num_requests=4",
        "workload.output_len=4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = pd.concat(
        pd.read_parquet(p) for p in (tmp_path / "mixed").glob("*/*/summary.parquet")
    )
    by_path = summary.set_index("model.path")
    assert by_path.loc[str(good), R.TRIAL_STATUS] == R.STATUS_OK
    bad = by_path.loc[f"{tmp_path}/missing-model"]
    assert bad[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert bad[R.ERROR_KIND] == R.ERROR_BACKEND_START
    assert "missing-model" in bad[R.ERROR_MESSAGE]
    assert "finished: 1 ok, 1 failed" in result.stdout
    report = (tmp_path / "mixed" / "report.md").read_text()
    assert "backend_start_failed" in report
