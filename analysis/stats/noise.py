"""How sure each comparing figure is: estimates with standard errors, differences against noise.

Every figure that compares configurations (the decomposition's ratios, Pareto membership, the
findings) takes its uncertainty from here. An `Estimate` is one metric of one configuration (a
series at one load) with a standard error and its degrees of freedom:
- from repeats, when the configuration ran two or more times: the mean of the trials' values,
  s / sqrt(n) and n - 1 (Student t). This is the only method that sees run-to-run noise;
- otherwise from the trial's own requests: latency statistics by a bootstrap over its measured
  requests (`BOOTSTRAP_DRAWS` resamples, fixed seed, so a report is reproducible), throughput by
  its spread over `windows` equal time windows of the measured span (s / sqrt(W), W - 1).
Cost per token and throughput per GPU are the throughput scaled, so they carry its relative error.

`compare(a, b)` is the ratio a / b with a 95% interval, taken on its log: the relative errors add in
quadrature, with Welch-Satterthwaite degrees of freedom. A difference whose interval includes no
change is "within noise", and nothing else may rest on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats.intervals import t_quantile
from sweep.core import records as rec
from sweep.core.summary import latency_samples_ms, measured

BOOTSTRAP_DRAWS = 400
MAX_WINDOWS, MIN_WINDOWS, REQUESTS_PER_WINDOW = 20, 3, 4
LEVEL = 0.95
THROUGHPUT = rec.OUTPUT_THROUGHPUT
# Metrics the comparisons judge, and whether a higher value is the better one.
HIGHER_IS_BETTER: dict[str, bool] = {
    THROUGHPUT: True,
    rec.THROUGHPUT_PER_GPU: True,
    rec.COST_PER_1M_OUTPUT: False,
    **{rec.latency_column(m, s): False for m in ("ttft", "tpot", "e2e") for s in rec.LATENCY_STATS},
}
# Metrics that are the trial's throughput scaled by a constant: they carry its relative error.
SCALED_THROUGHPUT = (rec.THROUGHPUT_PER_GPU, rec.COST_PER_1M_OUTPUT)
REPEATS, BOOTSTRAP = "repeats", "bootstrap"
WITHIN_NOISE, BETTER, WORSE, NO_INTERVAL = "within noise", "better", "worse", "no interval"


@dataclass(frozen=True)
class Estimate:
    """A metric of one configuration: value, standard error, degrees of freedom, method."""

    value: float
    se: float
    df: float  # math.inf for a bootstrap
    trials: int
    method: str  # REPEATS or BOOTSTRAP

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """Two-sided interval of the value (NaN where the error is unknown)."""
        if not math.isfinite(self.se):
            return math.nan, math.nan
        half = t_quantile(level, self.df) * self.se
        return self.value - half, self.value + half


@dataclass(frozen=True)
class Difference:
    """a against b: the ratio a / b, its interval and the verdict (better, worse, within noise)."""

    ratio: float
    low: float
    high: float
    verdict: str

    @property
    def change_pct(self) -> float:
        """The ratio as a change in percent."""
        return (self.ratio - 1.0) * 100.0

    def text(self) -> str:
        """`2.95x [2.61x, 3.29x]` for large ratios, `+4.1% [-2.0%, +10.3%]` for small ones."""
        if not math.isfinite(self.ratio):
            return "n/a"
        if self.ratio >= 1.5 or self.ratio <= 1 / 1.5:
            return f"{self.ratio:.2f}x [{self.low:.2f}x, {self.high:.2f}x]"
        return (
            f"{self.change_pct:+.1f}% [{(self.low - 1) * 100:+.1f}%, {(self.high - 1) * 100:+.1f}%]"
        )


def compare(
    a: Estimate, b: Estimate, higher_is_better: bool, level: float = LEVEL, margin: float = 0.0
) -> Difference:
    """Judge a against b: better or worse only when the interval of a / b excludes 1.

    The interval is taken on the log of the ratio (delta method: relative errors add in
    quadrature), so it stays positive and a / b and b / a get mirrored intervals. With a
    `margin` (0.05: 5%), the interval must also lie wholly beyond 1 + margin (or below
    1 / (1 + margin)): a difference smaller than that is judged within noise even where the
    interval excludes 1.
    """
    if not (math.isfinite(a.value) and math.isfinite(b.value)) or a.value <= 0 or b.value <= 0:
        return Difference(math.nan, math.nan, math.nan, NO_INTERVAL)
    ratio = a.value / b.value
    se_log = math.hypot(a.se / a.value, b.se / b.value)
    if not math.isfinite(se_log):
        return Difference(ratio, math.nan, math.nan, NO_INTERVAL)
    half = t_quantile(level, welch_df(a, b)) * se_log
    low, high = ratio * math.exp(-half), ratio * math.exp(half)
    if low <= 1.0 + margin and high >= 1.0 / (1.0 + margin):
        verdict = WITHIN_NOISE
    else:
        verdict = BETTER if (ratio > 1.0) == higher_is_better else WORSE
    return Difference(ratio, low, high, verdict)


def welch_df(a: Estimate, b: Estimate) -> float:
    """Welch-Satterthwaite degrees of freedom of the log ratio (a bootstrap side is infinite)."""
    va, vb = (a.se / a.value) ** 2, (b.se / b.value) ** 2
    denominator = sum(
        v**2 / df for v, df in ((va, a.df), (vb, b.df)) if math.isfinite(df) and df > 0
    )
    if denominator == 0:
        return math.inf
    return (va + vb) ** 2 / denominator


def estimates(
    trials: pd.DataFrame,
    requests: pd.DataFrame | None,
    configurations: pd.Series,
    metrics: tuple[str, ...],
) -> dict[str, dict[str, Estimate]]:
    """Map configuration -> metric -> Estimate, over the successful trials of each configuration.

    Args:
        trials: one row per trial (the summary plus derived columns such as throughput per GPU).
        requests: the trials' request records, for the bootstrap; None: single trials get no error.
        configurations: the configuration name of each trial (index aligned with `trials`).
        metrics: summary columns to estimate.
    """
    ok = trials[rec.TRIAL_STATUS] == rec.STATUS_OK
    errors = trial_errors(trials[ok & single_valued(trials, configurations, metrics)], requests,
                          metrics)  # fmt: skip
    result: dict[str, dict[str, Estimate]] = {}
    for name, group in trials[ok].groupby(configurations[ok], sort=True):
        result[str(name)] = {m: _estimate(group, errors, m) for m in metrics}
    return result


def single_valued(
    trials: pd.DataFrame, configurations: pd.Series, metrics: tuple[str, ...]
) -> pd.Series:
    """Trials whose configuration has one value of some metric: only their errors are needed.

    A configuration with two or more values of a metric takes its interval from its repeats
    (`_estimate`), so the bootstrap over a trial's requests, which costs most of the analysis of
    a large sweep, runs only where a single trial stands for its configuration.
    """
    ok = trials[rec.TRIAL_STATUS] == rec.STATUS_OK
    present = [m for m in metrics if m in trials]
    if not present:
        return pd.Series(False, index=trials.index)
    values = trials[present].apply(pd.to_numeric, errors="coerce").notna() & ok.to_numpy()[:, None]
    counts = values.groupby(configurations.astype(str)).transform("sum")
    return ((counts == 1) & values).any(axis=1)


def trial_errors(
    trials: pd.DataFrame, requests: pd.DataFrame | None, metrics: tuple[str, ...]
) -> dict[str, dict[str, tuple[float, float]]]:
    """trial_id -> metric -> (standard error, degrees of freedom) from the trial's own requests."""
    known = requests is not None and len(requests) and rec.TRIAL_ID in requests
    by_trial = dict(tuple(requests.groupby(rec.TRIAL_ID))) if known else {}
    errors: dict[str, dict[str, tuple[float, float]]] = {}
    for _, trial in trials.iterrows():
        trial_id = trial.get(rec.TRIAL_ID)
        own = by_trial.get(trial_id)
        errors[trial_id] = {} if own is None else _own_errors(trial, own, metrics)
    return errors


def _own_errors(
    trial: pd.Series, requests: pd.DataFrame, metrics: tuple[str, ...]
) -> dict[str, tuple[float, float]]:
    ok = measured(requests)
    samples = latency_samples_ms(requests)
    rng = np.random.default_rng(0)
    errors: dict[str, tuple[float, float]] = {}
    throughput = _throughput_error(ok)
    for metric in metrics:
        if metric == THROUGHPUT:
            errors[metric] = throughput
        elif metric in SCALED_THROUGHPUT:
            value, base = _number(trial.get(metric)), _number(trial.get(THROUGHPUT))
            scale = value / base if base else math.nan
            errors[metric] = (abs(scale) * throughput[0], throughput[1])
        elif (parts := _latency_parts(metric)) is not None:
            errors[metric] = (_bootstrap_se(samples[parts[0]], parts[1], rng), math.inf)
    return errors


def _throughput_error(ok: pd.DataFrame) -> tuple[float, float]:
    """Standard error of output tok/s from its spread over equal windows of the measured span."""
    rates = window_rates(ok)
    if rates.size < 2:
        return math.nan, math.nan
    return float(rates.std(ddof=1) / math.sqrt(rates.size)), float(rates.size - 1)


def window_rates(ok: pd.DataFrame) -> np.ndarray:
    """Output tok/s in each of W equal windows of [first send, last end] (W grows with requests).

    A request's tokens are spread evenly from its first token to its end; their mean over the
    windows is the trial's output tok/s.
    """
    if ok.empty:
        return np.empty(0)
    sent = pd.to_numeric(ok[rec.SENT_S], errors="coerce").to_numpy(float)
    end = pd.to_numeric(ok[rec.END_S], errors="coerce").to_numpy(float)
    first = pd.to_numeric(ok[rec.FIRST_TOKEN_S], errors="coerce").to_numpy(float)
    tokens = pd.to_numeric(ok[rec.OUTPUT_TOKENS], errors="coerce").to_numpy(float)
    first = np.where(np.isnan(first), end, first)
    start, stop = np.nanmin(sent), np.nanmax(end)
    if not (np.isfinite(start) and np.isfinite(stop)) or stop <= start:
        return np.empty(0)
    count = int(np.clip(len(ok) // REQUESTS_PER_WINDOW, MIN_WINDOWS, MAX_WINDOWS))
    edges = np.linspace(start, stop, count + 1)
    width = edges[1] - edges[0]
    per_window = np.zeros(count)
    for lo, hi, n in zip(first, end, tokens, strict=True):
        if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(n)) or n <= 0:
            continue
        if hi <= lo:  # every token at once
            per_window[min(int((hi - start) / width), count - 1)] += n
            continue
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
        per_window += n * overlap / (hi - lo)
    return per_window / width


def resamples(count: int, rng: np.random.Generator) -> np.ndarray:
    """`BOOTSTRAP_DRAWS` resamples of `count` items with replacement: their indices, one a row."""
    return rng.integers(0, count, size=(BOOTSTRAP_DRAWS, count))


def _bootstrap_se(values: np.ndarray, stat: str, rng: np.random.Generator) -> float:
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan
    draws = values[resamples(values.size, rng)]
    if stat == "mean":
        results = draws.mean(axis=1)
    else:
        q = 50.0 if stat == "median" else float(stat.removeprefix("p"))
        results = np.percentile(draws, q, axis=1)
    return float(results.std(ddof=1))


def _latency_parts(metric: str) -> tuple[str, str] | None:
    for name in rec.LATENCY_METRICS:
        for stat in rec.LATENCY_STATS:
            if metric == rec.latency_column(name, stat):
                return name, stat
    return None


def _estimate(
    group: pd.DataFrame, errors: Mapping[str, Mapping[str, tuple[float, float]]], metric: str
) -> Estimate:
    values = pd.to_numeric(group.get(metric), errors="coerce") if metric in group else None
    if values is None or values.notna().sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, BOOTSTRAP)
    values = values.dropna()
    if len(values) >= 2:
        se = float(values.std(ddof=1) / math.sqrt(len(values)))
        return Estimate(float(values.mean()), se, float(len(values) - 1), len(values), REPEATS)
    trial_id = group.loc[values.index[0]].get(rec.TRIAL_ID)
    se, df = errors.get(trial_id, {}).get(metric, (math.nan, math.nan))
    return Estimate(float(values.iloc[0]), se, df, 1, BOOTSTRAP)


def method_text(found: Mapping[str, Mapping[str, Estimate]]) -> str:
    """How the intervals of a set of estimates were made, in one sentence for the report."""
    methods = {e.method for per in found.values() for e in per.values() if e.trials}
    repeats = sorted({e.trials for per in found.values() for e in per.values() if e.trials > 1})
    parts = []
    if REPEATS in methods:
        counts = "/".join(str(n) for n in repeats)
        parts.append(f"from the {counts} repeats of each configuration (Student t)")
    if BOOTSTRAP in methods:
        parts.append(
            "from each single trial's own requests (a bootstrap over its requests for latency "
            "statistics, its spread over equal time windows for throughput), which cannot see "
            "run-to-run noise"
        )
    return "Intervals are 95%, " + "; and ".join(parts) + "." if parts else ""


def _number(value: object) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
