"""A deployment whose worker dies on every attempt: retried `cluster.max_retries` times, then its
trials are recorded as failed with the reason, and the rest of the sweep goes on.

The sweep runs in this process on the session's Ray cluster, which this test run started, so
every Ray worker and the sim server each one launches are our own descendants. The doomed
deployment's server answers far later than anything waits (`ttft_ms=600000`): the test finds it
by that schedule on its command line and kills its parent, the deployment's Ray worker, every
time one is up. The other deployment runs unharmed.
"""

import logging
import threading
import time

import pandas as pd
import psutil

from sweep.core import records as R
from tests.helpers import sweep_in_process

DOOMED = '"ttft_ms": 600000'
MAX_RETRIES = 1


def doomed_workers() -> list[psutil.Process]:
    """The Ray workers (our descendants) whose sim server has the doomed schedule."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "--schedule" in proc.cmdline() and DOOMED in " ".join(proc.cmdline()):
                found.append(proc.parent())
        except psutil.Error:
            continue  # gone meanwhile
    return [p for p in found if p is not None]


def test_a_worker_dying_past_max_retries_fails_its_trials_and_the_sweep_goes_on(
    ray_cluster, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="sweep.driver.driver")
    args = (
        "backend=sim", "workload=closed_loop", "workload.warmup_requests=0",
        "workload.num_requests=4", "workload.output_len=4", "dataset.input_len=16",
        "workload.timeout_s=900", "sweep.name=dying", "+sweep.grid.backend.ttft_ms=[5,600000]",
        f"cluster.max_retries={MAX_RETRIES}", f"cluster.address={ray_cluster}",
        f"output.dir={tmp_path}",
    )  # fmt: skip
    result = {}
    sweep = threading.Thread(target=lambda: result.setdefault("run", sweep_in_process(*args)))
    sweep.start()
    killed: set[int] = set()
    deadline = time.monotonic() + 400
    while sweep.is_alive() and time.monotonic() < deadline:
        for worker in doomed_workers():
            if worker.pid not in killed:
                killed.add(worker.pid)
                worker.kill()
        time.sleep(0.2)
    sweep.join(timeout=60)
    run = result["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(killed) == MAX_RETRIES + 1  # the first attempt and each retry, one worker each
    retried = [r for r in caplog.records if "retrying 1 trials elsewhere" in r.getMessage()]
    assert len(retried) == MAX_RETRIES
    frame = pd.concat(pd.read_parquet(p) for p in tmp_path.glob(f"dying/*/*/{R.SUMMARY_FILE}"))
    by_ttft = frame.set_index("backend.ttft_ms")
    assert by_ttft.loc[5, R.TRIAL_STATUS] == R.STATUS_OK
    dead = by_ttft.loc[600000]
    assert dead[R.TRIAL_STATUS] == R.STATUS_FAILED
    assert dead[R.ERROR_KIND] == R.ERROR_WORKER_DIED
    assert "worker" in dead[R.ERROR_MESSAGE].lower(), dead[R.ERROR_MESSAGE]
    assert "finished: 1 ok, 1 failed" in run.stdout
