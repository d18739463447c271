"""Comparative analysis of one sweep: engines against a baseline, Pareto fronts, SLO goodput.

Pure functions from the summary frame (`analysis.load.load_summary`; goodput also reads the
request records) to frames the report renders:
- `decomposition`: per task and load point, each engine's throughput, TTFT and cost as a ratio
  to the baseline engine (default `hf`, the plain transformers baseline);
- `pareto_points`: throughput per GPU against per-user latency, the front marked and named;
- `slo_goodput`: goodput and cost per million tokens under SLOs from the config or the CLI;
- `analyse`: all of the above plus the roofline columns, bundled as a `Comparison`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.plots import (
    CONFIGURATION,
    LATENCY_MS,
    load_values,
    number,
    numeric_column,
    series_labels,
    text_column,
)
from analysis.roofline import BASIS_WEIGHTS, WEIGHTS_ONLY_NOTE, roofline
from sweep.core import records as rec
from sweep.core.errors import ConfigError
from sweep.core.summary import (
    SLO_E2E_MS,
    SLO_TPOT_MS,
    SLO_TTFT_MS,
    meets_slo,
    summarize,
)
from sweep.core.summary import cost_per_1m_output as cost_per_1m

DEFAULT_BASELINE = "hf"
TASK, LOAD, ENGINE, BASELINE, TRIALS = "task", "load", "engine", "baseline", "trials"
TTFT_MEDIAN = rec.latency_column("ttft", "median")
TPOT_MEDIAN = rec.latency_column("tpot", "median")
# Ratio columns of the decomposition: engine value / baseline value.
RATIO_COLUMNS = {
    rec.OUTPUT_THROUGHPUT: "throughput_x",
    TTFT_MEDIAN: "ttft_x",
    rec.COST_PER_1M_OUTPUT: "cost_x",
}
SLO_KEYS = (SLO_TTFT_MS, SLO_TPOT_MS, SLO_E2E_MS)

Slo = dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """Everything the report shows beyond the per-trial table."""

    trials: pd.DataFrame  # the summary plus the derived per-trial columns
    decomposition: pd.DataFrame
    pareto: pd.DataFrame
    slo: pd.DataFrame
    baseline: str
    latency_metric: str
    notes: list[str] = field(default_factory=list)


def analyse(
    summary: pd.DataFrame,
    requests: pd.DataFrame | None = None,
    *,
    baseline: str = DEFAULT_BASELINE,
    slo: Slo | None = None,
) -> Comparison:
    """The comparison frame and tables of one sweep.

    Args:
        summary: one row per trial.
        requests: request records of the trials; without them the goodput table is empty.
        baseline: backend name (`hf`) or engine label (`hf per_request`) to compare against.
        slo: SLO bounds overriding each trial's `slo.*` config (keys `ttft_ms`, `tpot_ms`,
            `e2e_ms`).
    """
    trials = summary.copy()
    trials[rec.THROUGHPUT_PER_GPU] = throughput_per_gpu(trials)
    trials = trials.join(roofline(trials))
    goodput = slo_goodput(trials, requests, slo) if requests is not None else _empty_slo()
    trials = trials.join(goodput.set_index(rec.TRIAL_ID)[_SLO_RESULTS], on=rec.TRIAL_ID)
    latency = TPOT_MEDIAN if numeric_column(trials, TPOT_MEDIAN).notna().any() else TTFT_MEDIAN
    pareto = pareto_points(trials, latency)
    front = pareto.loc[pareto[rec.ON_PARETO_FRONT], CONFIGURATION]
    ok = _ok(trials)
    # Named among the successful trials only, as pareto_points names them.
    trials[rec.ON_PARETO_FRONT] = _configurations(trials[ok]).isin(front)
    trials[rec.ON_PARETO_FRONT] = trials[rec.ON_PARETO_FRONT].fillna(False).astype(bool)
    weights_only = (trials.loc[ok, rec.ROOFLINE_BASIS] == BASIS_WEIGHTS).any()
    notes = [WEIGHTS_ONLY_NOTE] if weights_only else []
    return Comparison(
        trials, decomposition(trials, baseline), pareto, goodput, baseline, latency, notes
    )


def task_values(summary: pd.DataFrame) -> pd.Series:
    """Task of each trial: `dataset.task` where set, else the dataset's name."""
    names = text_column(summary, rec.DATASET_NAME)
    return text_column(summary, rec.DATASET_TASK).where(lambda t: t != "", names)


def engine_labels(summary: pd.DataFrame) -> pd.Series:
    """Engine configuration of each trial, without the dataset (which is the task)."""
    return series_labels(summary, exclude_groups=("dataset",))


def throughput_per_gpu(summary: pd.DataFrame) -> pd.Series:
    """Output tok/s divided by the deployment's GPUs (a CPU deployment counts as one)."""
    gpus = numeric_column(summary, rec.BACKEND_NUM_GPUS).fillna(0).clip(lower=1)
    return numeric_column(summary, rec.OUTPUT_THROUGHPUT) / gpus


def decomposition(summary: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.DataFrame:
    """Each engine's throughput, median TTFT and cost relative to the baseline engine.

    Successful trials are averaged per (task, load, engine) over repeats; the baseline of a
    (task, load) point is the engine whose backend name or label is `baseline` (the first label
    in order when the baseline backend ran in several configurations).

    Returns:
        Columns task, load, engine, baseline, trials, the three metrics and their ratios
        `throughput_x`, `ttft_x`, `cost_x` (NaN where the point has no baseline trial).
    """
    ok = summary[_ok(summary)]
    points = pd.DataFrame(
        {
            TASK: task_values(ok),
            LOAD: load_values(ok),
            ENGINE: engine_labels(ok),
            "backend": text_column(ok, rec.BACKEND_NAME),
        }
    )
    for metric in RATIO_COLUMNS:
        points[metric] = numeric_column(ok, metric)
    keys = [TASK, LOAD, ENGINE]
    grouped = points.groupby(keys, dropna=False, sort=True)
    table = grouped[list(RATIO_COLUMNS)].mean().join(grouped.size().rename(TRIALS))
    table = table.join(grouped["backend"].first()).reset_index()
    is_base = (table["backend"] == baseline) | (table[ENGINE] == baseline)
    base = table[is_base].groupby([TASK, LOAD], dropna=False).first()
    base = base[[ENGINE, *RATIO_COLUMNS]].rename(columns={ENGINE: BASELINE})
    table = table.merge(
        base, how="left", left_on=[TASK, LOAD], right_index=True, suffixes=("", "_base")
    )
    for metric, ratio in RATIO_COLUMNS.items():
        table[ratio] = table[metric] / table[f"{metric}_base"].where(lambda v: v > 0)
    columns = [TASK, LOAD, ENGINE, BASELINE, TRIALS, *RATIO_COLUMNS, *RATIO_COLUMNS.values()]
    return table[columns]


def pareto_mask(latency: pd.Series, throughput: pd.Series) -> pd.Series:
    """Pareto-optimal points: lower latency is better, higher throughput is better.

    A point is on the front when no other point is at least as good in both and strictly better
    in one; points with a missing value are never on it.
    """
    valid = latency.notna() & throughput.notna()
    x, y = latency.to_numpy(float), throughput.to_numpy(float)
    on = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(valid.to_numpy()):
        others = valid.to_numpy() & (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))
        on[i] = not others.any()
    return pd.Series(on, index=latency.index)


def pareto_points(summary: pd.DataFrame, latency: str = TPOT_MEDIAN) -> pd.DataFrame:
    """Per-user latency against output tok/s per GPU, one point per configuration.

    A configuration is a series at one load; its repeats are averaged. `latency` is a summary
    column in ms (median TPOT, or median TTFT).

    Returns:
        Columns configuration, latency_ms, output tok/s per GPU, `records.ON_PARETO_FRONT`,
        sorted by latency.
    """
    ok = summary[_ok(summary)]
    points = pd.DataFrame(
        {
            CONFIGURATION: _configurations(ok),
            LATENCY_MS: numeric_column(ok, latency),
            rec.THROUGHPUT_PER_GPU: throughput_per_gpu(ok),
        }
    )
    points = points.groupby(CONFIGURATION, as_index=False, sort=True).mean()
    points[rec.ON_PARETO_FRONT] = pareto_mask(points[LATENCY_MS], points[rec.THROUGHPUT_PER_GPU])
    return points.sort_values([LATENCY_MS, CONFIGURATION], ignore_index=True)


def parse_slo(text: str) -> Slo:
    """`ttft_ms=500,tpot_ms=50` as a dict.

    Raises:
        ConfigError: a part is not KEY=MS with a known key and a positive number.
    """
    slo: Slo = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = (s.strip() for s in part.partition("="))
        bound = number(value)
        if key not in SLO_KEYS or bound is None or bound <= 0:
            raise ConfigError(f"bad SLO {part!r}: use KEY=MS, KEY one of {', '.join(SLO_KEYS)}")
        slo[key] = bound
    return slo


def slo_text(slo: Mapping[str, float | None]) -> str:
    """`ttft_ms<=500, tpot_ms<=50`, the bounds in a fixed order."""
    return ", ".join(f"{k}<={slo[k]:g}" for k in SLO_KEYS if slo.get(k) is not None)


def slo_goodput(
    summary: pd.DataFrame, requests: pd.DataFrame, slo: Slo | None = None
) -> pd.DataFrame:
    """Goodput and cost per million output tokens at the SLO, recomputed from the requests.

    Each successful trial is held to `slo` when given, else to its own `slo.*` config; trials
    with no bound are left out. Only output tokens of requests meeting every bound count, so
    the cost is what a token served within the SLO costs.

    Returns:
        Columns trial_id, label, slo, the goodput in req/s and output tok/s, and the cost
        (`records.SLO_*` names); empty when no trial has an SLO.
    """
    by_trial = dict(tuple(requests.groupby(rec.TRIAL_ID))) if len(requests) else {}
    rows = [
        _trial_goodput(trial, by_trial[trial[rec.TRIAL_ID]], bounds)
        for _, trial in summary[_ok(summary)].iterrows()
        if (bounds := slo if slo is not None else _config_slo(trial))
        and trial[rec.TRIAL_ID] in by_trial
    ]
    return pd.DataFrame(rows) if rows else _empty_slo()


def _trial_goodput(trial: pd.Series, requests: pd.DataFrame, slo: Slo) -> dict[str, object]:
    gpus = int(number(trial.get(rec.BACKEND_NUM_GPUS)) or 0)
    price = number(trial.get(rec.HARDWARE_PRICE_PER_HOUR))
    metrics = summarize(requests, num_gpus=gpus, price_per_hour=price or 0.0, slo=slo)
    ok = requests[requests[rec.STATUS] == rec.STATUS_OK]
    good_tokens = numeric_column(ok, rec.OUTPUT_TOKENS)[meets_slo(ok, slo)].sum()
    duration = metrics[rec.DURATION_S] or 0.0
    good_tok_s = float(good_tokens) / duration if duration > 0 else 0.0
    return {
        rec.TRIAL_ID: trial[rec.TRIAL_ID],
        rec.LABEL: trial.get(rec.LABEL),
        "slo": slo_text(slo),
        rec.SLO_GOODPUT: metrics[rec.GOODPUT],
        rec.SLO_GOODPUT_OUTPUT_THROUGHPUT: good_tok_s,
        rec.SLO_COST_PER_1M_OUTPUT: None if price is None else cost_per_1m(good_tok_s, gpus, price),
    }


_SLO_RESULTS = [rec.SLO_GOODPUT, rec.SLO_GOODPUT_OUTPUT_THROUGHPUT, rec.SLO_COST_PER_1M_OUTPUT]


def _empty_slo() -> pd.DataFrame:
    return pd.DataFrame(columns=[rec.TRIAL_ID, rec.LABEL, "slo", *_SLO_RESULTS])


def _config_slo(trial: pd.Series) -> Slo:
    bounds = {key: number(trial.get(f"{rec.SLO_PREFIX}{key}")) for key in SLO_KEYS}
    return {key: bound for key, bound in bounds.items() if bound is not None}


def _configurations(summary: pd.DataFrame) -> pd.Series:
    """`hf per_request · random @ batch size 4`: a series and its load, for naming points."""
    by_concurrency = numeric_column(summary, rec.WORKLOAD_CONCURRENCY).notna()
    axis = by_concurrency.map({True: "concurrency", False: "batch size"})
    loads = [
        "" if pd.isna(v) else f" @ {name} {v:g}"
        for name, v in zip(axis, load_values(summary), strict=True)
    ]
    return series_labels(summary) + pd.Series(loads, index=summary.index, dtype=object)


def _ok(summary: pd.DataFrame) -> pd.Series:
    return summary[rec.TRIAL_STATUS] == rec.STATUS_OK
