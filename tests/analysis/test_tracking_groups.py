"""W&B at scale: a run per deployment past the threshold, and the saved workspace's panels.

The 2,000-trial results folder is written through the real result writer (`ResultStore`) from one
trial of the reference sweep, re-identified per trial; the runs are read back from wandb's offline
run logs (`wandb_log`), and the workspace is W&B's own object (`wandb_workspaces`).
"""

import json
import logging
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import wandb_workspaces.reports.v2 as wr
from tracked_sweep import NAME, tracked_sweep
from wandb_log import read_runs

from analysis.read.load import load_summary
from analysis.tracking.tracking import Tracker, upload_results
from analysis.tracking.tracking_groups import PER_DEPLOYMENT, PER_TRIAL, TRIALS_TABLE, run_layout
from analysis.tracking.wandb_workspace import (
    SPEC_FILE,
    build_workspace,
    grid_axes,
    read_spec,
    workspace_spec,
    write_spec,
)
from sweep.core import records as rec
from sweep.core.config import TrackingConfig
from sweep.core.errors import ConfigError, SweepError
from sweep.core.results import ResultStore, TrialFiles
from sweep.plan.plan import build_plan

REF = Path(__file__).resolve().parent / "data" / "ref_sweep"
TEMPLATE = "20e5f44e7c56"  # vllm_server c=1 of the reference sweep: a completed trial
DEPLOYMENTS, PER_DEPLOYMENT_TRIALS = 4, 500
BIG = "big_sweep"


def write_big_sweep(root: Path) -> Path:
    """2,000 completed trials (4 deployments x 10 loads x 50 repeats), one template's tables."""
    trial = next(REF.glob(f"*/{TEMPLATE}"))
    summary, requests, timeseries = (
        pq.read_table(trial / name)
        for name in (rec.SUMMARY_FILE, rec.REQUESTS_FILE, rec.TIMESERIES_FILE)
    )
    row = summary.to_pylist()[0]
    store = ResultStore(str(root), BIG)
    for d in range(DEPLOYMENTS):
        for i in range(PER_DEPLOYMENT_TRIALS):
            trial_id, concurrency = f"d{d}t{i:04d}", 1 + i % 10
            values = {
                rec.TRIAL_ID: trial_id,
                rec.DEPLOYMENT_ID: f"dep{d}",
                rec.SWEEP_NAME: BIG,
                rec.LABEL: f"vllm_server s={8 * (d + 1)} c={concurrency} r={i // 10}",
                rec.REPEAT: i // 10,
                "backend.max_num_seqs": 8 * (d + 1),
                rec.WORKLOAD_CONCURRENCY: concurrency,
                rec.OUTPUT_THROUGHPUT: 10.0 * concurrency * (d + 1) + i % 7,
            }
            one = pa.Table.from_pylist([{**row, **values}], schema=summary.schema)
            ids = pa.array([trial_id] * len(requests))
            store.write_trial(
                TrialFiles(
                    trial_id,
                    f"dep{d}",
                    one,
                    requests.set_column(
                        requests.schema.get_field_index(rec.TRIAL_ID), rec.TRIAL_ID, ids
                    ),
                    timeseries.slice(0, 0),
                    trial_yaml="",
                )
            )
    return Path(store.root)


def pareto_png(folder: Path) -> Path:
    """A small image standing for the report's Pareto plot (logged as `plots/pareto`)."""
    figure = plt.figure(figsize=(1, 1))
    path = folder / "pareto.png"
    figure.savefig(path)
    plt.close(figure)
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The 2,000-trial folder uploaded offline: (folder, tracker, runs by name)."""
    tmp = tmp_path_factory.mktemp("wandb_big")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.delenv("WANDB_BASE_URL", raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        (tmp / "netrc").write_text("")
        mp.setenv("NETRC", str(tmp / "netrc"))
        for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            (tmp / var.lower()).mkdir()
            mp.setenv(var, str(tmp / var.lower()))
        folder = write_big_sweep(tmp / "results")
        tracker = upload_results(folder, [pareto_png(tmp)])
    return folder, tracker, {run.name: run for run in read_runs(folder / "wandb")}


def logged_keys(runs) -> dict[str, set[str]]:
    """What the runs logged, by where: history, summary and config keys (nested keys joined)."""
    keys: dict[str, set[str]] = {"history": set(), "summary": set(), "config": set()}
    for run in runs:
        keys["history"].update(k for step in run.history for k in step)
        keys["summary"].update(_flat(run.summary))
        keys["config"].update(run.config)
    return keys


def _flat(summary: dict) -> set[str]:
    keys = set(summary)
    keys.update(f"{key}/{sub}" for key, v in summary.items() if isinstance(v, dict) for sub in v)
    return keys


def panel_metrics(workspace) -> list[tuple[str, str, str]]:
    """(panel type, source, key) of each metric of each panel of a `wandb_workspaces` Workspace."""

    def source(metric, plain: str) -> tuple[str, str]:
        if isinstance(metric, wr.Config):
            return "config", metric.name
        if isinstance(metric, wr.SummaryMetric):
            return "summary", metric.name
        return plain, metric

    found = []
    for panel in (p for section in workspace.sections for p in section.panels):
        kind = type(panel).__name__
        if isinstance(panel, wr.LinePlot):
            found += [(kind, *source(m, "history")) for m in (panel.x, *panel.y)]
        elif isinstance(panel, wr.ScatterPlot):
            found += [(kind, *source(m, "summary")) for m in (panel.x, panel.y)]
        elif isinstance(panel, wr.ParallelCoordinatesPlot):
            found += [(kind, *source(c.metric, "summary")) for c in panel.columns]
        elif isinstance(panel, wr.WeavePanelSummaryTable):
            found.append((kind, "table", panel.table_name))
        elif isinstance(panel, wr.MediaBrowser):
            found += [(kind, "media", key) for key in panel.media_keys]
        else:
            raise AssertionError(f"unexpected panel {kind}")
    return found


def unlogged(workspace, runs) -> list[tuple[str, str, str]]:
    """Panel metrics that no run logged (a table or image is logged under `<key>/_type`)."""
    keys = logged_keys(runs)
    missing = []
    for kind, where, key in panel_metrics(workspace):
        if where in ("table", "media"):
            ok = f"{key}/_type" in keys["history"] | keys["summary"]
        else:
            ok = key in keys[where]
        if not ok:
            missing.append((kind, where, key))
    return missing


def test_auto_is_per_trial_up_to_the_threshold_and_per_deployment_above():
    auto = TrackingConfig(name="wandb", group_above=200)
    assert run_layout(auto, 0) == run_layout(auto, 200) == PER_TRIAL
    assert run_layout(auto, 201) == run_layout(auto, 12_000) == PER_DEPLOYMENT
    assert run_layout(TrackingConfig(runs="per_trial"), 12_000) == PER_TRIAL
    assert run_layout(TrackingConfig(runs="per_deployment"), 1) == PER_DEPLOYMENT
    assert run_layout(TrackingConfig(), 201) == PER_DEPLOYMENT  # the default threshold is 200


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tracking.runs=grouped", "tracking.runs='grouped' is not valid; choose one of: auto, "
         "per_trial, per_deployment"),
        ("tracking.group_above=0", "tracking.group_above must be > 0, got 0"),
        ("tracking.group_abve=3", "unknown config key 'tracking.group_abve'"),
    ],
)  # fmt: skip
def test_a_bad_tracking_value_is_a_one_line_error(override, message):
    with pytest.raises(ConfigError) as raised:
        build_plan(["+experiment=quickstart", "tracking=wandb", override])
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.slow
def test_2000_trials_log_a_run_per_deployment_with_trials_as_rows_and_steps(big):
    folder, tracker, runs = big
    assert tracker.layout == PER_DEPLOYMENT and tracker.mode == "offline"
    assert tracker.runs_logged == len(runs) == DEPLOYMENTS + 1  # and the sweep's run
    deployments = [run for run in runs.values() if run.job_type == "vllm_server"]
    assert sorted(run.config[rec.DEPLOYMENT_ID] for run in deployments) == [
        "dep0",
        "dep1",
        "dep2",
        "dep3",
    ]
    assert {run.group for run in runs.values()} == {BIG}
    for run in deployments:
        d = int(run.config[rec.DEPLOYMENT_ID][-1])
        assert run.config["backend.max_num_seqs"] == 8 * (d + 1)
        assert rec.WORKLOAD_CONCURRENCY not in run.config and rec.TRIAL_ID not in run.config
        steps = [step for step in run.history if rec.OUTPUT_THROUGHPUT in step]
        assert len(steps) == len(run.history) == PER_DEPLOYMENT_TRIALS  # one step per trial
        assert [s["load"] for s in steps[:12]] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2]
        assert steps[3][rec.OUTPUT_THROUGHPUT] == pytest.approx(40.0 * (d + 1) + 3)
        table = run.summary[TRIALS_TABLE]
        assert table["nrows"] == PER_DEPLOYMENT_TRIALS
        rows = json.loads((run.path / "files" / table["path"]).read_text())
        ids = [r[rows["columns"].index(rec.TRIAL_ID)] for r in rows["data"]]
        assert len(set(ids)) == PER_DEPLOYMENT_TRIALS and all(i.startswith(f"d{d}t") for i in ids)
        # the run's summary is its best trial: the highest throughput, at the highest load
        assert run.summary[rec.OUTPUT_THROUGHPUT] == pytest.approx(100.0 * (d + 1) + 6)
        assert run.summary["load"] == 10
    sweep = runs[BIG]
    assert next(s for s in sweep.history if "summary/nrows" in s)["summary/nrows"] == 2000
    assert (folder / SPEC_FILE).is_file() and tracker.workspace_file == folder / SPEC_FILE


@pytest.mark.slow
def test_the_grouped_workspace_draws_only_what_the_runs_log(big):
    folder, _, runs = big
    workspace = build_workspace(read_spec(folder / SPEC_FILE), "offline-entity", "llm-sweep")
    found = panel_metrics(workspace)
    kinds = {kind for kind, _, _ in found}
    assert {
        "LinePlot",
        "ParallelCoordinatesPlot",
        "WeavePanelSummaryTable",
        "MediaBrowser",
    } <= kinds
    lines = [(w, k) for kind, w, k in found if kind == "LinePlot"]
    assert ("history", "load") in lines and ("history", rec.OUTPUT_THROUGHPUT) in lines
    assert ("history", rec.latency_column("ttft", "p99")) in lines
    grid = [(w, k) for kind, w, k in found if kind == "ParallelCoordinatesPlot"]
    assert ("config", "backend.max_num_seqs") in grid  # the axis that varies across deployments
    assert unlogged(workspace, runs.values()) == []
    assert BIG in workspace.runset_settings.filters  # the sweep's runs only


def test_the_per_trial_workspace_draws_only_what_the_runs_log(offline):
    results = offline / "ref_sweep"
    shutil.copytree(REF, results)
    capacity = pd.DataFrame({"configuration": ["hf"], "capacity_req_s": [2.0]})
    tracker = upload_results(results, [pareto_png(offline)], capacity=capacity)
    assert tracker.layout == PER_TRIAL
    runs = read_runs(results / "wandb")
    workspace = build_workspace(read_spec(results / SPEC_FILE), "offline-entity", "llm-sweep")
    found = panel_metrics(workspace)
    assert ("ScatterPlot", "summary", rec.OUTPUT_THROUGHPUT) in found
    assert ("WeavePanelSummaryTable", "table", "capacity") in found
    grid = {k for kind, _, k in found if kind == "ParallelCoordinatesPlot"}
    assert {rec.BACKEND_NAME, rec.WORKLOAD_BATCH_SIZE, "load"} <= grid
    assert unlogged(workspace, runs) == []
    assert workspace.name == "ref_sweep: configurations compared"


@pytest.mark.slow
def test_a_sweep_logs_each_trial_as_a_step_of_its_deployments_run(offline, ray_cluster):
    result = tracked_sweep(
        offline,
        ray_cluster,
        "tracking.runs=per_deployment",
        "sweep.grid.backend.ttft_ms=[5]",
        "sweep.grid.workload.concurrency=[1,2]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = offline / "results" / NAME
    logged = read_runs(root / "wandb")
    assert sorted(run.job_type for run in logged) == ["sim", "sweep"]  # one deployment, one sweep
    runs = {run.job_type: run for run in logged}
    deployment = runs["sim"]
    assert sorted(step["load"] for step in deployment.history) == [1, 2]
    assert all(step[rec.OUTPUT_THROUGHPUT] > 0 for step in deployment.history)
    assert deployment.summary[TRIALS_TABLE]["nrows"] == 2
    assert "W&B: 2 runs saved offline" in result.stdout
    spec = read_spec(root / SPEC_FILE)
    assert any(p.kind == "line" for s in spec.sections for p in s.panels)
    # the sweep's run logs the deployment's start-up, one row, and the workspace shows it
    assert runs["sweep"].summary["startup/nrows"] == 1
    assert "Server start-up" in [s.name for s in spec.sections]


def test_a_wandb_failure_in_grouped_mode_is_one_warning_and_turns_tracking_off(
    offline, monkeypatch, caplog
):
    calls = []

    class Down:
        Settings = dict

        @staticmethod
        def init(**kwargs):
            calls.append(kwargs)
            raise ConnectionError("api.wandb.ai unreachable\nretrying forever")

    config = TrackingConfig(name="wandb", runs="per_deployment")
    tracker = Tracker(config, "outage", offline)
    monkeypatch.setattr(tracker, "_import", lambda: Down)
    summary = load_summary(REF)
    with caplog.at_level(logging.WARNING, logger="analysis.tracking.tracking"):
        for row in summary.to_dict("records"):
            tracker.trial_finished(row, pd.DataFrame(), pd.DataFrame())
        tracker.sweep_finished(summary, [])
        tracker.close()
    assert len(calls) == 1 and not tracker.enabled and tracker.runs_logged == 0
    (warning,) = caplog.records
    assert "api.wandb.ai unreachable" in warning.getMessage()
    assert not (offline / SPEC_FILE).exists()


def test_the_workspace_file_reads_back_and_refuses_unknown_keys(tmp_path):
    spec = workspace_spec(load_summary(REF), "ref_sweep", PER_DEPLOYMENT, {"pareto_front"})
    path = write_spec(spec, tmp_path)
    assert read_spec(path) == spec
    data = json.loads(path.read_text())
    data["sections"][0]["panels"][0]["colour"] = "red"
    path.write_text(json.dumps(data))
    with pytest.raises(SweepError, match="not a W&B workspace definition") as raised:
        read_spec(path)
    assert "\n" not in str(raised.value)


def test_the_grid_is_the_config_that_varies_across_runs_never_the_environment():
    summary = load_summary(REF)
    summary.loc[0, "env.git_sha"] = "another"  # the same grid run from two commits
    assert grid_axes(summary, grouped=False) == [
        rec.BACKEND_NAME,
        rec.WORKLOAD_BATCH_SIZE,
        rec.WORKLOAD_CONCURRENCY,
    ]
    assert grid_axes(summary, grouped=True) == [rec.BACKEND_NAME]  # a run is a deployment
