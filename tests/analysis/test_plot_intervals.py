"""A plot of a sweep with repeats draws the interval its Repeats table states, as error bars.

Hand-made summary rows: two configurations at batch size 1 and 8, three repeats each, with
throughputs chosen so that every point has its own spread; one configuration at a third load ran
once (no interval: no bar). The expected intervals are worked out here with Student t.
"""

import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from scipy import stats

from analysis.figures.plots import PLOTS, metric_figure
from analysis.report.report import trial_sections
from sweep.core import records as rec

THROUGHPUT = PLOTS[0]
# (mode, batch size) -> output tok/s of its repeats
VALUES = {
    ("per_request", 1): [10.0, 12.0, 14.0],
    ("per_request", 8): [20.0, 21.0, 25.0],
    ("static_batch", 1): [11.0, 11.5, 12.5],
    ("static_batch", 8): [60.0, 70.0, 68.0],
    ("static_batch", 16): [90.0],
}


def summary() -> pd.DataFrame:
    rows = [
        {
            rec.TRIAL_ID: f"{mode}-{batch}-{repeat}",
            rec.LABEL: f"{mode}-{batch}-{repeat}",
            rec.TRIAL_STATUS: rec.STATUS_OK,
            rec.BACKEND_NAME: "hf",
            "backend.mode": mode,
            rec.WORKLOAD_NAME: "throughput_bound",
            rec.WORKLOAD_BATCH_SIZE: batch,
            rec.REPEAT: repeat,
            rec.OUTPUT_THROUGHPUT: value,
        }
        for (mode, batch), values in VALUES.items()
        for repeat, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


def interval(values: list[float]) -> tuple[float, float]:
    """The 95% Student t interval of the mean, worked out independently of the code under test."""
    x = np.array(values)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def bars(figure) -> dict[str, dict[float, tuple[float, float]]]:
    """Per legend label: load -> (bottom, top) of each vertical error bar drawn."""
    ax = figure.axes[0]
    drawn = {}
    for container in ax.containers:
        assert isinstance(container, ErrorbarContainer)
        _, _, (lines,) = container.lines
        drawn[container.get_label()] = {
            float(seg[0][0]): (float(seg[0][1]), float(seg[1][1])) for seg in lines.get_segments()
        }
    return drawn


def test_each_point_with_repeats_has_the_error_bar_of_its_interval():
    drawn = bars(metric_figure(summary(), THROUGHPUT))
    assert set(drawn) == {"hf per_request", "hf static_batch"}
    for (mode, batch), values in VALUES.items():
        bar = drawn[f"hf {mode}"].get(float(batch))
        if len(values) < 2:
            # A point measured once has no interval: its bar has no length.
            assert bar is None or bar[0] == bar[1] == pytest.approx(values[0])
            continue
        assert bar == pytest.approx(interval(values)), (mode, batch)


def test_the_bars_equal_the_repeats_table_of_the_report(tmp_path):
    trials = summary()
    sections = {s.title: s for s in trial_sections(trials, [tmp_path / p.file_name for p in PLOTS])}
    table = sections["Repeats"].table
    drawn = bars(metric_figure(trials, THROUGHPUT))
    cells = table.set_index(["Series", "Load"])["Output tok/s, mean [95% CI]"]
    checked = 0
    for (series, load), cell in cells.items():
        mean, low, high = (float(v) for v in re.findall(r"nan|-?[\d.]+", cell))
        if math.isnan(low):
            continue
        bottom, top = drawn[series][float(load)]
        assert (bottom, top) == pytest.approx((low, high), abs=0.05), (series, load)  # 1 decimal
        checked += 1
    assert checked == 4


def test_a_sweep_without_repeats_draws_no_error_bars():
    once = summary().drop_duplicates(subset=["backend.mode", rec.WORKLOAD_BATCH_SIZE])
    ax = metric_figure(once, THROUGHPUT).axes[0]
    assert ax.containers == [] and len(ax.lines) == 2
