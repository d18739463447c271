"""A results folder that fills up, driven directly: what the driver keeps and what it says.

A real tmpfs of a few pages stands in for the full disk (root only, as the rest of this
package); the trial's files are a real sim trial's. The namespace cluster is not needed.
"""

from __future__ import annotations

import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from sweep.core import records as R
from sweep.core.errors import ResultsNotSaved
from sweep.core.results import ResultStore
from sweep.driver.driver import Driver, _not_saved_record
from sweep.tools.netns_hosts import fill
from tests.helpers import run_sweep_here

PAGE = 4096


class Progress:
    def trial_finished(self, files):
        self.last = files


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """One finished sim trial's files (run in this process, no Ray)."""
    collect = []
    run_sweep_here(
        tmp_path_factory.mktemp("sim"),
        ["+experiment=sim_cluster", "sweep.grid.backend.ttft_ms=[5]",
         "sweep.grid.workload.concurrency=[2]", "workload.num_requests=30",
         "workload.output_len=8", "workload.warmup_requests=0"],
        collect,
    )  # fmt: skip
    return collect[0]


@pytest.fixture
def small_fs(tmp_path):
    point = tmp_path / "fs"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "lsw-test", str(point)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, f"cannot mount a tmpfs (needs root): {done.stderr}"
    yield point
    subprocess.run(["umount", "-l", str(point)], check=True)


def footprint(store, files, scratch) -> int:
    """Bytes `files` take on a tmpfs, written to a scratch folder of the same file system."""
    before = shutil.disk_usage(scratch).used
    ResultStore(str(scratch), "scratch").write_trial(files)
    used = shutil.disk_usage(scratch).used - before
    shutil.rmtree(scratch / "scratch")
    return used


def driver_for(store):
    return Driver(store, {}, cluster=None, progress=Progress())


@pytest.mark.parametrize("room_for_record", [True, False])
def test_a_full_disk_stops_the_sweep_with_nothing_partial(trial, small_fs, room_for_record):
    store = ResultStore(str(small_fs / "results"), "full")
    record_size = footprint(store, _not_saved_record(trial, "x"), small_fs)
    assert footprint(store, trial, small_fs) > record_size + PAGE  # a trial needs more
    fill(small_fs, leave_bytes=record_size + PAGE if room_for_record else 0)

    with pytest.raises(ResultsNotSaved) as raised:
        driver_for(store)._record(trial)
    message = str(raised.value)
    assert "No space left on device" in message and store.root in message
    assert "run the same command again" in message and len(message.splitlines()) == 1
    assert not list((small_fs / "results").rglob("*.tmp-*"))
    folder = small_fs / "results" / "full" / trial.deployment_id / trial.trial_id
    if room_for_record:  # the trial is recorded as failed, with the reason, and nothing else
        assert {p.name for p in folder.iterdir()} >= {R.SUMMARY_FILE, R.REQUESTS_FILE}
        row = pq.read_table(folder / R.SUMMARY_FILE).to_pylist()[0]
        assert row[R.TRIAL_STATUS] == R.STATUS_FAILED
        assert row[R.ERROR_KIND] == R.ERROR_NOT_SAVED
        assert "No space left on device" in row[R.ERROR_MESSAGE]
        assert pq.read_table(folder / R.REQUESTS_FILE).num_rows == 0
    else:  # no room even for that: nothing of the trial is left
        assert not folder.exists() or not list(folder.iterdir())
    # resume runs it again: a trial whose results were not kept counts as not run
    assert store.trial_status(trial.deployment_id, trial.trial_id) is None


def test_resume_runs_again_a_trial_whose_results_were_not_kept(trial, small_fs):
    store = ResultStore(str(small_fs / "results"), "room")
    driver = driver_for(store)
    driver._record(trial)
    assert driver.outcome.ok == [trial.trial_id]
    assert store.trial_status(trial.deployment_id, trial.trial_id) == R.STATUS_OK
    store.write_trial(_not_saved_record(trial, "No space left on device"))
    assert store.trial_status(trial.deployment_id, trial.trial_id) is None
