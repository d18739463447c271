"""Quality in the report's words and on its front, from quality tables made by hand.

`quality_findings` states each configuration's speed against its drift from the baseline;
`front_points` keeps the configurations no other beats on both USD per 1M tokens and KL. The
tables have `analysis.report.quality.quality_table`'s columns, with values chosen so the expected
sentences and front are known before the code runs.
"""

import math

import pandas as pd
import pytest

from analysis.figures.quality_front import ON_FRONT, front_points, write_quality_front
from analysis.report.findings import quality_findings
from sweep.core import records as R


def row(name, tok_s, cost, kl=None, top1=None, ratio=None, status=R.QUALITY_SCORED):
    """One deployment's row; a figure given as (value, low, high), None for none."""
    values = {
        "configuration": name,
        R.DEPLOYMENT_ID: f"d-{name}",
        "status": status,
        R.OUTPUT_THROUGHPUT: tok_s,
        R.COST_PER_1M_OUTPUT: cost,
        "baseline": "fp16",
    }
    for figure, given in (("kl_topk", kl), ("top1_agreement", top1), ("perplexity_ratio", ratio)):
        low_high = given or (math.nan, math.nan, math.nan)
        values |= dict(zip((figure, f"{figure}_low", f"{figure}_high"), low_high, strict=True))
    return values


TABLE = pd.DataFrame(
    [
        row("fp16", 100.0, 2.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
        row("4-bit", 190.0, 1.05, (0.031, 0.027, 0.035), (0.91, 0.89, 0.93), (1.02, 1.01, 1.03)),
        row("8-bit", 80.0, 2.5, (0.002, 0.001, 0.003), (0.99, 0.98, 1.0), (1.0, 1.0, 1.0)),
        row("tgi", 120.0, 1.7, ratio=(1.0125, 1.01, 1.015)),
        row("exl2", math.nan, math.nan, status="not available: no logprobs"),
    ]
)


def test_each_configuration_is_stated_with_its_speed_and_its_drift():
    lines = quality_findings(TABLE)
    assert lines == [
        "**4-bit**: 1.90x the output tok/s of **fp16** (best trials) at KL 0.031 [0.027, 0.035] "
        "from it; top-1 agreement 0.91 [0.89, 0.93].",
        "**8-bit**: 0.80x the output tok/s of **fp16** (best trials) at KL 0.002 [0.001, 0.003] "
        "from it; top-1 agreement 0.99 [0.98, 1.00].",
        "**tgi**: 1.20x the output tok/s of **fp16** (best trials) at perplexity 1.0125 [1.0100, "
        "1.0150] times its (no top-K from this server, so no KL).",
        "**exl2**: quality not available: no logprobs.",
    ]


def test_no_baseline_or_no_quality_no_sentence():
    assert quality_findings(pd.DataFrame()) == []
    assert quality_findings(TABLE.assign(baseline=None)) == []


def test_the_front_keeps_what_no_other_beats_on_both_cost_and_kl():
    points = front_points(TABLE).set_index("configuration")
    assert set(points.index) == {"fp16", "4-bit", "8-bit"}  # tgi has no KL, exl2 no cost
    # 4-bit is cheapest; fp16 has the least KL; 8-bit costs more than fp16 and drifts more
    assert points[ON_FRONT].to_dict() == {"4-bit": True, "fp16": True, "8-bit": False}
    assert list(points.index) == ["4-bit", "fp16", "8-bit"]  # by cost


def test_the_front_plot_is_written_only_with_two_points(tmp_path):
    path = write_quality_front(TABLE, tmp_path, "study")
    assert path == tmp_path / "quality_front.png" and path.stat().st_size > 10_000
    assert write_quality_front(TABLE.iloc[[0, 3, 4]], tmp_path / "none", "study") is None


@pytest.mark.parametrize("missing", ["kl_topk", R.COST_PER_1M_OUTPUT])
def test_no_front_without_its_two_axes(missing):
    assert front_points(TABLE.drop(columns=missing)).empty
