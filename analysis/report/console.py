"""Terminal output of analysis results: the main table, the capacity table, the paths written.

Used by `python -m analysis` and by `python -m sweep` at the end of a sweep.
"""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from analysis.report.report import ReportPaths
from analysis.report.sections import capacity_display

# A pipe or a file gets the width of a common terminal: the tables are made to fit it.
MIN_WIDTH_NOT_TERMINAL = 100
# The capacity columns the terminal shows, with short headers so that the table fits 100
# columns; the report and summary.csv hold the rest.
CAPACITY_CONSOLE = {
    "Configuration": "Configuration",
    "Load axis": "Axis",
    "Capacity (load)": "Capacity",
    "Capacity (req/s)": "req/s",
    "USD / 1M output tok": "USD/1M tok",
    "Replicas for target": "Replicas",
    "GPUs for target": "GPUs",
    "USD / hour for target": "USD/h",
}


def print_table(table: pd.DataFrame, title: str) -> None:
    """The main table as a rich table on stdout."""
    console = make_console()
    shown = Table(title=title)
    cells = table.astype(str)
    for i, column in enumerate(table.columns):
        # The first column (a name) may fold, but not to a sliver; the others keep their line.
        widest = max([len(str(column)), *cells.iloc[:, i].map(len)]) if len(cells) else 0
        shown.add_column(
            str(column),
            overflow="fold",
            no_wrap=i > 0,
            min_width=min(widest, 24) if i == 0 else None,
        )
    for row in cells.itertuples(index=False):
        shown.add_row(*row)
    console.print(shown)


def print_findings(findings: tuple[str, ...] | list[str]) -> None:
    """The report's findings in words, one bullet each (Markdown bold shown as bold)."""
    if not findings:
        return
    console = make_console()
    console.print("[bold]Findings[/bold]")
    for line in findings:
        text = line.replace("[", "\\[")
        parts = text.split("**")
        shown = "".join(f"[bold]{p}[/bold]" if i % 2 else p for i, p in enumerate(parts))
        console.print(f"- {shown}", highlight=False)


def print_capacity(capacity: pd.DataFrame | None, title: str = "Capacity within the SLO") -> None:
    """The capacity of each searched configuration (`ReportPaths.capacity`); nothing without."""
    if capacity is not None and len(capacity):
        shown = capacity_display(capacity)
        kept = [c for c in CAPACITY_CONSOLE if c in shown]
        print_table(shown[kept].rename(columns=CAPACITY_CONSOLE), title)


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
