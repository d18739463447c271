"""The report of a sweep: `summary.csv`, the PNG plots and `report.md`.

`write_report` reads a results folder and writes all three; `save_report` does the same from a
summary frame already in memory (the CLI loads it once and also prints it). `main_table` is the
human-readable table (units in the headers, numbers rounded) that both report.md and the terminal
show; `summary.csv` keeps every column, the main ones first, for further analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.load import load_summary
from analysis.metrics import aggregate_repeats
from analysis.plots import PLOTS, load_axis_label, load_values, series_labels, sweep_title
from analysis.plots import write_plots as _write_plots
from sweep import records as rec

REPORT_FILE = "report.md"
SUMMARY_CSV_FILE = "summary.csv"
TTFT_MEDIAN = rec.latency_column("ttft", "median")
LEADING_COLUMNS = (
    rec.LABEL,
    rec.BACKEND_NAME,
    rec.WORKLOAD_CONCURRENCY,
    rec.WORKLOAD_BATCH_SIZE,
    rec.DATASET_NAME,
    rec.TRIAL_STATUS,
    rec.OUTPUT_THROUGHPUT,
    TTFT_MEDIAN,
    rec.latency_column("ttft", "p99"),
    rec.latency_column("tpot", "median"),
    rec.latency_column("itl", "median"),
    rec.latency_column("e2e", "median"),
    rec.COST_PER_1M_OUTPUT,
)
# Mean lag behind the schedule above which the load generator, not the server, may be the limit.
CLIENT_LAG_WARN_MS = 10.0
MISSING = "—"


@dataclass(frozen=True)
class ReportPaths:
    """Files one report wrote."""

    report_md: Path
    summary_csv: Path
    plots: tuple[Path, ...]


def write_report(results_dir: str | Path, out_dir: str | Path | None = None) -> ReportPaths:
    """Write summary.csv, the plots and report.md for a results folder into `out_dir`.

    Args:
        results_dir: `results/<sweep>`, holding `<deployment_id>/<trial_id>/summary.parquet`.
        out_dir: where to write; defaults to `results_dir`.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    summary = load_summary(results_dir)
    sweep = sweep_title(summary, fallback=Path(results_dir).name)
    return save_report(summary, out_dir if out_dir is not None else results_dir, sweep)


def save_report(summary: pd.DataFrame, out_dir: str | Path, sweep: str) -> ReportPaths:
    """Write the report of an already loaded summary frame into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials = sort_trials(summary)
    csv_path = out / SUMMARY_CSV_FILE
    trials[_csv_order(trials.columns)].to_csv(csv_path, index=False)
    plots = _write_plots(trials, out, sweep)
    md_path = out / REPORT_FILE
    md_path.write_text(render_markdown(trials, sweep, plots, out), encoding="utf-8")
    return ReportPaths(report_md=md_path, summary_csv=csv_path, plots=tuple(plots))


def sort_trials(summary: pd.DataFrame) -> pd.DataFrame:
    """Trials ordered by series, load and repeat, so related rows sit together."""
    keys = pd.DataFrame({"series": series_labels(summary), "load": load_values(summary)})
    for col in (rec.REPEAT, rec.TRIAL_ID):
        keys[col] = summary[col] if col in summary else 0
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return summary.loc[order].reset_index(drop=True)


def main_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row of display strings per trial: what to look at first, in human units."""
    trials = sort_trials(summary)

    def col(name: str, fmt: str, scale: float = 1.0) -> pd.Series:
        values = pd.to_numeric(trials.get(name), errors="coerce") if name in trials else None
        if values is None:
            return pd.Series(MISSING, index=trials.index)
        return (values * scale).map(lambda v: MISSING if pd.isna(v) else format(v, fmt))

    completed = col(rec.COMPLETED_REQUESTS, ".0f")
    return pd.DataFrame(
        {
            "Trial": trials.get(rec.LABEL, trials.get(rec.TRIAL_ID)),
            "Series": series_labels(trials),
            load_axis_label(trials).capitalize(): load_values(trials).map(_plain),
            "Status": trials[rec.TRIAL_STATUS],
            "Requests ok": (completed + "/" + col(rec.NUM_REQUESTS, ".0f")).where(
                completed != MISSING, MISSING
            ),
            "Output tok/s": col(rec.OUTPUT_THROUGHPUT, ",.1f"),
            "TTFT p50 (ms)": col(TTFT_MEDIAN, ",.1f"),
            "TTFT p99 (ms)": col(rec.latency_column("ttft", "p99"), ",.1f"),
            "TPOT p50 (ms)": col(rec.latency_column("tpot", "median"), ",.1f"),
            "ITL p50 (ms)": col(rec.latency_column("itl", "median"), ",.1f"),
            "E2E p50 (s)": col(rec.latency_column("e2e", "median"), ",.2f", scale=1e-3),
            "USD / 1M output tok": col(rec.COST_PER_1M_OUTPUT, ",.2f"),
        }
    ).fillna(MISSING)


def render_markdown(trials: pd.DataFrame, sweep: str, plots: list[Path], out_dir: Path) -> str:
    """The text of report.md; plot images are linked relative to `out_dir`."""
    sections = [
        f"# Sweep report: {sweep}",
        _overview(trials),
        "## Results",
        markdown_table(main_table(trials)),
        "## Plots",
        *(_image(spec.title, path, out_dir) for spec, path in zip(PLOTS, plots, strict=True)),
        *_repeats_section(trials),
        "## Request checks",
        _checks(trials),
        "## Failed trials",
        _failed(trials),
        "## Environment",
        _environment(trials),
    ]
    return "\n\n".join(sections) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; numeric-looking columns are right-aligned."""
    cells = frame.astype(str).map(_cell)
    align = ["---:" if cells[c].str.fullmatch(r"[\d,.\-—/ \[\]]+").all() else "---" for c in cells]
    lines = [
        "| " + " | ".join(map(_cell, frame.columns)) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)),
    ]
    return "\n".join(lines)


def _csv_order(columns: pd.Index) -> list[str]:
    leading = [c for c in LEADING_COLUMNS if c in columns]
    return leading + [c for c in columns if c not in leading]


def _overview(trials: pd.DataFrame) -> str:
    ok = int((trials[rec.TRIAL_STATUS] == rec.STATUS_OK).sum())
    facts = [
        f"{len(trials)} trials ({ok} ok, {len(trials) - ok} failed) on "
        f"{trials[rec.DEPLOYMENT_ID].nunique()} deployments"
    ]
    for name, column in (("model", rec.MODEL_NAME), ("hardware", rec.HARDWARE_NAME)):
        if column in trials:
            facts.append(f"{name}: {_distinct(trials[column])}")
    facts.append(f"load axis: {load_axis_label(trials)}")
    return " · ".join(facts) + ". Latencies are per request; p50 is the median."


def _repeats_section(trials: pd.DataFrame) -> list[str]:
    """Mean and 95% interval per grid point, only when some point was repeated."""
    ok = trials[trials[rec.TRIAL_STATUS] == rec.STATUS_OK].copy()
    ok["Series"], ok["Load"] = series_labels(ok), load_values(ok).map(_plain)
    metrics = [rec.OUTPUT_THROUGHPUT, TTFT_MEDIAN]
    if ok.empty or ok.groupby(["Series", "Load"]).size().max() < 2:
        return []
    agg = aggregate_repeats(ok, ["Series", "Load"], metrics)

    def interval(metric: str) -> list[str]:
        columns = [agg[rec.ci_column(metric, stat)] for stat in rec.CI_STATS]
        return [f"{m:,.1f} [{lo:,.1f}, {hi:,.1f}]" for m, lo, hi in zip(*columns, strict=True)]

    table = agg[["Series", "Load", rec.NUM_REPEATS]].rename(columns={rec.NUM_REPEATS: "Repeats"})
    table["Output tok/s, mean [95% CI]"] = interval(rec.OUTPUT_THROUGHPUT)
    table["TTFT p50 (ms), mean [95% CI]"] = interval(TTFT_MEDIAN)
    return ["## Repeats", markdown_table(table)]


def _checks(trials: pd.DataFrame) -> str:
    ok = trials[trials[rec.TRIAL_STATUS] == rec.STATUS_OK]
    lines = [
        f"- {row.get(rec.LABEL)} (`{row[rec.TRIAL_ID]}`): " + "; ".join(notes)
        for _, row in ok.iterrows()
        if (notes := _trial_notes(row))
    ]
    return "\n".join(lines) or "Every request of every successful trial completed as requested."


def _trial_notes(row: pd.Series) -> list[str]:
    """What in one successful trial deserves a second look."""
    notes = []
    if _positive(failed := row.get(rec.FAILED_REQUESTS)):
        notes.append(f"{failed:.0f} of {row[rec.NUM_REQUESTS]:.0f} requests failed")
    if _positive(mismatched := row.get(rec.TOKEN_MISMATCH_REQUESTS)):
        notes.append(f"client and server token counts differ on {mismatched:.0f} request(s)")
    if _positive(short := row.get(rec.SHORT_OUTPUT_REQUESTS)):
        notes.append(f"{short:.0f} request(s) shorter than requested")
    if _positive(lag := row.get(rec.CLIENT_LAG_MS_MEAN), above=CLIENT_LAG_WARN_MS):
        notes.append(f"client lagged {lag:.1f} ms behind schedule on average (client-bound)")
    return notes


def _positive(value: object, above: float = 0.0) -> bool:
    return value is not None and pd.notna(value) and float(value) > above


def _failed(trials: pd.DataFrame) -> str:
    failed = trials[trials[rec.TRIAL_STATUS] != rec.STATUS_OK]
    if failed.empty:
        return "No trial failed."
    table = pd.DataFrame(
        {
            "Trial id": failed[rec.TRIAL_ID],
            "Label": failed.get(rec.LABEL),
            "Error kind": failed.get(rec.ERROR_KIND),
            "Message": failed.get(rec.ERROR_MESSAGE, pd.Series(dtype=str)).map(
                lambda m: _cell(str(m))[:300] if pd.notna(m) else MISSING
            ),
        }
    ).fillna(MISSING)
    return f"{len(failed)} trial(s) failed.\n\n" + markdown_table(table)


def _environment(trials: pd.DataFrame) -> str:
    env = [c for c in trials.columns if c.startswith(rec.ENV_PREFIX)]
    if not env:
        return "No environment was recorded."
    rows = [(c.removeprefix(rec.ENV_PREFIX), _distinct(trials[c])) for c in env]
    return markdown_table(pd.DataFrame(rows, columns=["Setting", "Value"]).replace("", MISSING))


def _distinct(values: pd.Series) -> str:
    """The distinct non-null values of a column, sorted and comma-separated."""
    return ", ".join(sorted(values.dropna().astype(str).unique()))


def _image(title: str, path: Path, out_dir: Path) -> str:
    return f"![{title}]({path.relative_to(out_dir).as_posix()})"


def _plain(value: float) -> str:
    return MISSING if pd.isna(value) else f"{value:g}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (one line, no column breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")
