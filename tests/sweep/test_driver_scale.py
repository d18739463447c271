"""Driver costs that must not grow with the trials recorded: pending, progress, log, resume."""

import io
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from sweep.core import records as R
from sweep.core.results import ResultStore, TrialFiles
from sweep.driver.driver import Driver, _Task
from sweep.driver.progress import EVERY_TRIAL_UP_TO, FAILURES_LISTED, SweepProgress
from sweep.spec import Deployment
from sweep.worker.trial import LOG_EVERY_S, _LogShipping

REF = Path(__file__).resolve().parents[1] / "analysis" / "data" / "ref_sweep"


def test_pending_starts_after_the_recorded_trials_and_still_skips_any_recorded():
    trials = tuple(SimpleNamespace(trial_id=f"t{i}") for i in range(1000))
    task = _Task(Deployment("d", "sim", None, trials), None, 0, 0.0)
    driver = Driver(store=None, environment={}, cluster=None, progress=None)
    driver.recorded = {f"t{i}" for i in range(600)} | {"t700"}  # one out of order
    pending = driver.pending(task)
    assert [t.trial_id for t in pending[:2]] == ["t600", "t601"]
    assert "t700" not in {t.trial_id for t in pending} and len(pending) == 399
    assert task.recorded_upto == 600  # the next look starts here, not at the first trial
    assert driver._first_pending(task).trial_id == "t600"
    driver.recorded |= {f"t{i}" for i in range(1000)}
    assert driver.pending(task) == () and driver._first_pending(task) is None


def summary(status: str, i: int) -> pa.Table:
    return pa.Table.from_pylist([{
        R.TRIAL_STATUS: status, R.LABEL: f"trial-{i}", R.OUTPUT_THROUGHPUT: 1.0,
        R.COMPLETED_REQUESTS: 8, R.ERROR_KIND: None if status == R.STATUS_OK else "boom",
        R.ERROR_MESSAGE: None if status == R.STATUS_OK else "it broke",
    }])  # fmt: skip


def printed_lines(total: int, failed_every: int = 0) -> list[str]:
    out = io.StringIO()
    progress = SweepProgress(total, 1, Console(file=out, force_terminal=False, width=200))
    for i in range(total):
        status = R.STATUS_FAILED if failed_every and i % failed_every == 0 else R.STATUS_OK
        files = SimpleNamespace(summary=summary(status, i))
        progress.trial_finished(files)
    return out.getvalue().splitlines()


def test_a_small_sweep_prints_every_trial_a_large_one_every_hundredth():
    assert len(printed_lines(EVERY_TRIAL_UP_TO)) == EVERY_TRIAL_UP_TO
    lines = printed_lines(10_000)
    assert len(lines) == 100
    assert lines[-1].endswith("[10000/10000, 0:00 left]")


def test_a_large_sweep_lists_its_first_failures_then_counts_them():
    lines = printed_lines(2_000, failed_every=10)  # 200 failures
    failures = [line for line in lines if line.startswith("✗")]
    assert len(failures) == FAILURES_LISTED
    assert sum("further failures are counted, not listed" in line for line in lines) == 1


def shipped(specs, statuses, times, monkeypatch, ran=None):
    """Which trials a task ran (`ran`, default all `specs`) carry the log; and if it is behind."""
    shipping = _LogShipping(SimpleNamespace(trials=specs))
    carried = []
    for spec, status, now in zip(ran or specs, statuses, times, strict=True):
        monkeypatch.setattr("sweep.worker.trial.time.monotonic", lambda now=now: now)
        carried.append(shipping.due(spec, SimpleNamespace(summary=summary(status, 0))))
    return carried, shipping.behind


def test_the_backend_log_goes_with_the_first_a_failed_the_last_and_once_a_minute(monkeypatch):
    specs = [SimpleNamespace(trial_id=f"t{i}") for i in range(6)]
    ok, bad = R.STATUS_OK, R.STATUS_FAILED
    times = [0.0, 1.0, 2.0, 3.0, 3.0 + LOG_EVERY_S, 3.5 + LOG_EVERY_S]
    carried, behind = shipped(specs, [ok, ok, bad, ok, ok, ok], times, monkeypatch)
    assert carried == [True, False, True, False, True, True]  # the last trial carries it
    assert not behind
    carried, behind = shipped(specs, [ok] * 6, [float(i) for i in range(6)], monkeypatch)
    assert carried == [True, False, False, False, False, True]
    # a helper ran the deployment's last trial: this task's log is sent after its own last
    carried, behind = shipped(specs, [ok] * 3, [0.0, 1.0, 2.0], monkeypatch, ran=specs[:3])
    assert carried == [True, False, False] and behind


def test_resume_reads_every_status_of_a_deployment_at_once(tmp_path):
    store = ResultStore(str(tmp_path), "resume")
    written = {}
    for path in sorted(REF.glob(f"*/*/{R.SUMMARY_FILE}")):
        table = pq.read_table(path)
        deployment, trial = path.parent.parent.name, path.parent.name
        if table.column(R.TRIAL_STATUS)[0].as_py() == R.STATUS_FAILED:
            kept = table.set_column(table.schema.get_field_index(R.ERROR_KIND), R.ERROR_KIND,
                                    pa.array([R.ERROR_NOT_SAVED]))  # fmt: skip
            store.write_trial(files(trial, deployment, kept))
            written[(deployment, trial)] = None  # its files were not kept: not run
            continue
        store.write_trial(files(trial, deployment, table))
        written[(deployment, trial)] = table.column(R.TRIAL_STATUS)[0].as_py()
    for (deployment, trial), status in written.items():
        assert store.trial_status(deployment, trial) == status
        assert store.trial_statuses(deployment).get(trial) == status
    assert store.trial_statuses("no-such-deployment") == {}


def files(trial: str, deployment: str, summary_table: pa.Table) -> TrialFiles:
    return TrialFiles(trial, deployment, summary_table, R.REQUESTS_SCHEMA.empty_table(),
                      R.TIMESERIES_SCHEMA.empty_table(), "")  # fmt: skip
