"""The report of a sweep: `summary.csv`, the PNG plots, `report.md` and `report.html`.

`write_report` reads a results folder and writes them all; `save_report` does the same from frames
already in memory (the CLI loads them once and also prints the table). The report opens with its
findings in words (`analysis.report.findings`), then holds the capacity of each searched
configuration (`analysis.stats.capacity`, when the sweep searched), the per-trial sections built
here (results, plots, repeats), the comparison sections of `analysis.report.sections`, the energy of
each trial (`analysis.report.energy`), quality against speed (`analysis.report.quality`, with
`quality=on`, and its front on cost and KL, `analysis.figures.quality_front`), TTFT by turn of
multi-turn trials (`analysis.report.turns`), the rows of a replayed trace
(`analysis.report.trace_rows`), a proxy's cache hits (`analysis.report.proxy_cache`), the server's
own view (`analysis.report.server_view`) and the flagged and failed trials of
`analysis.report.flags`. `main_table` is the human-readable table (units in the headers, numbers
rounded) that the report and the terminal show; `summary.csv` keeps every column, the derived
comparison ones too, the main ones first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.figures.capacity_plots import write_capacity_plots
from analysis.figures.plots import PARETO_FILE, PLOTS, pareto_figure, repeat_points
from analysis.figures.plots import write_plots as _write_plots
from analysis.figures.quality_front import write_quality_front
from analysis.figures.timeline_plots import write_timeline_plots
from analysis.figures.tuning_plot import write_tuning_plot
from analysis.read.columns import load_axis_label, load_values, reasoned, series_labels, sweep_title
from analysis.read.load import (
    load_adapters,
    load_quality,
    load_requests,
    load_stages,
    load_summary,
    load_timeseries,
    load_timeslices,
)
from analysis.read.trial_cache import CACHE_DIR
from analysis.read.trial_folder import TrialFolder, trial_folder
from analysis.report.adapter_table import adapter_sections
from analysis.report.detail_scope import drawn_trials, request_trials
from analysis.report.ended_early import ended_early_sections
from analysis.report.energy import energy_sections
from analysis.report.findings import findings, quality_findings, withheld_deployments
from analysis.report.flags import distinct, problem_sections
from analysis.report.grid import TRIALS_CSV, grid_table
from analysis.report.html import HTML_FILE, write_html
from analysis.report.proxy_cache import cache_sections
from analysis.report.quality import quality_baseline, quality_figures, quality_sections
from analysis.report.reference import Reference, reference_sections, with_reference
from analysis.report.sections import (
    ANSWER_COLUMNS,
    MISSING,
    Image,
    Section,
    capacity_section,
    comparison_sections,
    formatted,
    markdown_document,
    measured,
    pooled,
    timeline_section,
)
from analysis.report.server_view import server_sections
from analysis.report.stage_table import stage_sections
from analysis.report.startup_table import startup_sections
from analysis.report.structured import structured_findings, structured_sections
from analysis.report.timeslice_plots import timeslice_section, write_timeslice_plot
from analysis.report.tool_sessions import tool_findings, tool_sections
from analysis.report.trace_rows import trace_sections
from analysis.report.tuning import tuning_findings, tuning_sections
from analysis.report.turns import turn_sections, turn_table, write_turn_plot
from analysis.stats.capacity import capacity_table, with_search
from analysis.stats.compare import Slo, analyse
from analysis.stats.sweep_diff import noise_verdict
from analysis.stats.tuning import Tuning, load_tuning
from sweep.core import records as rec

REPORT_FILE = "report.md"
SUMMARY_CSV_FILE = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"  # a large sweep's summary.csv, typed, beside trials.csv
TTFT_MEDIAN = rec.latency_column("ttft", "median")
# Metrics of the repeats table: display name, and whether a higher mean is the better one.
REPEAT_METRICS = {
    rec.OUTPUT_THROUGHPUT: ("Output tok/s", True),
    TTFT_MEDIAN: ("TTFT p50 (ms)", False),
    rec.latency_column("tpot", "median"): ("TPOT p50 (ms)", False),
}
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
    rec.ENERGY_WH_PER_1M_OUTPUT,
    rec.ENERGY_J_PER_OUTPUT_TOKEN,
    rec.ENERGY_J_PER_REQUEST,
    rec.ENERGY_J,
    rec.ENERGY_METHOD,
)


@dataclass(frozen=True)
class ReportOptions:
    """Choices of the comparison: the baseline engine, SLOs overriding the config, HTML or not."""

    baseline: str | None = None  # None: the backend recorded as the baseline
    slo: Slo | None = None
    html: bool = True
    reference: Reference | None = None  # a study's published numbers (`analysis.report.reference`)
    target_rate: float | None = None  # req/s to serve: replicas and cost per searched config
    tolerance: float | None = None  # the search's, to say which searches converged
    quality_baseline: str | None = None  # the experiment's `quality.baseline` (sweep.yaml)


@dataclass(frozen=True)
class ReportPaths:
    """Files one report wrote."""

    report_md: Path
    summary_csv: Path
    plots: tuple[Path, ...]
    report_html: Path | None = None
    capacity: pd.DataFrame | None = (
        None  # `analysis.stats.capacity.capacity_table`; None: no search
    )
    findings: tuple[str, ...] = ()  # `analysis.report.findings`, for the console
    quality: pd.DataFrame | None = (
        None  # `analysis.report.quality.quality_table`; None: quality=off
    )
    tuning: Tuning | None = None  # `analysis.stats.tuning`; None: the sweep did not tune


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, options: ReportOptions | None = None
) -> ReportPaths:
    """Write summary.csv, the plots, report.md and report.html for a results folder.

    Args:
        results_dir: `results/<sweep>`, holding `<deployment_id>/<trial_id>/summary.parquet`.
        out_dir: where to write; defaults to `results_dir`.
        options: baseline, SLOs and whether to write HTML; the defaults when None.

    Raises:
        SweepError: the folder does not exist or holds no complete trial.
    """
    out = Path(out_dir if out_dir is not None else results_dir)
    folder = trial_folder(results_dir)  # listed once, for every loader
    summary = load_summary(folder, cache_dir=out / CACHE_DIR)
    sweep = sweep_title(summary, fallback=Path(results_dir).name)
    options = options or ReportOptions()
    return save_report(
        summary,
        out,
        sweep,
        **report_inputs(folder, summary, options),
        options=with_quality(
            with_search(with_reference(options, results_dir), results_dir), results_dir
        ),
    )


def report_inputs(
    results_dir: str | Path | TrialFolder, summary: pd.DataFrame, options: ReportOptions
) -> dict[str, Any]:
    """The frames `save_report` takes beside the summary, read for the trials that need them.

    Requests of the trials whose statistics the summary cannot give, time series and slices of
    the trials the timelines draw (`analysis.report.detail_scope`): a large sweep is never held
    whole. The folder is listed once (or its listing is given) for every kind of file.
    """
    folder = trial_folder(results_dir)
    drawn = drawn_trials(summary)
    return {
        "requests": load_requests(folder, request_trials(summary, options.slo)),
        "timeseries": load_timeseries(folder, drawn),
        "timeslices": load_timeslices(folder, drawn),
        "stages": load_stages(folder),
        "adapters": load_adapters(folder),
        "quality": load_quality(folder.root),
        "tuning": load_tuning(folder.root),
    }


def with_quality(options: ReportOptions, results_dir: str | Path) -> ReportOptions:
    """`options` with the experiment's quality baseline where it names none."""
    return dataclasses.replace(
        options, quality_baseline=options.quality_baseline or quality_baseline(results_dir)
    )


def save_report(
    summary: pd.DataFrame,
    out_dir: str | Path,
    sweep: str,
    *,
    requests: pd.DataFrame | None = None,
    timeseries: pd.DataFrame | None = None,
    timeslices: pd.DataFrame | None = None,
    stages: pd.DataFrame | None = None,
    adapters: pd.DataFrame | None = None,
    quality: pd.DataFrame | None = None,
    tuning: Tuning | None = None,
    options: ReportOptions | None = None,
) -> ReportPaths:
    """Write the report of already loaded frames into `out_dir`.

    Without `requests` the goodput section is left out; without `timeseries`, the timelines;
    without `timeslices`, `stages` or `adapters`, the metrics per time slice, per stage or per
    LoRA adapter; `quality`
    (`analysis.read.load.load_quality`) gives the "Quality against speed" table.
    """
    options = options or ReportOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparison = analyse(sort_trials(summary), requests, baseline=options.baseline, slo=options.slo)
    trials = comparison.trials
    csv_path = out / SUMMARY_CSV_FILE
    trials[_csv_order(trials.columns)].to_csv(csv_path, index=False)
    if pooled(trials):  # the per-trial table the report no longer lists, as the HTML shows it
        main_table(trials).to_csv(out / TRIALS_CSV, index=False)
        trials[_csv_order(trials.columns)].to_parquet(out / SUMMARY_PARQUET, index=False)
    drawn = set(drawn_trials(trials))
    timeseries, timeslices = (
        None if frame is None else frame[frame[rec.TRIAL_ID].isin(drawn)]
        for frame in (timeseries, timeslices)
    )
    plots = _write_plots(trials, out, sweep)
    pareto = out / PARETO_FILE
    latency = "TPOT" if comparison.latency_metric.startswith("tpot") else "TTFT"
    pareto_figure(comparison.pareto, f"{latency}, median (ms)", sweep).savefig(pareto)
    timelines = [] if timeseries is None else write_timeline_plots(timeseries, trials, out, sweep)
    slice_plots = write_timeslice_plot(timeslices, trials, out, sweep)
    capacity = capacity_table(trials, options.target_rate, options.tolerance)
    searches = write_capacity_plots(trials, capacity, out, sweep)
    turns = turn_table(requests, trials)  # multi-turn trials only
    turn_plots = write_turn_plot(turns, out, sweep)
    quality_table = quality_figures(quality, trials, options.baseline or options.quality_baseline)
    quality_front = write_quality_front(quality_table, out, sweep)
    withheld = withheld_deployments(comparison.trials)
    tuning_plot = write_tuning_plot(tuning, out, sweep) if tuning is not None else None
    stated = (
        *tuning_findings(tuning),
        *findings(comparison),
        *structured_findings(trials),
        *tool_findings(trials),
        *quality_findings(quality_table, withheld),
    )
    sections = [
        Section("Findings", items=stated) if stated else None,
        *tuning_sections(tuning, tuning_plot),
        *capacity_section(capacity, searches, options.target_rate),
        *trial_sections(trials, plots),
        *stage_sections(stages, trials),
        *adapter_sections(adapters, trials),
        *ended_early_sections(trials),
        *structured_sections(trials),
        *comparison_sections(comparison, pareto),
        *energy_sections(trials),
        *quality_sections(quality, quality_table, quality_front),
        *turn_sections(turns, turn_plots),
        *tool_sections(trials),
        *trace_sections(trials),  # trials that replayed a trace: its hash and rows
        *cache_sections(requests, trials),  # trials behind a proxy (study D)
        *server_sections(trials),
        *startup_sections(trials),
        timeline_section(timelines),
        *timeslice_section(slice_plots),
        *problem_sections(trials),
        *reference_sections(trials, options.reference),
        *all_trials_section(trials),
    ]
    sections = [section for section in sections if section is not None]
    title, overview = f"Sweep report: {sweep}", _overview(trials)
    md_path = out / REPORT_FILE
    md_path.write_text(markdown_document(title, overview, sections, out), encoding="utf-8")
    html_path = write_html(out / HTML_FILE, title, overview, sections) if options.html else None
    return ReportPaths(
        md_path,
        csv_path,
        (
            *plots,
            pareto,
            *timelines,
            *slice_plots,
            *searches,
            *turn_plots,
            *([quality_front] if quality_front else []),
            *([tuning_plot] if tuning_plot else []),
        ),
        html_path,
        capacity if len(capacity) else None,
        stated,
        quality_table if len(quality_table) else None,
        tuning,
    )


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
        if name not in trials:
            return pd.Series(MISSING, index=trials.index)
        return formatted(trials[name], fmt, scale)

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
            **(
                {name: col(column, ",.1f") for name, column in ANSWER_COLUMNS.items()}
                if reasoned(trials)
                else {}
            ),
            "TPOT p50 (ms)": col(rec.latency_column("tpot", "median"), ",.1f"),
            "ITL p50 (ms)": col(rec.latency_column("itl", "median"), ",.1f"),
            "E2E p50 (s)": col(rec.latency_column("e2e", "median"), ",.2f", scale=1e-3),
            "USD / 1M output tok": col(rec.COST_PER_1M_OUTPUT, ",.2f"),
            "Wh / 1M output tok": measured(col(rec.ENERGY_WH_PER_1M_OUTPUT, ",.4g"), trials),
        }
    ).fillna(MISSING)


# What the terminal shows of `main_table` (short headers, so that it fits 100 columns); the rest
# is in summary.csv and the report.
CONSOLE_COLUMNS = {
    "Trial": "Trial",
    "Status": "Status",
    "Requests ok": "Req ok",
    "Output tok/s": "Out tok/s",
    "TTFT p50 (ms)": "TTFT p50 ms",
    "TPOT p50 (ms)": "TPOT p50 ms",
    "USD / 1M output tok": "USD/1M tok",
}


def console_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The columns of `main_table` that matter at a glance, for a 100-column terminal.

    A sweep the report pools (`sections.pooled`) shows its grid by series and load instead:
    series, load, trials, failures and the mean output tok/s and TTFT p50.
    """
    if pooled(summary):
        grid = grid_table(summary)
        return grid[[*grid.columns[:4], *grid.columns[4:6]]]
    return main_table(summary)[list(CONSOLE_COLUMNS)].rename(columns=CONSOLE_COLUMNS)


def trial_sections(trials: pd.DataFrame, plots: list[Path]) -> list[Section]:
    """Results table, the load plots and, when some grid point was repeated, the intervals.

    A sweep of more than `sections.LISTED_UP_TO` trials gets the grid by series and load instead
    of a row per trial (those are in trials.csv and report.html's table, "All trials").
    """
    images = tuple(Image(spec.title, path) for spec, path in zip(PLOTS, plots, strict=True))
    if pooled(trials):
        text = (
            f"{len(trials):,} trials, pooled by series and load: the mean over the successful "
            "repeats with its 95% interval. Every trial is in `trials.csv` (and summary.csv, "
            "summary.parquet with every column) and in the table at the end of report.html."
        )
        results = Section("Results", text, table=grid_table(trials))
    else:
        results = Section("Results", table=main_table(trials))
    return [results, Section("Plots", images=images), *_repeats_section(trials)]


def all_trials_section(trials: pd.DataFrame) -> list[Section]:
    """A large sweep's trials, one row each, to sort and filter (last in the report)."""
    if not pooled(trials):
        return []
    text = "Every trial: click a header to sort, type in the search box to filter."
    return [Section("All trials", text, browse=main_table(trials), browse_csv=TRIALS_CSV)]


def _csv_order(columns: pd.Index) -> list[str]:
    leading = [c for c in LEADING_COLUMNS if c in columns]
    return leading + [c for c in columns if c not in leading]


def _overview(trials: pd.DataFrame) -> str:
    ok = int((trials[rec.TRIAL_STATUS] == rec.STATUS_OK).sum())
    facts = [
        f"{len(trials)} trials ({ok} ok, {len(trials) - ok} failed) on "
        f"{trials[rec.DEPLOYMENT_ID].nunique()} deployments"
    ]
    for name, column in (
        ("model", rec.MODEL_NAME),
        ("model files", rec.MODEL_RESOLVED_PATH),  # what loaded, as each worker resolved it
        ("tokenizer", rec.MODEL_TOKENIZER),
        ("hardware", rec.HARDWARE_NAME),
    ):
        if column in trials and trials[column].notna().any():
            facts.append(f"{name}: {distinct(trials[column])}")
    facts.append(f"load axis: {load_axis_label(trials)}")
    return " · ".join(facts) + ". Latencies are per request; p50 is the median."


def _repeats_section(trials: pd.DataFrame) -> list[Section]:
    """Mean and 95% interval per grid point, only when some point was repeated.

    The points and intervals are the plots' (`plots.repeat_points`), so each error bar there
    spans the interval stated here.

    Where several configurations ran at one load, each is judged against the best of them there:
    overlapping intervals are "within noise", a difference too small to act on.
    """
    agg = repeat_points(trials, list(REPEAT_METRICS))  # the points the plots draw, with bars
    if agg.empty or agg[rec.NUM_REPEATS].max() < 2:
        return []
    agg = agg.rename(columns={"series": "Series", "load": "Load"})
    agg["Load"] = agg["Load"].map(_plain)
    compared = agg.groupby("Load")["Series"].transform("size") > 1
    table = agg[["Series", "Load", rec.NUM_REPEATS]].rename(columns={rec.NUM_REPEATS: "Repeats"})
    for metric, (name, higher_is_better) in REPEAT_METRICS.items():
        columns = [agg[rec.ci_column(metric, stat)] for stat in rec.CI_STATS]
        table[f"{name}, mean [95% CI]"] = [
            f"{m:,.1f} [{lo:,.1f}, {hi:,.1f}]" for m, lo, hi in zip(*columns, strict=True)
        ]
        if compared.any():
            table[f"{name} vs best at its load"] = _against_best(agg, metric, higher_is_better)
    text = (
        "Mean and 95% Student t interval over the repeats of each grid point. At a load where "
        "several configurations ran, each is compared with the best one there: where the "
        "intervals overlap the difference is within noise."
    )
    return [Section("Repeats", text, table=table)]


def _against_best(agg: pd.DataFrame, metric: str, higher_is_better: bool) -> pd.Series:
    """Per grid point: best, within noise (of the best), higher or lower, at the same load."""
    mean, low, high = (agg[rec.ci_column(metric, stat)] for stat in rec.CI_STATS)
    verdicts = pd.Series(MISSING, index=agg.index, dtype=object)
    for rows in agg.groupby("Load").groups.values():
        if len(rows) < 2 or mean[rows].isna().all():
            continue
        best = mean[rows].idxmax() if higher_is_better else mean[rows].idxmin()
        for row in rows:
            reference, other = (mean[best], low[best], high[best]), (mean[row], low[row], high[row])
            verdicts[row] = "best" if row == best else noise_verdict(reference, other)
    return verdicts


def _plain(value: float) -> str:
    return MISSING if pd.isna(value) else f"{value:g}"
