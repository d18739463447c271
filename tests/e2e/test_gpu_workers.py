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


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """One `python -m sweep` on the local Ray it starts, for both tests: three GPU deployments
    on one simulated GPU, in a Ray temp folder (`RAY_TMPDIR`) where a Ray killed with SIGKILL
    left `ray_current_cluster` naming its dead GCS. Returns the run, its results folder and
    whether Ray's session files went to that folder."""
    out = tmp_path_factory.mktemp("gpu_workers")
    # short: Ray's socket paths must fit in 107 bytes; the machine's /tmp/ray is not touched
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as ray_tmp:
        marker = Path(ray_tmp) / "ray" / "ray_current_cluster"
        marker.parent.mkdir()
        marker.write_text("127.0.0.1:1\n")  # nothing listens there
        done = subprocess.run(
            [sys.executable, "-m", "sweep", "sweep.name=gpu_workers", "backend=sim",
             "backend.num_gpus=1", "cluster.num_gpus=1", "cluster.num_cpus=2",
             "+sweep.grid.backend.ttft_ms=[5,6,7]", "workload.num_requests=4",
             "workload.output_len=4", "sweep.report=false", f"output.dir={out}"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "RAY_TMPDIR": ray_tmp},
        )  # fmt: skip
        in_own_tmp = marker.parent.joinpath("session_latest").exists()
    return done, out, in_own_tmp


def test_each_gpu_deployment_runs_in_a_fresh_worker(local_sweep):
    done, out, _ = local_sweep
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [pq.read_table(p).to_pylist()[0] for p in out.glob(f"*/*/*/{R.SUMMARY_FILE}")]
    assert len(rows) == 3 and {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    by_deployment = {r[R.DEPLOYMENT_ID]: r[R.ENV_WORKER_PID] for r in rows}
    assert len(by_deployment) == 3
    assert len(set(by_deployment.values())) == 3, by_deployment
    assert {r["env.cuda_visible_devices"] for r in rows} == {"0"}
    assert {r[R.ENV_WORKER_NICE] for r in rows} == {0}  # the local cluster's workers: not niced


def test_a_run_killed_before_does_not_stop_the_next_from_starting_ray(local_sweep):
    """The stale `ray_current_cluster` in the sweep's Ray temp folder did not stop it: it started
    a Ray of its own there and ran every trial."""
    done, out, in_own_tmp = local_sweep
    assert in_own_tmp  # Ray's files went there
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(out.glob(f"gpu_workers/*/*/{R.SUMMARY_FILE}"))) == 3
