"""Faults while a submitted sweep runs on the namespace cluster: each trial is recorded once.

Each test submits the same small sweep (2 deployments x 3 trials of the `sim` backend; the
driver test twice the trials) through `scripts/submit_sweep.sh`, injects one fault mid-trial,
and checks that every trial ends up recorded exactly once and that no process of the sweep (sim
server, deployment worker) is left. The host a fault took down is restarted by the `cluster`
fixture of the next test.
"""

from __future__ import annotations

import os
import signal
import time

import pyarrow.parquet as pq
import pytest

from sweep.core import records as R
from sweep.tools.netns_hosts import HEALTH_CHECK_DEAD_S, SMALL_FS, fill
from tests.multihost.conftest import busy_host, settle_strays, submit, summaries, wait_until

pytestmark = pytest.mark.slow
TRIALS = 6


def sweep(name: str, *more: str, report: bool = False) -> list[str]:
    """2 deployments x 3 trials of a few seconds each (30 requests of 8 tokens at 20 ms each).

    Without the report at the end (`sweep.report=false`) unless asked: these tests check what is
    recorded, and a job's report costs its driver about 4 CPU-s; the resumed sweep and the one
    saved to a `file://` URI write theirs.
    """
    return [
        "+experiment=sim_cluster",
        f"sweep.name={name}",
        "sweep.grid.backend.ttft_ms=[5,6]",
        "sweep.grid.workload.concurrency=[2,3,4]",
        "workload.num_requests=30",
        "workload.output_len=8",
        f"sweep.report={str(report).lower()}",
        *more,
    ]


# Where the fault is not about placement, no helper tasks: fewer workers to start, on 2 cores.
ONE_TASK_EACH = "cluster.share_idle_gpus=false"


def results(cluster, name):
    return cluster.results_home / "llm-sweep-results" / name


def recorded_once(root, trials: int = TRIALS) -> list[dict]:
    """The sweep's rows, after checking each planned trial has exactly one and nothing partial."""
    rows = summaries(root)
    ids = [r[R.TRIAL_ID] for r in rows]
    assert len(ids) == trials and len(set(ids)) == trials, ids
    assert not list(root.rglob("*.tmp-*"))
    return rows


def ended(row) -> float:
    return row[R.STARTED_UNIX_S] + row[R.WALL_S]


def trial_under_way(cluster, root):
    """A worker host running a trial, once at least one trial of the sweep is recorded."""
    return summaries(root) and busy_host(cluster)


def test_raylet_killed_mid_trial(cluster, tmp_path):
    name = "chaos_raylet"
    job = submit(cluster, tmp_path, sweep(name))
    root = results(cluster, name)
    host = wait_until(lambda: trial_under_way(cluster, root), 240, "a trial under way", job)
    os.kill(cluster.raylet(host), signal.SIGKILL)
    assert job.wait(300) == 0, job.text()[-3000:]
    rows = recorded_once(root)
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    assert "retrying" in job.text()  # what the host had not run was run elsewhere
    assert {r["env.node_ip"] for r in rows} == {h.ip for h in cluster.workers}
    assert settle_strays(cluster) == []


def test_host_cut_off_past_the_health_check_is_redone_elsewhere(cluster, tmp_path):
    """The host stops answering (no clean exit): once Ray calls it dead the sweep goes on
    without it; when it comes back, nothing it finished meanwhile is recorded."""
    name = "chaos_cut_long"
    job = submit(cluster, tmp_path, sweep(name))
    root = results(cluster, name)
    host = wait_until(lambda: trial_under_way(cluster, root), 240, "a trial under way", job)
    cluster.cut(host)
    cut_at = time.time()
    try:
        cluster.wait_for_state(host, "DEAD", 10 * HEALTH_CHECK_DEAD_S)
        # The driver redoes the host's trials while the host is still away.
        wait_until(lambda: "retrying" in job.text(), 30, "the lost trials resubmitted", job)
        wait_until(
            lambda: any(r["env.node_ip"] != host.ip and ended(r) > cut_at for r in summaries(root)),
            120,
            "a trial redone elsewhere",
            job,
        )
    finally:
        cluster.heal(host)  # it comes back mid-sweep: its raylet learns it is dead and exits
    assert job.wait(300) == 0, job.text()[-3000:]
    rows = recorded_once(root)
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    assert all(ended(r) < cut_at for r in rows if r["env.node_ip"] == host.ip)
    assert job.text().count("✓ ") == TRIALS  # no trial shown twice either
    assert settle_strays(cluster) == []


def test_host_cut_off_briefly_keeps_its_trials(cluster, tmp_path):
    name = "chaos_cut_short"
    job = submit(cluster, tmp_path, sweep(name))
    root = results(cluster, name)
    host = wait_until(lambda: trial_under_way(cluster, root), 240, "a trial under way", job)
    cluster.cut(host)
    cut_at = time.time()
    time.sleep(HEALTH_CHECK_DEAD_S / 3)
    cluster.heal(host)
    assert job.wait(300) == 0, job.text()[-3000:]
    rows = recorded_once(root)
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    assert host.ip in cluster.alive()  # never declared dead
    assert "retrying" not in job.text()
    # the trial it ran across the cut was kept, not redone
    assert any(r["env.node_ip"] == host.ip and ended(r) > cut_at for r in rows)
    assert settle_strays(cluster) == []


def test_driver_stopped_then_killed_then_resubmitted(cluster, tmp_path):
    name = "chaos_driver"
    root = results(cluster, name)

    def count():
        return len(summaries(root))

    # Stopped, then killed, mid-sweep: twice the trials (two repeats). With one repeat, the
    # trials recorded before `ray job stop` landed once left the second driver two, which both
    # deployments recorded at once, before the kill (`.ci/run`, 2026-11-27 02:50 UTC).
    planned = 2 * TRIALS
    longer_by = ("workload.num_requests=60", "sweep.repeats=2", ONE_TASK_EACH)
    longer = sweep(name, *longer_by)
    first = submit(cluster, tmp_path, longer)
    wait_until(lambda: count() >= 1, 240, "a trial recorded", first)
    first.stop()  # `ray job stop`
    first.wait(120)
    assert "was stopped" in first.text()
    after_stop = count()
    assert settle_strays(cluster) == []

    second = submit(cluster, tmp_path, longer)
    # the driver found first, so that it is killed as soon as a trial is recorded: on a loaded
    # machine, looking for it afterwards gave the sweep time to end
    driver = wait_until(second.driver_pid, 60, "the driver found", second)
    wait_until(lambda: count() > after_stop, 240, "another trial recorded", second)
    os.kill(driver, signal.SIGKILL)
    assert second.wait(120) != 0
    after_kill = count()
    assert after_kill < planned, "the sweep ended before its driver was killed: make it longer"
    assert settle_strays(cluster) == []
    assert f"skipping {after_stop} completed trials" in second.text()

    third = submit(cluster, tmp_path, sweep(name, *longer_by, report=True))
    assert third.wait(300) == 0, third.text()[-3000:]
    assert (root / "report.md").is_file()  # the resumed sweep's report, of every trial
    assert f"skipping {after_kill} completed trials" in third.text()
    assert f"running {planned - after_kill} trials" in third.text()
    rows = recorded_once(root, planned)
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
    assert settle_strays(cluster) == []


PAGE = 4096  # tmpfs allocates whole pages


def record_room(trial_dir) -> int:
    """Bytes a failed record of a trial like this one takes: the summary, every other file empty
    (a page each). A whole trial needs more: its requests and time series are not empty."""
    files = list(trial_dir.iterdir())
    summary = (trial_dir / R.SUMMARY_FILE).stat().st_size
    return -(-summary // PAGE) * PAGE + (len(files) - 1) * PAGE


def between_saves(root) -> bool:
    """No trial of the sweep is part written: every trial folder has its summary (written last)
    and no temporary file is open."""
    trials = list(root.glob("*/*/"))
    done = all((t / R.SUMMARY_FILE).exists() for t in trials)
    return done and not list(root.rglob("*.tmp-*"))


def stopped(pid: int) -> bool:
    """Whether `pid` is stopped (SIGSTOP takes effect after kill returns)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def fill_between_saves(job, root, leave_bytes: int):
    """Fill the file system while the driver is stopped between two trials' saves.

    Filled while a trial was part written, the room left went to the rest of that trial: it
    was saved whole, and the next one found no room for its failed record either. The driver
    is held with SIGSTOP only while the folder is looked at and filled.
    """
    driver = wait_until(job.driver_pid, 60, "the driver found", job)
    try:
        while True:
            os.kill(driver, signal.SIGSTOP)
            try:
                wait_until(lambda: stopped(driver), 10, "the driver stopped")
                if between_saves(root):
                    return fill(SMALL_FS, leave_bytes=leave_bytes)
            finally:
                os.kill(driver, signal.SIGCONT)
            time.sleep(0.05)
    except (ProcessLookupError, FileNotFoundError):
        pytest.fail(f"the driver ended before the file system was filled: {job.text()[-3000:]}")


def test_results_file_system_full(cluster, tmp_path):
    """Results to a `file://` URI (the object-storage code path) on a file system that fills up
    mid-sweep: the trial it could not save is recorded as failed with the reason, nothing
    partial is left under a final name, and the job ends with one clear line."""
    name = "chaos_full"
    folder = SMALL_FS / "results"
    job = submit(cluster, tmp_path, sweep(name, ONE_TASK_EACH, report=True),
                 output_dir=f"file://{folder}")  # fmt: skip
    root = folder / name
    first = wait_until(lambda: list(root.glob(f"*/*/{R.SUMMARY_FILE}")), 240, "a trial saved", job)
    filler = fill_between_saves(job, root, leave_bytes=record_room(first[0].parent) + 2 * PAGE)
    try:
        assert job.wait(300) != 0
        text = job.text().split("Status message:")[0]  # the job's log, before Ray repeats it
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, text[-3000:]
        assert "No space left on device" in errors[0] and str(root) in errors[0]
        assert "Traceback" not in text
        assert not list(root.rglob("*.tmp-*"))
        for trial in root.glob("*/*/"):
            files = {p.name for p in trial.iterdir()}
            status = pq.read_table(trial / R.SUMMARY_FILE).to_pylist()[0]
            if status[R.TRIAL_STATUS] == R.STATUS_OK:
                assert files >= {R.REQUESTS_FILE, R.TIMESERIES_FILE, R.SUMMARY_FILE}
            else:
                assert status[R.ERROR_KIND] == R.ERROR_NOT_SAVED, status
                assert "No space left on device" in status[R.ERROR_MESSAGE]
        failed = [r for r in summaries(root) if r[R.TRIAL_STATUS] != R.STATUS_OK]
        assert len(failed) == 1  # recorded where there was room for it
        assert settle_strays(cluster) == []
    finally:
        filler.unlink()
    # Room again: the same submission saves what was lost, the unsaved trial included.
    again = submit(cluster, tmp_path, sweep(name, ONE_TASK_EACH, report=True),
                   output_dir=f"file://{folder}")  # fmt: skip
    assert again.wait(300) == 0, again.text()[-3000:]
    rows = recorded_once(root)
    assert (root / "report.md").is_file()
    assert {r[R.TRIAL_STATUS] for r in rows} == {R.STATUS_OK}
