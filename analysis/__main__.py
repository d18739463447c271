"""Command line: `python -m analysis RESULTS_DIR [--out DIR]`.

Loads a sweep's results, writes summary.csv, the plots and report.md, prints the main table and
the paths written. Errors a user can fix (missing folder, no trial) are one `error:` line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from analysis.console import print_paths, print_table
from analysis.load import load_summary
from analysis.plots import sweep_title
from analysis.report import main_table, save_report
from sweep.errors import SweepError

log = logging.getLogger("analysis")
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    """Run the report pipeline; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    out_dir = args.out or args.results_dir
    try:
        log.info("loading trials from %s", args.results_dir)
        summary = load_summary(args.results_dir)
        sweep = sweep_title(summary, fallback=args.results_dir.name)
        log.info("writing the report of %s (%d trials) to %s", sweep, len(summary), out_dir)
        paths = save_report(summary, out_dir, sweep)
    except (SweepError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print_table(main_table(summary), title=f"Sweep {sweep}")
    print_paths(paths)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Write summary.csv, plots and report.md for a sweep's results folder.",
    )
    parser.add_argument("results_dir", type=Path, help="results/<sweep_name>")
    parser.add_argument("--out", type=Path, help="output folder (default: RESULTS_DIR)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
