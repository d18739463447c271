"""A GPU deployment gets a worker process of its own: no CUDA state is carried to the next one.

Local Ray declares one GPU (simulated: `cluster.num_gpus=1`; the sim backend needs none) and two
GPU deployments run on it one after the other. With a reused worker, the second would inherit
the CUDA devices and contexts of the first (Ray sets `max_calls=1` only for functions declared
with `ray.remote(num_gpus=...)`, not for `.options(num_gpus=...)`).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sweep.core import records as R

pytestmark = pytest.mark.slow  # its sweeps start clusters and servers: scheduled first

REPO = Path(__file__).resolve().parents[2]


def test_each_gpu_deployment_runs_in_a_fresh_worker(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sweep", "sweep.name=gpu_workers", "backend=sim",
         "backend.num_gpus=1", "cluster.num_gpus=1", "cluster.num_cpus=2",
         "+sweep.grid.backend.ttft_ms=[5,6,7]", "workload.num_requests=4",
         "workload.output_len=4", f"output.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [pq.read_table(p).to_pylist()[0] for p in tmp_path.glob(f"*/*/*/{R.SUMMARY_FILE}")]
    assert len(rows) == 3 and {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    by_deployment = {r[R.DEPLOYMENT_ID]: r[R.ENV_WORKER_PID] for r in rows}
    assert len(by_deployment) == 3
    assert len(set(by_deployment.values())) == 3, by_deployment
    assert {r["env.cuda_visible_devices"] for r in rows} == {"0"}
    assert {r[R.ENV_WORKER_NICE] for r in rows} == {0}  # the local cluster's workers: not niced


def test_a_run_killed_before_does_not_stop_the_next_from_starting_ray(tmp_path):
    """A Ray killed with SIGKILL leaves ray_current_cluster naming its dead GCS.

    The sweep gets a Ray temp folder of its own (`RAY_TMPDIR`, short: Ray's socket paths must
    fit in 107 bytes) with such a file in it; the machine's /tmp/ray, which other runs use, is
    not touched.
    """
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as ray_tmp:
        marker = Path(ray_tmp) / "ray" / "ray_current_cluster"
        marker.parent.mkdir()
        marker.write_text("127.0.0.1:1\n")  # nothing listens there
        done = subprocess.run(
            [sys.executable, "-m", "sweep", "sweep.name=stale", "backend=sim",
             "workload.num_requests=2", "workload.output_len=2", f"output.dir={tmp_path}"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "RAY_TMPDIR": ray_tmp},
        )  # fmt: skip
        assert marker.parent.joinpath("session_latest").exists()  # Ray's files went there
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(tmp_path.glob(f"stale/*/*/{R.SUMMARY_FILE}"))) == 1
