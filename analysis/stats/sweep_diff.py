"""Two or more sweeps side by side: trials matched by config, differences judged against noise.

`compare_sweeps` matches the successful trials of several summary frames to grid points: equal
`trial_id`s match (the id hashes the trial config), and so do trials whose dotted config columns
agree when the ids differ (a newer version of the tool may hash one more field). The repeats of a
point give a mean and 95% interval per sweep (`sweep.core.summary.confidence_interval`); where the
intervals of the reference sweep (the first) and another overlap, the difference is marked
"within noise". The result is one row per point, metric and compared sweep.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.read.columns import display_text, numeric_column
from analysis.stats.intervals import confidence_interval
from analysis.stats.noise import BETTER, NO_INTERVAL, WORSE, compare, estimates
from sweep.core import records as rec

METRICS = (
    rec.OUTPUT_THROUGHPUT,
    rec.latency_column("ttft", "median"),
    rec.latency_column("tpot", "median"),
    rec.COST_PER_1M_OUTPUT,
)
POINT, METRIC, SWEEP, REFERENCE = "point", "metric", "sweep", "reference"
CHANGE_PCT, VERDICT = "change_pct", "verdict"
WITHIN_NOISE, HIGHER, LOWER, NO_REPEATS = "within noise", "higher", "lower", "no repeats"
# Not part of what a trial is: where its SLO was set does not change what was measured.
NOT_MATCHED_ON = (rec.ENV_PREFIX, rec.SLO_PREFIX)
_REPEAT_SUFFIX = re.compile(r"-r\d+$")


@dataclass(frozen=True)
class SweepDiff:
    """The matched comparison and how many grid points each sweep had without a partner."""

    table: pd.DataFrame
    reference: str
    matched_points: int
    unmatched_points: dict[str, int]


def compare_sweeps(
    summaries: Mapping[str, pd.DataFrame],
    metrics: tuple[str, ...] = METRICS,
    requests: Mapping[str, pd.DataFrame] | None = None,
) -> SweepDiff:
    """Compare every sweep after the first with the first, point by point.

    Args:
        summaries: sweep name -> its summary frame, the reference first.
        metrics: summary metric columns to compare.
        requests: sweep name -> its request records. Where a side has a single trial, its
            interval then comes from the trial's own requests (`analysis.stats.noise`) and the
            verdict from the interval of the ratio; without them such a point is "no repeats".

    Returns:
        A `SweepDiff` whose table has the columns point, metric, reference, sweep, the mean,
        `ci_low`, `ci_high` and repeat count of each side (the reference's prefixed `ref_`),
        `change_pct` (other vs reference) and `verdict`: within noise, higher, lower, or
        no repeats (fewer than two repeats on a side, so noise cannot be judged).
    """
    names = list(summaries)
    if len(names) < 2:
        raise ValueError("comparing sweeps needs at least two")
    trials = _matched(summaries)
    groups = {name: trials[trials[SWEEP] == name].groupby("_key") for name in names}
    reference = names[0]
    ref_points = groups[reference]
    rows = []
    for key, ref in ref_points:
        for name in names[1:]:
            if key not in groups[name].groups:
                continue
            other = groups[name].get_group(key)
            point = _REPEAT_SUFFIX.sub("", str(ref[rec.LABEL].iloc[0]))
            rows.extend(_compare_point(point, name, reference, ref, other, metrics, requests or {}))
    keys = {name: set(trials.loc[trials[SWEEP] == name, "_key"]) for name in names}

    def elsewhere(name: str) -> set[str]:
        return set().union(*(keys[n] for n in names if n != name))

    return SweepDiff(
        table=pd.DataFrame(rows, columns=_COLUMNS),
        reference=reference,
        matched_points=len(keys[reference] & elsewhere(reference)),
        unmatched_points={name: len(keys[name] - elsewhere(name)) for name in names},
    )


_SIDE = ("mean", rec.CI_STATS[1], rec.CI_STATS[2], rec.NUM_REPEATS)
_COLUMNS = [
    POINT,
    METRIC,
    REFERENCE,
    SWEEP,
    *(f"ref_{c}" for c in _SIDE),
    *_SIDE,
    CHANGE_PCT,
    VERDICT,
]


def _compare_point(
    point: str,
    name: str,
    reference: str,
    ref: pd.DataFrame,
    other: pd.DataFrame,
    metrics: tuple[str, ...],
    requests: Mapping[str, pd.DataFrame],
) -> list[dict[str, object]]:
    rows = []
    single = min(len(ref), len(other)) < 2 and reference in requests and name in requests
    found = {}
    if single:  # intervals from the trials' own requests (both sides: the same method)
        for side, frame, sweep in (("ref", ref, reference), ("other", other, name)):
            labels = pd.Series(side, index=frame.index)
            found[side] = estimates(frame, requests[sweep], labels, metrics)[side]
    for metric in metrics:
        a, b = numeric_column(ref, metric).dropna(), numeric_column(other, metric).dropna()
        if a.empty or b.empty:
            continue
        (ma, la, ha), (mb, lb, hb) = confidence_interval(a), confidence_interval(b)
        change = (mb - ma) / ma * 100 if ma else np.nan
        verdict = noise_verdict((ma, la, ha), (mb, lb, hb))
        if single:
            (la, ha), (lb, hb) = found["ref"][metric].interval(), found["other"][metric].interval()
            judged = compare(found["other"][metric], found["ref"][metric], higher_is_better=True)
            verdict = {BETTER: HIGHER, WORSE: LOWER}.get(judged.verdict, judged.verdict)
            verdict = NO_REPEATS if verdict == NO_INTERVAL else verdict
        values = (
            point,
            metric,
            reference,
            name,
            ma,
            la,
            ha,
            len(a),
            mb,
            lb,
            hb,
            len(b),
            change,
            verdict,
        )
        rows.append(dict(zip(_COLUMNS, values, strict=True)))
    return rows


def noise_verdict(reference: tuple[float, float, float], other: tuple[float, float, float]) -> str:
    """`other` against `reference`, each (mean, ci_low, ci_high) over repeats.

    Overlapping intervals are within noise; without an interval on a side (fewer than two
    repeats) noise cannot be judged.
    """
    (ma, la, ha), (mb, lb, hb) = reference, other
    if any(pd.isna(v) for v in (la, ha, lb, hb)):
        return NO_REPEATS
    if lb <= ha and la <= hb:
        return WITHIN_NOISE
    return HIGHER if mb > ma else LOWER


def _matched(summaries: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """All successful trials with their sweep's name and a grid-point key shared across sweeps."""
    frames = []
    for name, summary in summaries.items():
        ok = summary[summary[rec.TRIAL_STATUS] == rec.STATUS_OK].copy()
        ok[SWEEP] = name
        frames.append(ok)
    trials = pd.concat(frames, ignore_index=True)
    # Columns every sweep has: a field only a newer version records must not split points.
    common = set.intersection(*(set(s.columns) for s in summaries.values()))
    columns = sorted(c for c in common if _is_config(c))
    texts = trials[columns].map(display_text)
    config_keys = pd.Series(
        ["\x1f".join(row) for row in texts.itertuples(index=False)],
        index=trials.index,
        dtype=object,
    )
    # Equal trial ids are the same config even where the columns differ: the later sweep's key
    # then stands for the first sighting's, for all its repeats.
    first_key: dict[str, str] = {}
    alias: dict[str, str] = {}
    for trial_id, key in zip(trials[rec.TRIAL_ID], config_keys, strict=True):
        if (seen := first_key.setdefault(trial_id, key)) != key:
            alias[key] = seen
    trials["_key"] = config_keys.map(lambda key: alias.get(key, key))
    return trials


def _is_config(column: str) -> bool:
    return rec.CONFIG_SEPARATOR in column and not column.startswith(NOT_MATCHED_ON)
