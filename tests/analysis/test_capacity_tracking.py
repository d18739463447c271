"""The capacity table logged to W&B (offline), from `test_capacity.py`'s searches."""

from test_capacity import capacity_trials
from wandb_log import read_runs

from analysis.figures.capacity_plots import write_capacity_plots
from analysis.stats import capacity as cap
from analysis.tracking.tracking import Tracker
from sweep.core.config import TrackingConfig


def test_wandb_logs_the_capacity_table(tmp_path, offline):
    trials = capacity_trials()
    plots = write_capacity_plots(trials, cap.capacity_table(trials), tmp_path, "cap")
    with Tracker(TrackingConfig(name="wandb"), "cap", offline) as tracker:
        tracker.sweep_finished(trials, plots)
    (run,) = read_runs(offline / "wandb")
    logged = next(step for step in run.history if "capacity/nrows" in step)
    assert logged["capacity/nrows"] == 4
    assert (run.path / "files" / logged["capacity/path"]).is_file()
    assert sorted(p.name for p in (run.path / "files").rglob("capacity_*.png"))
