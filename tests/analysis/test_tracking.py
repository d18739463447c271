"""W&B tracking with the real wandb library in offline mode, read back from its run logs."""

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
from tracked_sweep import NAME, tracked_sweep
from wandb_log import read_runs

from analysis.read.columns import load_values
from analysis.read.load import load_requests, load_summary, load_timeseries
from analysis.report.report import write_report
from analysis.tracking.tracking import Tracker, upload_results
from analysis.tracking.wandb_cells import LOAD, history_steps, plain, trial_metrics
from analysis.tracking.wandb_settings import has_credentials, resolve_mode
from sweep.core import records as rec
from sweep.core.config import TrackingConfig
from tests.helpers import own_processes

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
SECRET = "sekret-value-123"
WANDB = TrackingConfig(name="wandb")


def wandb_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "wandb" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_upload_writes_one_offline_run_per_trial_and_one_for_the_sweep(offline, capsys):
    results = offline / "ref_sweep"
    shutil.copytree(REF, results)
    report = write_report(results)
    plots = list(report.plots)

    tracker = upload_results(results, plots, findings=report.findings)

    assert tracker.mode == "offline" and tracker.runs_logged == 5
    runs = {run.name: run for run in read_runs(results / "wandb")}
    assert set(runs) == {"hf bs=1", "hf bs=2", "vllm_server c=1", "vllm_server c=2", "ref_sweep"}
    assert {run.group for run in runs.values()} == {"ref_sweep"}
    assert runs["hf bs=1"].job_type == "hf" and runs["ref_sweep"].job_type == "sweep"

    hf = runs["hf bs=1"]
    summary = load_summary(REF).set_index(rec.LABEL).loc["hf bs=1"]
    assert hf.config[rec.BACKEND_NAME] == "hf" and hf.config[rec.WORKLOAD_BATCH_SIZE] == 1
    assert hf.config[rec.TRIAL_ID] == summary[rec.TRIAL_ID]
    assert rec.OUTPUT_THROUGHPUT not in hf.config  # metrics are summary, not config
    assert hf.summary[rec.OUTPUT_THROUGHPUT] == pytest.approx(8.0)
    assert hf.summary[rec.latency_column("ttft", "median")] == pytest.approx(200.0)
    rss = [step["process/rss_mb"] for step in hf.history if "process/rss_mb" in step]
    assert rss == [1500.0, 1600.0, 1650.0]
    assert [step["t_s"] for step in hf.history if "t_s" in step] == [0.0, 1.0, 2.0]
    table = next(step for step in hf.history if "requests/nrows" in step)
    assert table["requests/nrows"] == 4
    assert (hf.path / "files" / table["requests/path"]).is_file()

    failed = runs["vllm_server c=2"]
    assert failed.summary[rec.TRIAL_STATUS] == rec.STATUS_FAILED
    assert failed.summary[rec.ERROR_KIND] == rec.ERROR_OUT_OF_MEMORY

    sweep = runs["ref_sweep"]
    assert next(s for s in sweep.history if "summary/nrows" in s)["summary/nrows"] == 4
    findings = next(s for s in sweep.history if "findings/nrows" in s)
    assert findings["findings/nrows"] == len(report.findings) > 1
    logged = json.loads((sweep.path / "files" / findings["findings/path"]).read_text())
    assert [row[0] for row in logged["data"]] == list(report.findings)
    images = sorted(p.name for p in (sweep.path / "files").rglob("*.png"))
    assert len(images) == len(plots) and any(name.startswith("pareto") for name in images)

    assert f"wandb sync {results / 'wandb'}/offline-run-*" in capsys.readouterr().out
    assert not wandb_children(), "the wandb service must be stopped after the upload"


def test_no_secret_reaches_any_wandb_file(offline, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    row = load_summary(REF).set_index(rec.LABEL).loc["vllm_server c=1"].to_dict()
    row[rec.LABEL] = "leaky"
    row["backend.api_base"] = f"https://example.invalid/v1?token={SECRET}"
    row["backend.api_key"] = "x" * 8  # secret-named key: redacted whatever its value
    row[rec.ERROR_MESSAGE] = f"401 for token {SECRET}"
    requests = load_requests(REF)
    requests = requests[requests[rec.TRIAL_ID] == row.get(rec.TRIAL_ID, "")].copy()
    requests[rec.ERROR] = f"header Authorization: Bearer {SECRET}"
    timeseries = load_timeseries(REF)

    with Tracker(WANDB, "leak_check", offline) as tracker:
        tracker.trial_finished(row, requests, timeseries)
        tracker.sweep_finished(pd.DataFrame([row]), [])
    assert tracker.runs_logged == 2

    files = [p for p in (offline / "wandb").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked
    (run,) = [r for r in read_runs(offline / "wandb") if r.name == "leaky"]
    assert run.config["backend.api_base"] == "https://example.invalid/v1?token=***"
    assert run.config["backend.api_key"] == "***"


def test_the_servers_view_and_draft_acceptance_reach_the_run_summary(offline):
    row = load_summary(REF).set_index(rec.LABEL).loc["vllm_server c=1"].to_dict()
    row[rec.LABEL] = "drafted"
    row[rec.SPEC_ACCEPTANCE_PERCENT] = 62.5
    row[rec.SERVER_SPEC_DRAFT_TOKENS] = 4000
    row[rec.latency_column(rec.SERVER_TTFT, "mean")] = 24.0
    row[rec.SERVER_PREFIX_CACHE_HIT_PERCENT] = None  # not exported: left out, not logged as 0
    empty = load_requests(REF).iloc[:0]
    with Tracker(WANDB, "spec", offline) as tracker:
        tracker.trial_finished(row, empty, load_timeseries(REF).iloc[:0])
    (run,) = read_runs(offline / "wandb")
    assert run.summary[rec.SPEC_ACCEPTANCE_PERCENT] == pytest.approx(62.5)
    assert run.summary[rec.SERVER_SPEC_DRAFT_TOKENS] == 4000
    assert run.summary[rec.latency_column(rec.SERVER_TTFT, "mean")] == pytest.approx(24.0)
    assert rec.SERVER_PREFIX_CACHE_HIT_PERCENT not in run.summary
    assert rec.SPEC_ACCEPTANCE_PERCENT not in run.config  # a metric, not a config value


def test_a_wandb_failure_is_one_warning_and_turns_tracking_off(offline, monkeypatch, caplog):
    calls = []

    class Down:
        Settings = dict

        @staticmethod
        def init(**kwargs):
            calls.append(kwargs)
            raise ConnectionError("api.wandb.ai unreachable\nretrying forever")

    tracker = Tracker(WANDB, "outage", offline)
    monkeypatch.setattr(tracker, "_import", lambda: Down)
    row = load_summary(REF).iloc[0].to_dict()
    empty = pd.DataFrame()
    with caplog.at_level(logging.WARNING, logger="analysis.tracking.tracking"):
        tracker.trial_finished(row, empty, empty)
        tracker.trial_finished(row, empty, empty)
        tracker.sweep_finished(load_summary(REF), [])
        tracker.close()
    assert len(calls) == 1 and not tracker.enabled
    (warning,) = caplog.records
    assert "api.wandb.ai unreachable" in warning.getMessage()
    assert "retrying forever" not in warning.getMessage()


def test_tracking_none_does_nothing(tmp_path):
    with Tracker(TrackingConfig(), "quiet", tmp_path) as tracker:
        tracker.trial_finished(load_summary(REF).iloc[0].to_dict(), pd.DataFrame(), pd.DataFrame())
        tracker.sweep_finished(load_summary(REF), [])
    assert not tracker.enabled and tracker.runs_logged == 0
    assert not (tmp_path / "wandb").exists()


def test_mode_follows_the_credentials(offline, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert not has_credentials() and resolve_mode(None) == "offline"
    assert resolve_mode("disabled") == "disabled"
    (offline / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert has_credentials() and resolve_mode(None) == "online"
    (offline / "netrc").write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode(None) == "online"


def test_history_has_one_step_per_sample_time():
    series = load_timeseries(REF)
    steps = history_steps(series[series[rec.TRIAL_ID] == "20e5f44e7c56"])
    assert [s["t_s"] for s in steps] == [0.0, 1.0, 2.0]
    assert steps[1] == {
        "t_s": 1.0,
        "process/rss_mb": 950.0,
        "server/kv_cache_usage_percent": 12.0,
        "server/running_requests": 1.0,
    }
    assert history_steps(series.iloc[:0]) == []


def test_the_sweep_hook_hands_each_trial_to_progress_and_tracker(offline):
    from sweep.__main__ import TrackedProgress
    from sweep.core.results import TrialFiles

    class Progress:
        def __init__(self):
            self.trials, self.deployments = [], 0

        def trial_finished(self, files):
            self.trials.append(files.trial_id)

        def deployment_finished(self):
            self.deployments += 1

    trial = next(REF.glob("*/20e5f44e7c56"))
    tables = [
        pq.read_table(trial / name)
        for name in (rec.SUMMARY_FILE, rec.REQUESTS_FILE, rec.TIMESERIES_FILE)
    ]
    files = TrialFiles(trial.name, trial.parent.name, *tables, trial_yaml="")
    progress = Progress()
    with Tracker(WANDB, "hooked", offline) as tracker:
        tracked = TrackedProgress(progress, tracker)
        tracked.trial_finished(files)
        tracked.deployment_finished()
    assert progress.trials == ["20e5f44e7c56"] and progress.deployments == 1
    (run,) = read_runs(offline / "wandb")
    assert run.name == "vllm_server c=1" and run.job_type == "vllm_server"
    assert any("server/kv_cache_usage_percent" in step for step in run.history)


@pytest.mark.slow
def test_sweep_logs_each_trial_as_it_finishes(offline, ray_cluster):
    before = {p.pid for p in own_processes("wandb-core")}
    result = tracked_sweep(
        offline,
        ray_cluster,
        "sweep.grid.backend.ttft_ms=[5,6]",
        "sweep.grid.workload.concurrency=[2]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = offline / "results" / NAME
    names = sorted(run.name for run in read_runs(root / "wandb"))
    assert names == ["sim-5-c2", "sim-6-c2", NAME]
    assert f"wandb sync {root / 'wandb'}" in result.stdout
    assert "wandb:" not in result.stderr.lower()  # quiet: no wandb banner in the progress
    assert (root / "report.html").is_file()
    after = {p.pid for p in own_processes("wandb-core")}
    assert not after - before, "a wandb service outlived the sweep"


def test_the_quality_table_and_its_front_are_logged(offline):
    """The front on (USD per 1M tokens, KL): its points table and a W&B scatter of them."""
    quality = pd.DataFrame(
        {
            "configuration": ["hf", "q8", "q4"],
            rec.DEPLOYMENT_ID: ["a", "b", "c"],
            "status": [rec.QUALITY_SCORED] * 3,
            rec.OUTPUT_THROUGHPUT: [10.0, 20.0, 30.0],
            rec.COST_PER_1M_OUTPUT: [3.0, 1.5, 1.0],
            "kl_topk": [0.0, 3e-7, 4e-5],
            "kl_topk_low": [0.0, 2e-7, 3e-5],
            "kl_topk_high": [0.0, 4e-7, 5e-5],
            "baseline": ["hf"] * 3,
        }
    )
    with Tracker(WANDB, "quality", offline) as tracker:
        tracker.sweep_finished(load_summary(REF), [], quality=quality)
    (run,) = read_runs(offline / "wandb")
    (logged,) = [step for step in run.history if "quality_front_points/nrows" in step]
    assert logged["quality/nrows"] == 3 and logged["quality_front_points/nrows"] == 3
    points = json.loads((run.path / "files" / logged["quality_front_points/path"]).read_text())
    on_front = points["columns"].index("on_quality_front")
    assert [r[on_front] for r in points["data"]] == [True, True, True]  # cheaper = more drift
    assert "quality_front_table" in json.dumps(logged)  # the scatter's own table


def test_a_trials_logged_load_is_the_reports_for_each_row():
    """`trial_metrics` reads a row's load from its few load columns: the same value the report
    computes over the whole summary, for batch sizes (hf) and concurrencies (vllm_server)."""
    summary = load_summary(REF)
    expected = load_values(summary)
    assert set(expected) >= {1.0, 2.0}
    for index, row in summary.iterrows():
        metrics = trial_metrics({k: plain(v) for k, v in row.items()})
        assert metrics[LOAD] == expected[index], row[rec.LABEL]
