"""Comparative analysis of one sweep: engines against a baseline, Pareto fronts, SLO goodput.

Pure functions from the summary frame (`analysis.read.load.load_summary`; goodput also reads the
request records) to frames the report renders:
- `decomposition`: per task and load point, each engine's throughput, TTFT and cost as a ratio
  to the baseline engine: one named by the caller, else the backend whose recorded facts say it
  is the baseline (`records.BACKEND_BASELINE`: the plain transformers one). A results folder
  written before backends recorded their facts has none: name one with `baseline`;
- `pareto_points`: throughput per GPU against per-user latency, the front marked and named;
- `slo_goodput`: goodput and cost per million tokens under SLOs from the config or the CLI;
- `analyse`: all of the above plus the roofline columns, bundled as a `Comparison`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.read.columns import (
    CONFIGURATION,
    LATENCY_MS,
    load_values,
    number,
    numeric_column,
    series_labels,
    text_column,
)
from analysis.stats.noise import (
    BETTER,
    HIGHER_IS_BETTER,
    NO_INTERVAL,
    WITHIN_NOISE,
    WORSE,
    Estimate,
    compare,
    estimates,
    method_text,
)
from analysis.stats.roofline import BASIS_WEIGHTS, WEIGHTS_ONLY_NOTE, roofline
from sweep.core import records as rec
from sweep.core.errors import ConfigError
from sweep.core.summary import (
    SLO_ANSWER_MS,
    SLO_E2E_MS,
    SLO_TPOT_MS,
    SLO_TTFT_MS,
    meets_slo,
    summarize,
)
from sweep.core.summary import cost_per_1m_output as cost_per_1m

TASK, LOAD, ENGINE, BASELINE, TRIALS = "task", "load", "engine", "baseline", "trials"
TTFT_MEDIAN = rec.latency_column("ttft", "median")
TPOT_MEDIAN = rec.latency_column("tpot", "median")
# Ratio columns of the decomposition: engine value / baseline value.
RATIO_COLUMNS = {
    rec.OUTPUT_THROUGHPUT: "throughput_x",
    TTFT_MEDIAN: "ttft_x",
    rec.COST_PER_1M_OUTPUT: "cost_x",
}
SLO_KEYS = (SLO_TTFT_MS, SLO_TPOT_MS, SLO_E2E_MS, SLO_ANSWER_MS)
# What the findings and the Pareto front judge against noise (`analysis.stats.noise`).
NOISE_METRICS = (
    rec.OUTPUT_THROUGHPUT,
    rec.THROUGHPUT_PER_GPU,
    TTFT_MEDIAN,
    TPOT_MEDIAN,
    rec.COST_PER_1M_OUTPUT,
)
BASELINE_VERDICT = "baseline"
_KEY_SEPARATOR = "\x1f"

Slo = dict[str, float]


@dataclass(frozen=True)
class Comparison:
    """Everything the report shows beyond the per-trial table."""

    trials: pd.DataFrame  # the summary plus the derived per-trial columns
    decomposition: pd.DataFrame
    pareto: pd.DataFrame
    slo: pd.DataFrame
    baseline: str | None  # as asked; None: the backend recorded as the baseline
    latency_metric: str
    notes: list[str] = field(default_factory=list)
    # configuration -> metric -> Estimate (`analysis.stats.noise`), for the findings and the
    # intervals
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    noise_method: str = ""
    # each trial's configuration, as `estimates` names it (index aligned with `trials`)
    configurations: pd.Series | None = None


def analyse(
    summary: pd.DataFrame,
    requests: pd.DataFrame | None = None,
    *,
    baseline: str | None = None,
    slo: Slo | None = None,
) -> Comparison:
    """The comparison frame and tables of one sweep.

    Args:
        summary: one row per trial.
        requests: request records of the trials; without them the goodput table is empty.
        baseline: backend name (`hf`) or engine label (`hf per_request`) to compare against;
            None: the backend whose recorded facts say it is the baseline.
        slo: SLO bounds overriding each trial's `slo.*` config (keys `ttft_ms`, `tpot_ms`,
            `e2e_ms`).
    """
    trials = summary.copy()
    trials[rec.THROUGHPUT_PER_GPU] = throughput_per_gpu(trials)
    trials = trials.join(roofline(trials))
    goodput = slo_goodput(trials, requests, slo) if requests is not None else _empty_slo()
    trials = trials.join(goodput.set_index(rec.TRIAL_ID)[_SLO_RESULTS], on=rec.TRIAL_ID)
    latency = TPOT_MEDIAN if numeric_column(trials, TPOT_MEDIAN).notna().any() else TTFT_MEDIAN
    names = configuration_names(trials)
    found = estimates(trials, requests, names, NOISE_METRICS)
    pareto = pareto_points(trials, latency, found)
    front = pareto.loc[pareto[rec.ON_PARETO_FRONT], CONFIGURATION]
    ok = _ok(trials)
    # Named among the successful trials only, as pareto_points names them.
    trials[rec.ON_PARETO_FRONT] = configuration_names(trials[ok]).isin(front)
    trials[rec.ON_PARETO_FRONT] = trials[rec.ON_PARETO_FRONT].fillna(False).astype(bool)
    weights_only = (trials.loc[ok, rec.ROOFLINE_BASIS] == BASIS_WEIGHTS).any()
    notes = [WEIGHTS_ONLY_NOTE] if weights_only else []
    return Comparison(
        trials,
        decomposition(trials, baseline, requests),
        pareto,
        goodput,
        baseline,
        latency,
        notes,
        found,
        method_text(found),
        names,
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


def decomposition(
    summary: pd.DataFrame, baseline: str | None = None, requests: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Each engine's throughput, median TTFT and cost relative to the baseline engine.

    Successful trials are averaged per (task, load, engine) over repeats; the baseline of a
    (task, load) point is the engine whose backend name or label is `baseline`, or without one
    the engine whose backend recorded itself as the baseline (`records.BACKEND_BASELINE`); the
    first label in order when the baseline backend ran in several configurations.

    Returns:
        Columns task, load, engine, baseline, trials, the three metrics and their ratios
        `throughput_x`, `ttft_x`, `cost_x` (NaN where the point has no baseline trial), each
        ratio's 95% interval (`<ratio>_low`, `<ratio>_high`) and verdict (`<ratio>_verdict`:
        better, worse, within noise, no interval, or baseline), from `analysis.stats.noise` with the
        request records when given.
    """
    ok = summary[_ok(summary)]
    points = pd.DataFrame(
        {
            TASK: task_values(ok),
            LOAD: load_values(ok),
            ENGINE: engine_labels(ok),
            "backend": text_column(ok, rec.BACKEND_NAME),
            "declared": declared_baseline(ok),
        }
    )
    for metric in RATIO_COLUMNS:
        points[metric] = numeric_column(ok, metric)
    keys = [TASK, LOAD, ENGINE]
    grouped = points.groupby(keys, dropna=False, sort=True)
    table = grouped[list(RATIO_COLUMNS)].mean().join(grouped.size().rename(TRIALS))
    table = table.join(grouped[["backend", "declared"]].first()).reset_index()
    if baseline is None:
        is_base = table["declared"]
    else:
        is_base = (table["backend"] == baseline) | (table[ENGINE] == baseline)
    base = table[is_base].groupby([TASK, LOAD], dropna=False).first()
    base = base[[ENGINE, *RATIO_COLUMNS]].rename(columns={ENGINE: BASELINE})
    table = table.merge(
        base, how="left", left_on=[TASK, LOAD], right_index=True, suffixes=("", "_base")
    )
    for metric, ratio in RATIO_COLUMNS.items():
        table[ratio] = table[metric] / table[f"{metric}_base"].where(lambda v: v > 0)
    _ratio_intervals(table, ok, points, requests)
    noise = [f"{r}_{part}" for r in RATIO_COLUMNS.values() for part in ("low", "high", "verdict")]
    columns = [TASK, LOAD, ENGINE, BASELINE, TRIALS, *RATIO_COLUMNS, *RATIO_COLUMNS.values()]
    return table[columns + noise]


def declared_baseline(summary: pd.DataFrame) -> pd.Series:
    """Per trial: True where its backend recorded itself as the baseline (False where unknown)."""
    facts = summary.get(rec.BACKEND_BASELINE, pd.Series(None, summary.index, dtype=object))
    return facts.map(lambda v: v is True or v is np.True_).astype(bool)


def _point_keys(frame: pd.DataFrame, engine: str) -> pd.Series:
    return (
        frame[TASK].astype(str)
        + _KEY_SEPARATOR
        + frame[LOAD].astype(str)
        + _KEY_SEPARATOR
        + frame[engine].astype(str)
    )


def _ratio_intervals(
    table: pd.DataFrame,
    ok: pd.DataFrame,
    points: pd.DataFrame,
    requests: pd.DataFrame | None,
) -> None:
    """Each ratio's interval and verdict against the baseline (in place)."""
    found = estimates(ok, requests, _point_keys(points, ENGINE), tuple(RATIO_COLUMNS))
    own, base = _point_keys(table, ENGINE), _point_keys(table, BASELINE)
    for metric, ratio in RATIO_COLUMNS.items():
        low, high, verdict = [], [], []
        for row, key, base_key in zip(table.itertuples(), own, base, strict=True):
            if pd.isna(getattr(row, BASELINE)) or base_key not in found or key not in found:
                low.append(np.nan), high.append(np.nan), verdict.append(NO_INTERVAL)
                continue
            if key == base_key:
                low.append(1.0), high.append(1.0), verdict.append(BASELINE_VERDICT)
                continue
            diff = compare(found[key][metric], found[base_key][metric], HIGHER_IS_BETTER[metric])
            low.append(diff.low), high.append(diff.high), verdict.append(diff.verdict)
        table[f"{ratio}_low"], table[f"{ratio}_high"] = low, high
        table[f"{ratio}_verdict"] = verdict


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


def pareto_points(
    summary: pd.DataFrame,
    latency: str = TPOT_MEDIAN,
    found: Mapping[str, Mapping[str, Estimate]] | None = None,
) -> pd.DataFrame:
    """Per-user latency against output tok/s per GPU, one point per configuration.

    A configuration is a series at one load; its repeats are averaged. `latency` is a summary
    column in ms (median TPOT, or median TTFT). With `found` (`analysis.stats.noise.estimates` by
    configuration), a configuration leaves the front only when another beats it beyond noise
    (`noisy_pareto_mask`), and the points carry their intervals.

    Returns:
        Columns configuration, latency_ms, output tok/s per GPU, `records.ON_PARETO_FRONT`
        (and with `found` the intervals `latency_low`, `latency_high`, `throughput_low`,
        `throughput_high`), sorted by latency.
    """
    ok = summary[_ok(summary)]
    points = pd.DataFrame(
        {
            CONFIGURATION: configuration_names(ok),
            LATENCY_MS: numeric_column(ok, latency),
            rec.THROUGHPUT_PER_GPU: throughput_per_gpu(ok),
        }
    )
    points = points.groupby(CONFIGURATION, as_index=False, sort=True).mean()
    points[rec.ON_PARETO_FRONT] = pareto_mask(points[LATENCY_MS], points[rec.THROUGHPUT_PER_GPU])
    if found:
        points[rec.ON_PARETO_FRONT] = noisy_pareto_mask(points, found, latency)
        for column, metric in (("latency", latency), ("throughput", rec.THROUGHPUT_PER_GPU)):
            bounds = [
                found[c][metric].interval() if c in found else (np.nan, np.nan)
                for c in points[CONFIGURATION]
            ]
            points[f"{column}_low"] = [lo for lo, _ in bounds]
            points[f"{column}_high"] = [hi for _, hi in bounds]
    return points.sort_values([LATENCY_MS, CONFIGURATION], ignore_index=True)


def noisy_pareto_mask(
    points: pd.DataFrame, found: Mapping[str, Mapping[str, Estimate]], latency: str
) -> pd.Series:
    """The Pareto front with noise allowed for.

    A configuration is dominated only by one that is at least as good on both axes within noise
    and better beyond noise on one of them.
    """
    names = points[CONFIGURATION].tolist()
    valid = points[LATENCY_MS].notna() & points[rec.THROUGHPUT_PER_GPU].notna()
    on = []
    for i, name in enumerate(names):
        if not valid.iloc[i]:
            on.append(False)
            continue
        beaten = any(
            _dominates(found, other, name, latency)
            for j, other in enumerate(names)
            if j != i and valid.iloc[j]
        )
        on.append(not beaten)
    return pd.Series(on, index=points.index)


def _dominates(found: Mapping[str, Mapping[str, Estimate]], a: str, b: str, latency: str) -> bool:
    """Whether configuration a beats b beyond noise on one axis and is not worse on the other."""
    if a not in found or b not in found:
        return False
    verdicts = [
        _axis_verdict(found[a][metric], found[b][metric], HIGHER_IS_BETTER[metric])
        for metric in (latency, rec.THROUGHPUT_PER_GPU)
    ]
    return all(v in (BETTER, WITHIN_NOISE) for v in verdicts) and BETTER in verdicts


def _axis_verdict(a: Estimate, b: Estimate, higher_is_better: bool) -> str:
    """`compare`'s verdict, or the plain comparison of values where noise cannot be judged."""
    verdict = compare(a, b, higher_is_better).verdict
    if verdict != NO_INTERVAL:
        return verdict
    if a.value == b.value:
        return WITHIN_NOISE
    return BETTER if (a.value > b.value) == higher_is_better else WORSE


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
    # Only trials whose requests were read can be held to a bound (`detail_scope`).
    read = _ok(summary) & summary[rec.TRIAL_ID].isin(list(by_trial))
    rows = [
        _trial_goodput(trial, by_trial[trial[rec.TRIAL_ID]], bounds)
        for _, trial in summary[read].iterrows()
        if (bounds := slo if slo is not None else _config_slo(trial))
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


def configuration_names(summary: pd.DataFrame) -> pd.Series:
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
