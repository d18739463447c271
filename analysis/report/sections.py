"""Report sections, their Markdown rendering, and the sections of the comparative analysis.

A report is a title, an overview line and a list of `Section`s (text, bullet points, a table of
display strings, images). report.md (`analysis.report.report`) and report.html
(`analysis.report.html`) render the same list, so the two never disagree. The per-trial sections are
built in `analysis.report.report`; this module builds the comparison ones: against the baseline,
Pareto front, goodput under SLOs, roofline, resource timelines, the capacity of each searched
configuration, and the table of a multi-sweep comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.figures.capacity_plots import CAPACITY_TITLES
from analysis.figures.timeline_plots import TIMELINE_TITLES
from analysis.read.columns import (
    CONFIGURATION,
    LATENCY_MS,
    display_text,
    load_values,
    series_labels,
)
from analysis.stats import capacity as cap
from analysis.stats.compare import LOAD, TASK, TPOT_MEDIAN, Comparison
from analysis.stats.noise import WITHIN_NOISE
from analysis.stats.sweep_diff import SweepDiff
from sweep.core import records as rec

MISSING = "—"
NOT_MEASURED = "not measured"
_AXES = {cap.RATE_AXIS: "rate", cap.CONCURRENCY_AXIS: "concurrency"}
_SIDE_STATS = ("mean", *rec.CI_STATS[1:])
# Display name and number format of the metrics a sweep comparison shows.
DIFF_METRICS = {
    rec.OUTPUT_THROUGHPUT: ("Output tok/s", ",.1f"),
    rec.latency_column("ttft", "median"): ("TTFT p50 (ms)", ",.2f"),
    rec.latency_column("tpot", "median"): ("TPOT p50 (ms)", ",.3f"),
    rec.COST_PER_1M_OUTPUT: ("USD / 1M output tok", ",.4f"),
}


# A reasoning model's time to its answer's first token, shown beside TTFT where a trial reasoned.
ANSWER_COLUMNS = {
    "Time to answer p50 (ms)": rec.latency_column(rec.ANSWER, "median"),
    "Time to answer p99 (ms)": rec.latency_column(rec.ANSWER, "p99"),
}


LISTED_UP_TO = 60  # a sweep this size lists its trials in the report; a larger one pools them


def pooled(trials: pd.DataFrame) -> bool:
    """Whether the report pools this sweep's trials (by series and load, or by reason)."""
    return len(trials) > LISTED_UP_TO


@dataclass(frozen=True)
class Image:
    """A PNG file shown in a section, with its caption."""

    title: str
    path: Path


@dataclass(frozen=True)
class Section:
    """One titled part of a report; every part is optional but the title."""

    title: str
    text: str = ""
    items: tuple[str, ...] = ()
    table: pd.DataFrame | None = None
    images: tuple[Image, ...] = ()
    # Rows too many to read, to browse: a sortable, filterable table in report.html; in
    # report.md, a line naming the CSV file that holds them (`browse_csv`).
    browse: pd.DataFrame | None = None
    browse_csv: str = ""


def markdown_document(title: str, overview: str, sections: list[Section], out_dir: Path) -> str:
    """The Markdown text of a report; images are linked relative to `out_dir`."""
    parts = [f"# {title}", overview]
    for section in sections:
        parts.append(f"## {section.title}")
        parts.extend(filter(None, [section.text, "\n".join(f"- {i}" for i in section.items)]))
        if section.table is not None:
            parts.append(markdown_table(section.table))
        if section.browse is not None:
            rows = len(section.browse)
            parts.append(f"{rows:,} rows in `{section.browse_csv}` (and in report.html).")
        parts.extend(
            f"![{i.title}]({i.path.relative_to(out_dir).as_posix()})" for i in section.images
        )
    return "\n\n".join(parts) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; numeric-looking columns are right-aligned."""
    cells = frame.astype(str).map(_cell)
    align = ["---:" if numeric_looking(cells[c]) else "---" for c in cells]
    lines = [
        "| " + " | ".join(map(_cell, frame.columns)) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)),
    ]
    return "\n".join(lines)


def numeric_looking(cells: pd.Series) -> bool:
    """Whether a column of display strings holds numbers (to right-align it)."""
    return bool(cells.astype(str).str.fullmatch(r"[\d,.\-—/ \[\]%×+]+").all())


def formatted(values: pd.Series | None, fmt: str, scale: float = 1.0) -> pd.Series:
    """Numbers as display strings (`format(v, fmt)`), MISSING for null or non-numbers."""
    numbers = pd.to_numeric(values, errors="coerce") * scale
    return numbers.map(lambda v: MISSING if pd.isna(v) else format(v, fmt))


def measured(cells: pd.Series, table: pd.DataFrame) -> pd.Series:
    """Display cells of an energy figure: "not measured" where the row's energy method says so."""
    if rec.ENERGY_METHOD not in table:
        return cells  # results written before energy was recorded: MISSING
    unmeasured = table[rec.ENERGY_METHOD].eq(rec.ENERGY_NOT_MEASURED).to_numpy()
    return cells.mask(unmeasured, NOT_MEASURED)


def comparison_sections(comparison: Comparison, pareto_png: Path) -> list[Section]:
    """Against the baseline, Pareto front, goodput under SLOs (when any) and roofline."""
    sections = [_decomposition(comparison), _pareto(comparison, pareto_png)]
    if not comparison.slo.empty:
        sections.append(_slo(comparison.slo))
    return [*sections, _roofline(comparison)]


def timeline_section(images: list[Path]) -> Section:
    """The resource timelines, or a line saying none was sampled."""
    if not images:
        return Section("Timelines", "No trial recorded KV-cache or memory samples.")
    return Section(
        "Timelines",
        "KV-cache usage and memory over each trial, as the telemetry sampler recorded them.",
        images=tuple(Image(TIMELINE_TITLES.get(p.name, p.stem), p) for p in images),
    )


def capacity_section(
    table: pd.DataFrame, images: list[Path], target_rate: float | None = None
) -> list[Section]:
    """The capacity table and its figures; nothing when no search ran."""
    if table.empty:
        return []
    text = (
        "Each search's capacity is the highest offered load whose probe met the SLO (0: it failed "
        "at every load); above it, the first load that failed and why, or none when it passed up "
        "to the highest load tried (a lower bound). A closed loop (concurrency axis) offers "
        "streams, so its capacity in req/s is the request throughput achieved at that "
        "concurrency. Gap: first failing load / capacity - 1. Cost at capacity = price x GPUs / "
        "3600 / output tok/s x 1e6; req/s per USD-hour = capacity / (price x GPUs)."
    )
    if target_rate is not None:
        text += (
            f" For {target_rate:g} req/s: replicas = ceil({target_rate:g} / capacity in req/s), "
            "GPUs = replicas x GPUs per replica, USD / hour = replicas x price x GPUs."
        )
    shown = tuple(Image(CAPACITY_TITLES.get(p.name, p.stem), p) for p in images)
    return [Section("Capacity within the SLO", text, table=capacity_display(table), images=shown)]


def capacity_display(table: pd.DataFrame) -> pd.DataFrame:
    """`analysis.stats.capacity.capacity_table` as display strings, units in the headers."""
    lower = table.get(cap.LOWER_BOUND, pd.Series(False, index=table.index)).fillna(False)
    failing = formatted(table[cap.FAILING_LOAD], ",.4g").where(
        ~lower.astype(bool), "none (lower bound)"
    )
    shown = {
        "Configuration": table[cap.CONFIGURATION],
        "Mode": table[rec.SEARCH_MODE].map(lambda m: m or MISSING),
        "Load axis": table[rec.SEARCH_AXIS].map(lambda a: _AXES.get(a, a or MISSING)),
        "Capacity (load)": formatted(table[cap.CAPACITY_LOAD], ",.4g"),
        "Capacity (req/s)": formatted(table[cap.CAPACITY_REQ_S], ",.3g"),
        "Achieved req/s": formatted(table[rec.REQUEST_THROUGHPUT], ",.3g"),
        "Output tok/s": formatted(table[rec.OUTPUT_THROUGHPUT], ",.1f"),
        **{_latency_name(c): formatted(table[c], ",.1f") for c in _latency_columns(table)},
        "Goodput met (%)": formatted(table[rec.SLO_ATTAINED_FRACTION], ",.1f", scale=100),
        "SLO": table[cap.SLO_TEXT].map(lambda t: t or MISSING),
        "First failing load": failing,
        "Why it failed": table[cap.FAILING_REASON].fillna("").map(lambda t: t or MISSING),
        "Probes": table[cap.PROBES].astype(str),
        "Gap (%)": formatted(table[cap.RELATIVE_GAP], ",.1f", scale=100),
        "USD / 1M output tok": formatted(table[rec.COST_PER_1M_OUTPUT], ",.3f"),
        "req/s per USD-hour": formatted(table[cap.REQ_S_PER_USD_HOUR], ",.3g"),
        "req/s per kW": measured(formatted(table[cap.REQ_S_PER_KW], ",.3g"), table),
        "Wh / 1M output tok": measured(
            formatted(table[rec.ENERGY_WH_PER_1M_OUTPUT], ",.3g"), table
        ),
    }
    if table[rec.SLO_ATTAINED_FRACTION].isna().all():
        del shown["Goodput met (%)"]
    if cap.CONVERGED in table:
        shown["Converged"] = table[cap.CONVERGED].map({True: "yes", False: "no"}).fillna(MISSING)
    if cap.REPLICAS in table:
        shown["Replicas for target"] = formatted(table[cap.REPLICAS], ".0f")
        shown["GPUs for target"] = formatted(table[cap.TARGET_GPUS], ".0f")
        shown["USD / hour for target"] = formatted(table[cap.TARGET_USD_PER_HOUR], ",.2f")
    return pd.DataFrame(shown)


def sweep_diff_section(diff: SweepDiff) -> Section:
    """The matched comparison of several sweeps, with the within-noise verdicts."""
    t = diff.table
    table = pd.DataFrame(
        {
            "Point": t["point"],
            "Metric": t["metric"].map(lambda m: DIFF_METRICS.get(m, (m, ""))[0]),
            "Sweep": t["sweep"],
        }
    )
    for prefix, name in (("ref_", diff.reference), ("", "compared")):
        table[f"{name}: mean [95% CI]"] = [
            _interval(*values, fmt=DIFF_METRICS.get(metric, ("", ",.2f"))[1])
            for metric, *values in zip(
                t["metric"], *(t[prefix + c] for c in _SIDE_STATS), strict=True
            )
        ]
        table[f"{name}: repeats"] = t[f"{prefix}{rec.NUM_REPEATS}"].astype(str)
    table["Change"] = formatted(t["change_pct"], "+,.1f") + "%"
    table["Verdict"] = t["verdict"]
    unmatched = ", ".join(f"{n}: {c}" for n, c in diff.unmatched_points.items())
    text = (
        f"{diff.matched_points} grid point(s) of {diff.reference} matched by trial id or "
        f"config; points without a partner: {unmatched}. With repeats on both sides, intervals "
        "that overlap mark the difference as within noise. Where a side ran once, both sides' "
        "intervals come from the trials' own requests (a bootstrap over requests, time windows "
        "for throughput), which cannot see run-to-run noise, and the difference is within "
        "noise when the interval of their ratio includes no change."
    )
    return Section("Sweeps compared", text, table=table)


def _latency_columns(table: pd.DataFrame) -> list[str]:
    """The latency statistics of a capacity table: between output tok/s and the SLO fraction."""
    columns = list(table.columns)
    start = columns.index(rec.OUTPUT_THROUGHPUT) + 1
    return columns[start : columns.index(rec.SLO_ATTAINED_FRACTION)]


def _latency_name(column: str) -> str:
    """`ttft_ms_p99` as "TTFT p99 (ms)"; other bounded columns keep their name."""
    metric, _, stat = column.partition("_ms_")
    if metric not in rec.LATENCY_METRICS or not stat:
        return column
    name = "Time to answer" if metric == rec.ANSWER else metric.upper()
    return f"{name} {'p50' if stat == 'median' else stat} (ms)"


def _interval(mean: float, low: float, high: float, fmt: str) -> str:
    if pd.isna(low) or pd.isna(high):
        return format(mean, fmt)
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _decomposition(c: Comparison) -> Section:
    d = c.decomposition
    if d.empty:
        return Section("Against the baseline", "No successful trial to compare.")
    table = pd.DataFrame(
        {
            "Task": d[TASK],
            "Load": d[LOAD].map(lambda v: display_text(v) or MISSING),
            "Engine": d["engine"],
            "Output tok/s": formatted(d[rec.OUTPUT_THROUGHPUT], ",.1f"),
            "Throughput ×": ratio_cells(d, "throughput_x"),
            "TTFT p50 (ms)": formatted(d[rec.latency_column("ttft", "median")], ",.1f"),
            "TTFT ×": ratio_cells(d, "ttft_x"),
            "USD / 1M tok": formatted(d[rec.COST_PER_1M_OUTPUT], ",.3f"),
            "Cost ×": ratio_cells(d, "cost_x"),
            "Trials": d["trials"].astype(str),
        }
    )
    baselines = ", ".join(sorted(set(d["baseline"].dropna())))
    asked = f"`{c.baseline}`" if c.baseline else "its backend recorded"
    missing = "not in this sweep" if c.baseline else "none recorded: name one with `--baseline`"
    text = (
        f"Each engine against the baseline {asked} ({baselines or missing}) "
        "at the same task and load: × is engine / baseline, so above 1 is more throughput, "
        "slower first tokens or higher cost, with its 95% interval in brackets. A ratio marked "
        f"*{WITHIN_NOISE}* is not a difference: its interval includes 1. {c.noise_method}"
    )
    return Section("Against the baseline", text, table=table)


def ratio_cells(table: pd.DataFrame, ratio: str) -> pd.Series:
    """`2.95× [2.61, 3.29]`, `1.04× [0.93, 1.15] within noise`, or — without a ratio."""

    def cell(row: pd.Series) -> str:
        value, low, high = row[ratio], row.get(f"{ratio}_low"), row.get(f"{ratio}_high")
        if pd.isna(value):
            return MISSING
        text = f"{value:.2f}×"
        if row.get(f"{ratio}_verdict") == "baseline":
            return text
        if not (pd.isna(low) or pd.isna(high)):
            text += f" [{low:.2f}, {high:.2f}]"
        return text + (f" {WITHIN_NOISE}" if row.get(f"{ratio}_verdict") == WITHIN_NOISE else "")

    return table.apply(cell, axis=1) if len(table) else pd.Series(dtype=object)


def _pareto(c: Comparison, png: Path) -> Section:
    front = c.pareto[c.pareto[rec.ON_PARETO_FRONT]]
    latency = "median TPOT" if c.latency_metric == TPOT_MEDIAN else "median TTFT"
    table = pd.DataFrame(
        {
            "Configuration on the front": front[CONFIGURATION],
            f"Latency, {latency} (ms)": formatted(front[LATENCY_MS], ",.2f"),
            "Output tok/s per GPU": formatted(front[rec.THROUGHPUT_PER_GPU], ",.1f"),
        }
    )
    text = (
        f"{len(c.pareto)} configuration(s); on the front, none is beaten by another that is at "
        f"least as fast per user ({latency}) and as high in output tokens per second per GPU, "
        "and better beyond noise on one of the two: a configuration within noise of a better "
        "one stays on the front."
    )
    return Section(
        "Pareto front", text, table=table, images=(Image("Throughput per GPU vs latency", png),)
    )


def _slo(goodput: pd.DataFrame) -> Section:
    table = pd.DataFrame(
        {
            "Trial": goodput[rec.LABEL],
            "SLO": goodput["slo"],
            "Goodput (req/s)": formatted(goodput[rec.SLO_GOODPUT], ",.2f"),
            "Goodput output tok/s": formatted(goodput[rec.SLO_GOODPUT_OUTPUT_THROUGHPUT], ",.1f"),
            "USD / 1M tok at SLO": formatted(goodput[rec.SLO_COST_PER_1M_OUTPUT], ",.3f"),
        }
    )
    text = (
        "Only requests meeting every bound count. Cost at the SLO = price x GPUs / 3600 / "
        "(output tok/s of those requests) x 1e6; — where no request met the SLO."
    )
    return Section("Goodput under SLOs", text, table=table)


def _roofline(c: Comparison) -> Section:
    ok = c.trials[c.trials[rec.TRIAL_STATUS] == rec.STATUS_OK]
    rows = ok
    if pooled(c.trials):  # one row per series and load: the mean over its repeats
        keys = [series_labels(ok).rename("Series"), load_values(ok).rename("Load")]
        rows = ok.groupby(keys, dropna=False, sort=True).agg(
            {rec.MBU: "mean", rec.MFU: "mean", rec.ROOFLINE_BASIS: "first"}
        )
        first = {"Series": rows.index.get_level_values(0),
                 "Load": [display_text(v) for v in rows.index.get_level_values(1)]}  # fmt: skip
    else:
        first = {"Trial": ok.get(rec.LABEL, ok[rec.TRIAL_ID])}
    table = pd.DataFrame(
        {
            **first,
            "MBU (%)": formatted(rows[rec.MBU], ",.2f", scale=100),
            "MFU (%)": formatted(rows[rec.MFU], ",.3f", scale=100),
            "MBU counts": rows[rec.ROOFLINE_BASIS],
        }
    ).reset_index(drop=True)
    text = (
        "MBU: bytes read per decode step x steps per second / memory bandwidth (of all GPUs). "
        "MFU: 2 x parameters x output tok/s / peak fp16 FLOP/s. Missing where the model's size "
        "or the hardware's figures are not in the summary."
    )
    if pooled(c.trials):
        text += " Means over the repeats of each series and load."
    return Section("Roofline", text, items=tuple(c.notes), table=table)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (one line, no column breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")
