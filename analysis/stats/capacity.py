"""The capacity of each configuration under its SLO, and what serving a target load costs.

A capacity search (`search=capacity` or `search=profile`) records each probe as an ordinary trial
whose summary row carries the search columns (`records.SEARCH_*`, `records.SLO_*`). Here
`search_probes` picks those rows out and names their configuration, and `capacity_table` turns
them into one row per search: the highest offered load whose probe met the SLO, what was
measured there, the first failing load above it and why it failed, the cost at capacity and,
for a target rate, the replicas, GPUs and dollars per hour it takes. Rows without a search id are
grid trials and are ignored; a frame without search columns gives an empty table.

Capacity in req/s: on the request-rate axis it is the offered rate found; on the concurrency axis
(closed loops) it is the request throughput achieved at the capacity concurrency, since a
closed loop offers streams, not a rate. The profile mode's synchronous and maximum-throughput
probes offer no rate either; they sit at the rate they achieved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.read.columns import (
    CONFIGURATION,
    NO_SERIES,
    display_text,
    number,
    numeric_column,
    reasoned,
    series_labels,
    text_column,
)
from sweep.core import records as rec
from sweep.core.summary import cost_per_1m_output

RATE_AXIS = "workload.request_rate"
CONCURRENCY_AXIS = "workload.concurrency"
UNOFFERED_PHASES = ("synchronous", "throughput")  # profile probes with no offered rate
LOAD, PASSED, REASON = "load", "passed", "reason"  # columns of `search_probes`
CAPACITY_LOAD = "capacity_load"
CAPACITY_REQ_S = "capacity_req_s"
FAILING_LOAD = "failing_load"
FAILING_REASON = "failing_reason"
LOWER_BOUND = "lower_bound"  # no probe failed above the capacity: it is at least this much
PROBES = "probes"
RELATIVE_GAP = "relative_gap"
CONVERGED = "converged"
SLO_TEXT = "slo"
USD_PER_HOUR = "usd_per_hour"  # one replica
REQ_S_PER_USD_HOUR = "req_s_per_usd_hour"
REQ_S_PER_KW = "req_s_per_kw"  # capacity in req/s / the mean power at capacity in kW
REPLICAS = "replicas"
TARGET_GPUS = "target_gpus"
TARGET_USD_PER_HOUR = "target_usd_per_hour"
ALWAYS_SHOWN = (rec.latency_column("ttft", "p99"), rec.latency_column("tpot", "p99"))
_SEPARATOR = "-"


def search_probes(trials: pd.DataFrame) -> pd.DataFrame:
    """The probe rows of every search, with `configuration`, `load`, `passed` and `reason` added.

    `passed` is True only for a successful trial that met the SLO; a probe without a verdict
    (no SLO set) is None. Empty when no row has a search id.
    """
    if rec.SEARCH_ID not in trials or trials[rec.SEARCH_ID].isna().all():
        return trials.iloc[:0].assign(**{CONFIGURATION: [], LOAD: [], PASSED: [], REASON: []})
    probes = trials[trials[rec.SEARCH_ID].notna()].copy()
    ok = text_column(probes, rec.TRIAL_STATUS).isin(["", rec.STATUS_OK])
    verdict = probes.get(rec.SLO_PASSED, pd.Series(None, index=probes.index)).astype(object)
    held = [bool(slo_text(row)) for _, row in probes.iterrows()]
    probes[PASSED] = [_passed(*args) for args in zip(verdict, ok, held, strict=True)]
    unoffered = text_column(probes, rec.SEARCH_PHASE).isin(UNOFFERED_PHASES)
    probes[LOAD] = numeric_column(probes, rec.SEARCH_LOAD).mask(
        unoffered, numeric_column(probes, rec.REQUEST_THROUGHPUT)
    )
    probes[REASON] = _reasons(probes)
    probes[CONFIGURATION] = probes[rec.SEARCH_ID].map(_configuration_names(probes))
    return probes


def capacity_table(
    trials: pd.DataFrame, target_rate: float | None = None, tolerance: float | None = None
) -> pd.DataFrame:
    """One row per search: capacity, the measurements there, cost and, for a target, replicas.

    Args:
        trials: the summary (one row per trial); grid trials without a search id are ignored.
        target_rate: a load to serve in req/s; adds replicas, GPUs and USD per hour for it.
        tolerance: the search's relative tolerance (`search.tolerance`, in sweep.yaml, not in the
            rows); adds `converged`: passing and failing loads within it of each other.

    Returns:
        Columns search id, configuration, mode, axis, capacity (load and req/s), achieved req/s
        and output tok/s, the SLO's latency statistics and TTFT/TPOT p99 at capacity, the SLO,
        the first failing load above and its reason, probes, relative gap (failing / capacity
        - 1), cost per 1M output tokens, req/s per USD-hour, the energy at capacity (req/s per
        kW of mean power, Wh per 1M output tokens, mean power, the energy method), and the
        target columns; the most req/s per dollar first. Capacity is 0 when no probe passed
        (the reason is the lowest failing probe's) and NaN when no probe has an SLO verdict.
    """
    probes = search_probes(trials)
    if probes.empty:
        return pd.DataFrame(columns=_columns(list(ALWAYS_SHOWN)))
    shown = [*ALWAYS_SHOWN, *([rec.latency_column(rec.ANSWER, "p99")] if reasoned(probes) else [])]
    latencies = sorted({c for c in _slo_columns(probes) + shown if c in probes}, key=_latency_order)
    rows = [_search_row(p, latencies) for _, p in probes.groupby(rec.SEARCH_ID, sort=True)]
    table = pd.DataFrame(rows, columns=_columns(latencies))
    if tolerance is not None:
        table[CONVERGED] = table[RELATIVE_GAP].map(lambda g: None if pd.isna(g) else g <= tolerance)
    if target_rate is not None:
        usable = table[CAPACITY_REQ_S].where(table[CAPACITY_REQ_S] > 0)
        table[REPLICAS] = (target_rate / usable).map(lambda r: r if pd.isna(r) else math.ceil(r))
        table[TARGET_GPUS] = table[REPLICAS] * table[rec.BACKEND_NUM_GPUS]
        table[TARGET_USD_PER_HOUR] = table[REPLICAS] * table[USD_PER_HOUR]
    order = [REQ_S_PER_USD_HOUR, CAPACITY_REQ_S, CONFIGURATION]
    return table.sort_values(
        order, ascending=[False, False, True], na_position="last", ignore_index=True
    )


def slo_limits(probe: pd.Series) -> dict[str, float]:
    """Summary column -> upper bound, for every trial-level limit of a probe's `slo.*` config."""
    limits = {}
    for key, value in probe.items():
        name = str(key).removeprefix(rec.SLO_PREFIX)
        if str(key).startswith(rec.SLO_PREFIX) and "_ms_" in name and pd.notna(value):
            limits[name] = float(value)
    extra = probe.get(f"{rec.SLO_PREFIX}limits")
    if isinstance(extra, str) and extra.strip():
        limits.update({k: float(v) for k, v in json.loads(extra).items()})
    return limits


def slo_text(probe: pd.Series) -> str:
    """`ttft_ms_p99<=500, goodput>=95% of ttft_ms<=300`: the bounds a probe was held to."""
    parts = [f"{key}<={bound:g}" for key, bound in slo_limits(probe).items()]
    fraction = pd.to_numeric(probe.get(f"{rec.SLO_PREFIX}goodput_fraction"), errors="coerce")
    if pd.notna(fraction):
        bounds = [
            f"{key}<={probe[f'{rec.SLO_PREFIX}{key}']:g}"
            for key in ("ttft_ms", "tpot_ms", "e2e_ms")
            if pd.notna(pd.to_numeric(probe.get(f"{rec.SLO_PREFIX}{key}"), errors="coerce"))
        ]
        parts.append(f"goodput>={fraction:.0%} of {' and '.join(bounds)}")
    return ", ".join(parts)


def search_settings(results_dir: str | Path) -> tuple[float | None, float | None]:
    """`search.target_rate` and `search.tolerance` of a results folder's sweep.yaml.

    The search settings are not in the summary rows, only in the composed config the sweep
    wrote; (None, None) without that file or a search group in it.
    """
    path = Path(results_dir) / rec.SWEEP_YAML
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    search = ((meta or {}).get("config") or {}).get("search") or {}
    return number(search.get("target_rate")), number(search.get("tolerance"))


def with_search(options: Any, results_dir: str | Path) -> Any:
    """`options` (report options) with the sweep's target rate and tolerance where it has none."""
    target_rate, tolerance = search_settings(results_dir)
    return dataclasses.replace(
        options,
        target_rate=options.target_rate or target_rate,
        tolerance=options.tolerance or tolerance,
    )


def _search_row(probes: pd.DataFrame, latencies: list[str]) -> dict[str, Any]:
    first = probes.iloc[0]
    judged = probes[probes[PASSED].notna() & probes[LOAD].notna()]
    failing = judged[~judged[PASSED].astype(bool)].sort_values(LOAD)
    # A load passes only if every probe there did (repeats of a load may disagree).
    passing = judged[judged[PASSED].astype(bool) & ~judged[LOAD].isin(failing[LOAD])]
    price = number(first.get(rec.HARDWARE_PRICE_PER_HOUR))
    gpus = int(number(first.get(rec.BACKEND_NUM_GPUS)) or 0)
    row: dict[str, Any] = {
        rec.SEARCH_ID: first[rec.SEARCH_ID],
        CONFIGURATION: first[CONFIGURATION],
        rec.SEARCH_MODE: first.get(rec.SEARCH_MODE),
        rec.SEARCH_AXIS: first.get(rec.SEARCH_AXIS),
        SLO_TEXT: slo_text(first),
        PROBES: len(probes),
        rec.BACKEND_NUM_GPUS: gpus,
        USD_PER_HOUR: None if price is None else max(gpus, 1) * price,
    }
    if judged.empty:
        return {**row, FAILING_REASON: "no probe has an SLO verdict (no SLO set)"}
    load = float(passing[LOAD].max()) if len(passing) else 0.0
    at = passing[passing[LOAD] == load]
    above = failing[failing[LOAD] > load]
    achieved = _mean(at, rec.REQUEST_THROUGHPUT)
    output = _mean(at, rec.OUTPUT_THROUGHPUT)
    by_rate = first.get(rec.SEARCH_AXIS) != CONCURRENCY_AXIS
    req_s = load if by_rate or at.empty else achieved
    row.update(
        {
            CAPACITY_LOAD: load,
            CAPACITY_REQ_S: req_s,
            rec.REQUEST_THROUGHPUT: achieved,
            rec.OUTPUT_THROUGHPUT: output,
            **{column: _mean(at, column) for column in latencies},
            rec.SLO_ATTAINED_FRACTION: _mean(at, rec.SLO_ATTAINED_FRACTION),
            FAILING_LOAD: above[LOAD].iloc[0] if len(above) else None,
            FAILING_REASON: above[REASON].iloc[0] if len(above) else "",
            LOWER_BOUND: above.empty and not at.empty,
            RELATIVE_GAP: above[LOAD].iloc[0] / load - 1 if len(above) and load > 0 else None,
            REQ_S_PER_USD_HOUR: req_s / row[USD_PER_HOUR] if price and req_s is not None else None,
        }
    )
    if price is not None and output is not None:
        row[rec.COST_PER_1M_OUTPUT] = cost_per_1m_output(output, gpus, price)
    row.update(_energy_at(at, req_s))
    return row


def _energy_at(at: pd.DataFrame, req_s: float | None) -> dict[str, Any]:
    """Energy at capacity: mean power and Wh per 1M output tokens there, req/s per kW, method."""
    methods = text_column(at, rec.ENERGY_METHOD)
    methods = methods[methods != ""]
    if methods.empty:  # no probe at capacity, or results from before energy was recorded
        return {}
    if (methods == rec.ENERGY_NOT_MEASURED).any():  # a mean of the others would look right
        return {rec.ENERGY_METHOD: rec.ENERGY_NOT_MEASURED}
    power = _mean(at, rec.MEAN_POWER_W)
    used = {m for joined in methods for m in joined.split(rec.ENERGY_METHOD_SEPARATOR)}
    return {
        rec.MEAN_POWER_W: power,
        rec.ENERGY_WH_PER_1M_OUTPUT: _mean(at, rec.ENERGY_WH_PER_1M_OUTPUT),
        REQ_S_PER_KW: req_s / (power / 1e3) if power and req_s is not None else None,
        rec.ENERGY_METHOD: rec.ENERGY_METHOD_SEPARATOR.join(sorted(used)),
    }


def _columns(latencies: list[str]) -> list[str]:
    return [
        rec.SEARCH_ID, CONFIGURATION, rec.SEARCH_MODE, rec.SEARCH_AXIS, CAPACITY_LOAD,
        CAPACITY_REQ_S, rec.REQUEST_THROUGHPUT, rec.OUTPUT_THROUGHPUT, *latencies,
        rec.SLO_ATTAINED_FRACTION, SLO_TEXT, FAILING_LOAD, FAILING_REASON, LOWER_BOUND, PROBES,
        RELATIVE_GAP, rec.COST_PER_1M_OUTPUT, REQ_S_PER_USD_HOUR, rec.BACKEND_NUM_GPUS,
        USD_PER_HOUR, REQ_S_PER_KW, rec.ENERGY_WH_PER_1M_OUTPUT, rec.MEAN_POWER_W,
        rec.ENERGY_METHOD,
    ]  # fmt: skip


def _latency_order(column: str) -> tuple[int, str]:
    """TTFT, TPOT, ITL, E2E statistics in the order of `records`, then other bounded columns."""
    known = [rec.latency_column(m, s) for m in rec.LATENCY_METRICS for s in rec.LATENCY_STATS]
    return (known.index(column) if column in known else len(known), column)


def _slo_columns(probes: pd.DataFrame) -> list[str]:
    """Every summary column some search's SLO bounds, in the order first met."""
    seen: dict[str, None] = {}
    for _, first in probes.groupby(rec.SEARCH_ID, sort=True).head(1).iterrows():
        seen.update(dict.fromkeys(slo_limits(first)))
    return list(seen)


def _reasons(probes: pd.DataFrame) -> list[str]:
    """Why each failing probe failed: its SLO reason, else its error kind."""
    reasons = text_column(probes, rec.SLO_REASON)
    errors = text_column(probes, rec.ERROR_KIND)
    status = text_column(probes, rec.TRIAL_STATUS)
    return [
        reason or (f"trial failed: {error or 'error'}" if state == rec.STATUS_FAILED else "")
        for reason, error, state in zip(reasons, errors, status, strict=True)
    ]


def _configuration_names(probes: pd.DataFrame) -> dict[str, str]:
    """Search id -> a readable name: what its probes' labels share, less the load and mode.

    Probe labels are `<point label>-<mode>-r<load>` (`sweep.worker.search_run`); when that leaves
    nothing or two searches the same name, the backend and the settings that differ decide
    (as `analysis.read.columns.series_labels` names lines), then the search id.
    """
    names = {}
    for search_id, group in probes.groupby(rec.SEARCH_ID, sort=True):
        tokens = [_label_tokens(row) for _, row in group.iterrows()]
        common = []
        for parts in zip(*tokens, strict=False):  # the shortest label bounds the prefix
            if len(set(parts)) > 1:
                break
            common.append(parts[0])
        mode = display_text(group[rec.SEARCH_MODE].iloc[0]) if rec.SEARCH_MODE in group else ""
        names[search_id] = _SEPARATOR.join(t for t in common if t != mode)
    if any(not n for n in names.values()) or len(set(names.values())) < len(names):
        firsts = probes.groupby(rec.SEARCH_ID, sort=True).head(1).set_index(rec.SEARCH_ID)
        axes = [c for c in (RATE_AXIS, CONCURRENCY_AXIS) if c in firsts]
        series = series_labels(firsts.drop(columns=axes))
        backend = text_column(firsts, rec.BACKEND_NAME)
        names = {s: (series[s] if series[s] != NO_SERIES else backend[s]) or s for s in names}
    counts = pd.Series(list(names.values())).value_counts()
    return {s: f"{n} ({s[:6]})" if counts[n] > 1 else n for s, n in names.items()}


def _label_tokens(probe: pd.Series) -> list[str]:
    tokens = display_text(probe.get(rec.LABEL)).split(_SEPARATOR)
    load = number(probe.get(rec.SEARCH_LOAD))
    shown = "max" if load is None else f"{load:g}"
    if tokens and re.fullmatch(rf"[rc]{re.escape(shown)}", tokens[-1]):
        tokens = tokens[:-1]
    return [t for t in tokens if t]


def _passed(verdict: object, ok: bool, held: bool) -> bool | None:
    """A failed trial held to an SLO fails it; otherwise the verdict decides (None: no verdict)."""
    if verdict is None or pd.isna(verdict):
        return False if held and not ok else None
    return bool(verdict) and ok


def _mean(frame: pd.DataFrame, column: str) -> float | None:
    value = numeric_column(frame, column).mean()
    return None if pd.isna(value) else float(value)
