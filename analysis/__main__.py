"""Command line: `python -m analysis RESULTS_DIR [RESULTS_DIR ...] [options]`.

One folder: writes summary.csv, the plots, report.md and report.html (comparison against the
`--baseline` engine, Pareto front, goodput under `--slo`, roofline, timelines and, for a search,
each configuration's capacity and what `--target-rate` costs), prints the main table, the capacity
table and the paths written; `--wandb` also uploads the sweep to Weights & Biases. Two or more
folders: matches their trials by config and writes comparison.md and comparison.html. With
`--export FORMAT` it writes each trial in the field's formats instead (`analysis.export`: llm-d's
benchmark report, vLLM's bench JSON) and prints the folders written. Errors a user can fix
(missing folder, no trial, a bad SLO, an unknown format) are one `error:` line on stderr, exit
status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from analysis.export.registry import FORMATS, export_results, parse_formats
from analysis.read.columns import sweep_title
from analysis.read.load import (
    load_requests,
    load_summary,
)
from analysis.read.trial_cache import CACHE_DIR
from analysis.read.trial_folder import trial_folder
from analysis.report.console import print_capacity, print_findings, print_paths, print_table
from analysis.report.html import write_html
from analysis.report.reference import with_reference
from analysis.report.report import (
    ReportOptions,
    console_table,
    report_inputs,
    save_report,
    with_quality,
)
from analysis.report.sections import markdown_document, sweep_diff_section
from analysis.stats.capacity import with_search
from analysis.stats.compare import parse_slo
from analysis.stats.noise_check import spread_table
from analysis.stats.sweep_diff import compare_sweeps
from sweep.core.errors import SweepError

log = logging.getLogger("analysis")
EXIT_USAGE = 2
COMPARISON_FILE = "comparison"


def main(argv: list[str] | None = None) -> int:
    """Run the report pipeline; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        options = ReportOptions(
            baseline=args.baseline,
            html=args.html,
            slo=parse_slo(args.slo) if args.slo else None,
            target_rate=args.target_rate,
        )
        if args.noise:
            return noise(args.results_dirs)
        if args.export:
            return export(args.results_dirs, args.out, parse_formats(args.export))
        if len(args.results_dirs) > 1:
            return compare(args.results_dirs, args.out)
        return report(args.results_dirs[0], args.out or args.results_dirs[0], options, args)
    except (SweepError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def report(
    results_dir: Path, out_dir: Path, options: ReportOptions, args: argparse.Namespace
) -> int:
    """One sweep: load, write the report, print it, upload to W&B when asked."""
    log.info("loading trials from %s", results_dir)
    folder = trial_folder(results_dir)  # listed once, for every loader
    summary = load_summary(folder, cache_dir=out_dir / CACHE_DIR)
    sweep = sweep_title(summary, fallback=results_dir.name)
    log.info("writing the report of %s (%d trials) to %s", sweep, len(summary), out_dir)
    paths = save_report(
        summary,
        out_dir,
        sweep,
        **report_inputs(folder, summary, options),
        options=with_quality(
            with_search(with_reference(options, results_dir), results_dir), results_dir
        ),
    )
    print_table(console_table(summary), title=f"Sweep {sweep}")
    print_findings(paths.findings)
    print_capacity(paths.capacity)
    print_paths(paths)
    if args.wandb:
        from analysis.tracking.tracking import upload_results

        log.info("uploading %s to W&B", sweep)
        upload_results(
            results_dir,
            list(paths.plots),
            project=args.wandb_project,
            capacity=paths.capacity,
            findings=paths.findings,
            quality=paths.quality,
            tuning=paths.tuning,
        )
    return 0


def noise(results_dirs: list[Path]) -> int:
    """The A/A check: the spread of every repeated configuration, per sweep."""
    status = 0
    for results_dir in results_dirs:
        summary = load_summary(results_dir)
        sweep = sweep_title(summary, fallback=results_dir.name)
        table = spread_table(summary)
        if table.empty:
            print(
                f"error: {sweep} ran no configuration twice; run the A/A check "
                "(python -m sweep +experiment=aa_check) or a sweep with sweep.repeats >= 2",
                file=sys.stderr,
            )
            status = EXIT_USAGE
            continue
        print_table(table, title=f"Run-to-run spread: {sweep}")
    return status


def export(results_dirs: list[Path], out_dir: Path | None, names: list[str]) -> int:
    """Each sweep's trials in the formats `names`, one line per folder written."""
    for results_dir in results_dirs:
        target = out_dir if out_dir is not None and len(results_dirs) == 1 else results_dir
        for written in export_results(results_dir, target, names):
            print(f"{written.format}: {written.folder} ({written.files} trials)")
    return 0


def compare(results_dirs: list[Path], out_dir: Path | None) -> int:
    """Several sweeps: match trials, write comparison.md and comparison.html, print the table."""
    summaries, requests = {}, {}
    for results_dir in results_dirs:
        summary = load_summary(results_dir)
        name = sweep_title(summary, fallback=results_dir.name)
        # The same experiment run twice (another machine, another version) shares its name.
        key = str(results_dir) if name in summaries else name
        summaries[key], requests[key] = summary, load_requests(results_dir)
    names = list(summaries)
    out = out_dir or results_dirs[0].parent / "_vs_".join(d.name for d in results_dirs)
    out.mkdir(parents=True, exist_ok=True)
    section = sweep_diff_section(compare_sweeps(summaries, requests=requests))
    title = "Sweep comparison: " + " vs ".join(names)
    overview = f"{names[0]} is the reference; every other sweep is compared with it."
    md = out / f"{COMPARISON_FILE}.md"
    md.write_text(markdown_document(title, overview, [section], out), encoding="utf-8")
    html = write_html(out / f"{COMPARISON_FILE}.html", title, overview, [section])
    print_table(section.table, title=title)
    print(f"comparison: {md}\ncomparison: {html}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Write summary.csv, plots, report.md and report.html for a sweep's results "
        "folder, or compare several sweeps.",
    )
    parser.add_argument(
        "results_dirs",
        type=Path,
        nargs="+",
        metavar="RESULTS_DIR",
        help="results/<sweep_name>; two or more compare the sweeps",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default: RESULTS_DIR; for several: A_vs_B beside A)",
    )
    parser.add_argument(
        "--baseline",
        help="backend name or engine label to compare against (default: the backend that "
        "recorded itself as the baseline, the plain transformers one)",
    )
    parser.add_argument(
        "--slo",
        help="goodput bounds, e.g. ttft_ms=500,tpot_ms=50 (default: each trial's slo.* config)",
    )
    parser.add_argument(
        "--target-rate",
        type=_positive,
        metavar="REQ_S",
        help="load to serve, in req/s: for each searched configuration, the replicas, GPUs and "
        "USD per hour it takes (default: the sweep's search.target_rate)",
    )
    parser.add_argument(
        "--html",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write report.html too (default: yes)",
    )
    parser.add_argument(
        "--noise",
        action="store_true",
        help="only print the run-to-run spread of each repeated configuration (an A/A check: "
        "python -m sweep +experiment=aa_check)",
    )
    parser.add_argument(
        "--export",
        action="append",
        metavar="FORMAT",
        help="instead of the report, write each trial in the field's formats into "
        "RESULTS_DIR/export/FORMAT/ (OUT/export/FORMAT/ with --out and one folder): "
        + "; ".join(f"{name}: {form.description}" for name, form in FORMATS.items())
        + " (repeat it, or separate formats by commas)",
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="upload the sweep to Weights & Biases (offline without credentials)",
    )
    parser.add_argument("--wandb-project", default=None, help="W&B project (default: llm-sweep)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser.parse_args(argv)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of req/s, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
