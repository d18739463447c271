"""The Tuning section from a tune.parquet written by the tuner's own table (no sweep run).

Twelve configurations of two arguments whose objective is a known function (best at x=8, y=a);
two pruned, one failed, one a duplicate. The report must name the best with its interval, list
the runner-up whose interval reaches it and not the one below it, judge x as more important
than y, count the hours, and draw the best so far.
"""

import json
from pathlib import Path

import pytest

from analysis.figures.tuning_plot import write_tuning_plot
from analysis.report.tuning import tuning_findings, tuning_sections
from analysis.stats.tuning import load_tuning
from sweep.core.results import ResultStore
from sweep.core.tune_config import parse_space
from sweep.tune.outcome import COMPLETE, FAILED, PRUNED, Outcome
from sweep.tune.space import distributions
from sweep.tune.table import DUPLICATE, TuneTable

SPACE = {"backend.x": {"low": 1, "high": 64, "int": True, "log": True},
         "backend.y": {"choices": ["a", "b"]}}  # fmt: skip
SPECS = parse_space(SPACE)


def truth(x, y):
    return 100.0 - 5.0 * abs(x - 8) - (2.0 if y == "b" else 0.0)


@pytest.fixture
def folder(tmp_path):
    store = ResultStore(str(tmp_path), "tuned")
    table = TuneTable(store, "capacity", "maximize")
    points = [(2, "a"), (8, "b"), (30, "a"), (8, "a"), (16, "b"), (4, "a"), (9, "a"), (60, "b"),
              (1, "b"), (12, "a"), (7, "b")]  # fmt: skip
    for number, (x, y) in enumerate(points):
        value = truth(x, y)
        params = {"backend.x": x, "backend.y": y}
        if number in (7, 8):  # proven below the best: pruned at its first probe
            outcome = Outcome(PRUNED, None, 0.0, None, 97.0, 1, 3.0, 1.0, "pruned")
        elif number == 10:
            outcome = Outcome(FAILED, None, reason="backend failed to start")
        else:
            outcome = Outcome(COMPLETE, value, value, value, value * 1.03, 6, 20.0, 1.0)
        ids = {"seed_id": f"s{number}", "deployment_id": f"d{number}", "label": f"c{number}"}
        table.add(number, params, distributions(SPECS, params), outcome, ids)
    repeated = {"backend.x": 8, "backend.y": "a"}
    table.add(11, repeated, distributions(SPECS, repeated),
              Outcome(DUPLICATE, 100.0), {"duplicate_of": 3})  # fmt: skip
    return tmp_path / "tuned"


def test_the_best_its_interval_and_the_runner_up_within_it(folder):
    tuning = load_tuning(folder)
    assert tuning.best is not None and int(tuning.best["number"]) == 3
    assert json.loads(tuning.best["params"]) == {"backend.x": 8, "backend.y": "a"}
    # 8/b: 98, up to 100.94 (reaches 100); 9/a: 95, up to 97.85 (does not)
    assert list(tuning.runners_up["number"]) == [1]
    (finding,) = tuning_findings(tuning)
    assert "the best of 11 configurations is x=8, y=a, with capacity 100" in finding
    assert "interval 100 to 103" in finding and "1 other within its interval" in finding


def test_the_hours_spent_and_saved(folder):
    tuning = load_tuning(folder)
    assert tuning.deployment_hours == pytest.approx((8 * 20.0 + 2 * 3.0) / 3600)
    # each pruned one: 6 probes on average less its 1, at (3 - 1) s a probe
    assert tuning.saved_hours == pytest.approx(2 * 5 * 2.0 / 3600)
    best = tuning.progress["best_so_far"].dropna()
    assert best.is_monotonic_increasing and best.iloc[-1] == 100.0
    assert tuning.progress["deployment_hours"].is_monotonic_increasing


def test_each_argument_gets_an_importance_and_x_matters_most(folder):
    tuning = load_tuning(folder)
    weights = {i.param: i.importance for i in tuning.importances}
    assert set(weights) == {"backend.x", "backend.y"}
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["backend.x"] > weights["backend.y"]


def test_the_section_names_the_best_lists_importances_and_draws(folder):
    tuning = load_tuning(folder)
    plot = write_tuning_plot(tuning, folder, "tuned")
    (section,) = tuning_sections(tuning, plot)
    assert section.title == "Tuning"
    assert any(i.startswith("Importance of backend.x: ") for i in section.items)
    assert any(i.startswith("Within noise of the best: x=8, y=b") for i in section.items)
    assert list(section.table["State"]).count("pruned") == 2
    assert plot.is_file() and plot.stat().st_size > 10_000


def test_a_folder_without_tuning_has_no_section(tmp_path):
    assert load_tuning(tmp_path) is None
    assert tuning_sections(None, None) == [] and tuning_findings(None) == ()


def test_the_study_reaches_wandb_tables_a_line_and_the_run_summary(folder, offline):
    from wandb_log import read_runs

    from analysis.read.load import load_summary
    from analysis.tracking.tracking import Tracker
    from sweep.core.config import TrackingConfig

    reference = Path(__file__).resolve().parent / "data" / "ref_sweep"
    with Tracker(TrackingConfig(name="wandb"), "tuned", folder) as tracker:
        tracker.sweep_finished(load_summary(reference), [])  # the study read from the folder
    (run,) = read_runs(folder / "wandb")
    (logged,) = [step for step in run.history if "tuning/nrows" in step]
    assert logged["tuning/nrows"] == 12 and logged["tuning_importance/nrows"] == 2
    assert "tuning_best_so_far_table" in json.dumps(logged)  # the line's own table
    assert run.summary["tuning/best_params"] == "x=8, y=a"
    assert run.summary["tuning/best_value"] == 100.0
