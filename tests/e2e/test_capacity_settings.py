"""The capacity search's bad settings: one line each, before any Ray starts, nothing written.

`python -m sweep +experiment=quickstart_capacity` run by its entry function in this process
(`tests.helpers.sweep_in_process`); the searches themselves are `test_capacity_search.py`.
"""

import pytest
import ray

from tests.helpers import sweep_in_process


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["workload=latency_bound"], "needs a load to raise"),
        (["search.tolerance=1.5"], "search.tolerance must be in (0, 1)"),
        (["slo.limits={ttft_ms_p999: 5}"], "ttft_ms_p999"),
        (["search.start=500"], "above search.max_load"),
        (["slo.ttft_ms_p99=null"], "needs an SLO"),
        (["+sweep.grid.workload.request_rate=[1,2]"], "chooses itself"),
    ],
)
def test_bad_search_settings_are_one_line_before_ray(override, message, tmp_path):
    result = sweep_in_process(
        "+experiment=quickstart_capacity", f"output.dir={tmp_path}", *override
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "quickstart_capacity").exists()
    assert not ray.is_initialized()
