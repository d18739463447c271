"""No finding states a figure from a trial the same report distrusts (too short, client-bound,
token counts mismatched): such a configuration is left out of the comparisons and named as not
compared, and its quality line gives its drift without a speed. Checked on hand-built estimates
and trials, whose verdicts are known before the findings run."""

import dataclasses

import pandas as pd

from analysis.report.findings import findings, quality_findings, withheld_deployments
from analysis.report.flags import distrust, trial_checks
from analysis.stats.compare import TTFT_MEDIAN, Comparison
from analysis.stats.noise import REPEATS, Estimate
from sweep.core import records as R


def _trial(trial_id, deployment, completed=32, duration=2.0, **extra):
    return {
        R.TRIAL_ID: trial_id, R.LABEL: trial_id, R.DEPLOYMENT_ID: deployment,
        R.TRIAL_STATUS: R.STATUS_OK, R.NUM_REQUESTS: completed, R.COMPLETED_REQUESTS: completed,
        R.FAILED_REQUESTS: 0, R.DURATION_S: duration, R.TOO_SHORT: False, **extra,
    }  # fmt: skip


def _comparison(throughput: dict, trials: list[dict], names: list[str]) -> Comparison:
    frame = pd.DataFrame(trials)
    return Comparison(
        trials=frame,
        decomposition=pd.DataFrame(),
        pareto=pd.DataFrame(),
        slo=pd.DataFrame(),
        baseline="hf",
        latency_metric=TTFT_MEDIAN,
        estimates={
            name: {R.OUTPUT_THROUGHPUT: Estimate(value, se, 4, 5, REPEATS)}
            for name, (value, se) in throughput.items()
        },
        noise_method="Intervals are 95%, from the 5 repeats of each configuration (Student t).",
        configurations=pd.Series(names, index=frame.index),
    )


TRIALS = [
    _trial("a1", "dA", completed=8, duration=0.05),  # A: too short (the report's 24 and 0.5 s)
    _trial("b1", "dB"),
    _trial("c1", "dC"),
    _trial("d1", "dD", **{R.CLIENT_SATURATED: True}),  # D: the client set the pace
]
NAMES = ["A", "B", "C", "D"]
SPEEDS = {"A": (5000.0, 10.0), "B": (100.0, 1.0), "C": (200.0, 1.0), "D": (900.0, 5.0)}


def test_the_flags_say_why_a_trial_is_distrusted():
    frame = pd.DataFrame(TRIALS)
    assert distrust(frame).tolist() == ["too short", "", "", "client-bound"]


def test_a_configuration_with_a_distrusted_trial_leads_nothing_and_is_named_not_compared():
    lines = findings(_comparison(SPEEDS, TRIALS, NAMES))
    leader = next(line for line in lines if " leads on output tok/s" in line)
    assert leader.startswith("**C** leads on output tok/s (200.0 tok/s): 2.00x [")
    stated = " ".join(line for line in lines if not line.startswith("Not compared"))
    assert "**A**" not in stated and "**D**" not in stated  # 5000 and 900 tok/s: never stated
    (withheld,) = [line for line in lines if line.startswith("Not compared")]
    assert withheld.startswith("Not compared: **A** (too short), **D** (client-bound).")


def test_without_trial_names_nothing_is_withheld():
    comparison = dataclasses.replace(_comparison(SPEEDS, TRIALS, NAMES), configurations=None)
    lines = findings(comparison)
    assert lines[1].startswith("**A** leads on output tok/s")
    assert not [line for line in lines if line.startswith("Not compared")]


def _quality(rows):
    table = pd.DataFrame(rows)
    for figure in ("kl_topk", "top1_agreement", "perplexity_ratio"):
        for part in ("_low", "_high"):
            table[figure + part] = table[figure] * (0.9 if part == "_low" else 1.1)
    return table


QUALITY = [
    {"configuration": "hf fp16", R.DEPLOYMENT_ID: "dB", "baseline": "hf fp16",
     R.OUTPUT_THROUGHPUT: 100.0, "kl_topk": 0.0, "top1_agreement": 1.0, "perplexity_ratio": 1.0,
     "status": "scored"},
    {"configuration": "llamacpp q4_0", R.DEPLOYMENT_ID: "dA", "baseline": "hf fp16",
     R.OUTPUT_THROUGHPUT: 579.0, "kl_topk": 0.03, "top1_agreement": 0.9,
     "perplexity_ratio": 1.02, "status": "scored"},
    {"configuration": "hf 8-bit", R.DEPLOYMENT_ID: "dC", "baseline": "hf fp16",
     R.OUTPUT_THROUGHPUT: 80.0, "kl_topk": 0.01, "top1_agreement": 0.95,
     "perplexity_ratio": 1.01, "status": "scored"},
]  # fmt: skip


def test_a_quality_line_of_a_distrusted_deployment_gives_its_drift_without_a_speed():
    withheld = withheld_deployments(pd.DataFrame(TRIALS))
    assert withheld == {"dA": "too short", "dD": "client-bound"}
    lines = quality_findings(_quality(QUALITY), withheld)
    assert lines[0].startswith(
        "**llamacpp q4_0**: speed not stated (trials too short: *Request checks*) at KL 0.03"
    )
    assert lines[1].startswith("**hf 8-bit**: 0.80x the output tok/s of **hf fp16**")
    assert "5.79x" not in " ".join(lines)


def test_a_distrusted_baseline_leaves_every_speed_unstated():
    lines = quality_findings(_quality(QUALITY), {"dB": "too short"})
    assert all("speed not stated (trials of the baseline too short" in line for line in lines)


# MLPerf's TEST09 and one-read streams: each trial's verdict, and the findings that follow.
UNFORCED = {R.BACKEND_IGNORE_EOS: False}
LENGTH_TRIALS = [
    _trial("e1", "dE", **UNFORCED, **{R.OUTPUT_LENGTH_OFF_PERCENT: -30.0}),  # cut short
    _trial("f1", "dF", **UNFORCED, **{R.OUTPUT_LENGTH_OFF_PERCENT: 8.0}),  # within 10%
    _trial("g1", "dG", **{R.BACKEND_IGNORE_EOS: True, R.OUTPUT_LENGTH_OFF_PERCENT: -30.0}),
    _trial("h1", "dH", **{R.ONE_READ_REQUESTS: 8}),  # 8 of 32: 25% of its streams in one read
    _trial("i1", "dI", **{R.ONE_READ_REQUESTS: 2}),  # 2 of 32: named, still compared
]


def test_lengths_off_the_dataset_and_one_read_streams_are_distrusted():
    frame = pd.DataFrame(LENGTH_TRIALS)
    assert distrust(frame).tolist() == ["output lengths off", "", "", "client-bound", ""]
    checks = trial_checks(frame)
    assert len(checks) == 3
    assert checks[0].startswith("e1 (`e1`): mean output length -30% off what the dataset asks")
    assert "MLPerf's TEST09 allows 10%" in checks[0]
    assert checks[1].startswith("h1 (`h1`): 8 request(s) (25%) arrived whole in one network read")
    assert checks[2].startswith("i1 (`i1`): 2 request(s) (6%) arrived whole in one network read")
    assert "their TTFT is their end-to-end time" in checks[2]


def test_a_truncating_configuration_cannot_win():
    speeds = {"E": (900.0, 5.0), "F": (200.0, 1.0), "G": (100.0, 1.0), "H": (800.0, 1.0),
              "I": (150.0, 1.0)}  # fmt: skip
    lines = findings(_comparison(speeds, LENGTH_TRIALS, ["E", "F", "G", "H", "I"]))
    leader = next(line for line in lines if " leads on output tok/s" in line)
    assert leader.startswith("**F** leads on output tok/s (200.0 tok/s)")
    (withheld,) = [line for line in lines if line.startswith("Not compared")]
    assert withheld.startswith("Not compared: **E** (output lengths off), **H** (client-bound).")
