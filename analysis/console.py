"""Terminal output of analysis results: the main table, the capacity table, the paths written.

Used by `python -m analysis` and by `python -m sweep` at the end of a sweep.
"""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from analysis.report import ReportPaths
from analysis.sections import capacity_display

# Wide enough that the table is not squeezed when stdout is a pipe or a file.
MIN_WIDTH_NOT_TERMINAL = 200
# Capacity columns left to the report, so that the terminal table stays readable.
CAPACITY_REPORT_ONLY = ("Mode", "Achieved req/s", "Goodput met (%)", "SLO", "Probes", "Gap (%)")


def print_table(table: pd.DataFrame, title: str) -> None:
    """The main table as a rich table on stdout."""
    console = make_console()
    shown = Table(title=title)
    for column in table.columns:
        shown.add_column(str(column), overflow="fold")
    for row in table.astype(str).itertuples(index=False):
        shown.add_row(*row)
    console.print(shown)


def print_capacity(capacity: pd.DataFrame | None, title: str = "Capacity within the SLO") -> None:
    """The capacity of each searched configuration (`ReportPaths.capacity`); nothing without."""
    if capacity is not None and len(capacity):
        shown = capacity_display(capacity)
        print_table(shown.drop(columns=[c for c in CAPACITY_REPORT_ONLY if c in shown]), title)


def print_paths(paths: ReportPaths) -> None:
    """Where the reports, the CSV and the plots were written."""
    console = make_console()
    console.print(f"report: {paths.report_md}", highlight=False, soft_wrap=True)
    if paths.report_html is not None:
        console.print(f"report: {paths.report_html}", highlight=False, soft_wrap=True)
    console.print(f"summary: {paths.summary_csv}", highlight=False, soft_wrap=True)
    for plot in paths.plots:
        console.print(f"plot: {plot}", highlight=False, soft_wrap=True)


def make_console() -> Console:
    """A stdout console, widened when stdout is not a terminal."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, MIN_WIDTH_NOT_TERMINAL))
    return console
