"""Live progress of a sweep: done / running / failed, elapsed and ETA, and lines for trials.

On a terminal a rich progress bar updates in place; elsewhere (CI, `ray job` logs) the lines
show how far the sweep got. A sweep of up to `EVERY_TRIAL_UP_TO` trials prints one line per
finished trial; a larger one prints a line for every hundredth of the sweep and for its first
`FAILURES_LISTED` failures, so a 10,000-trial log stays a page long (the report lists every
trial).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweep.core import records as R
from sweep.core.results import TrialFiles

EVERY_TRIAL_UP_TO = 200  # sweeps this size print a line per trial
FAILURES_LISTED = 20  # beyond that size, failures with a line of their own


class SweepProgress:
    """Counts trials as they finish and shows them."""

    def __init__(self, total: int, deployments: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.total = total
        self.deployments_left = deployments
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task(self._counts(), total=total, eta="?")

    def __enter__(self) -> SweepProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def trial_finished(self, files: TrialFiles) -> None:
        """Count one trial and print its line."""
        row = files.summary.to_pylist()[0]
        self.done += 1
        if row[R.TRIAL_STATUS] != R.STATUS_OK:
            self.failed += 1
        self._progress.update(
            self._task, completed=self.done, description=self._counts(), eta=self._eta()
        )
        if self._shown(row):
            self.console.print(self._line(row))
        if (
            self.total > EVERY_TRIAL_UP_TO
            and self._failure_line(row)
            and (self.failed == FAILURES_LISTED)
        ):
            self.console.print("[red]further failures are counted, not listed[/]")

    def _failure_line(self, row: dict) -> bool:
        return row[R.TRIAL_STATUS] != R.STATUS_OK and self.failed <= FAILURES_LISTED

    def _shown(self, row: dict) -> bool:
        """Whether this trial gets a line: all of a small sweep, a sample of a large one."""
        if self.total <= EVERY_TRIAL_UP_TO or self._failure_line(row):
            return True
        return self.done % max(1, self.total // 100) == 0 or self.done == self.total

    def note(self, text: str) -> None:
        """Print one line about the sweep (a deployment waiting for a node, ...)."""
        self.console.print(f"[yellow]⧗[/] {text}")

    def deployment_finished(self) -> None:
        """One fewer deployment running."""
        self.deployments_left -= 1

    def search_finished(self, label: str, found: Any, unused: int, unit: str) -> None:
        """A search ended with capacity `found` (in `unit`), `unused` probes of its budget left."""
        self.total -= unused
        self._progress.update(self._task, total=self.total, eta=self._eta())
        what = "stopped early" if found.pruned else f"capacity {found.load:g} {unit}"
        self.console.print(f"[bold cyan]◆ {label}[/] {what} · {found.reason}")

    def _counts(self) -> str:
        return (
            f"done {self.done} · failed {self.failed} · deployments running {self.deployments_left}"
        )

    def _eta(self) -> str:
        if self.done == 0:
            return "?"
        elapsed = time.monotonic() - self.started
        seconds = int(elapsed / self.done * (self.total - self.done))
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _line(self, row: dict) -> str:
        position = f"[{self.done}/{self.total}, {self._eta()} left]"
        if row[R.TRIAL_STATUS] != R.STATUS_OK:
            reason = (row.get(R.ERROR_MESSAGE) or "").splitlines()[0][:160]
            return f"[red]✗ {row[R.LABEL]}[/] {row[R.ERROR_KIND]}: {reason} {position}"
        ttft = row.get(R.latency_column("ttft", "median"))
        ttft_text = f"{ttft:.1f} ms" if ttft is not None else "n/a"
        slo = ""
        if row.get(R.SLO_PASSED) is not None:
            slo = " · SLO met" if row[R.SLO_PASSED] else f" · SLO missed ({row.get(R.SLO_REASON)})"
        return (
            f"[green]✓ {row[R.LABEL]}[/] {row[R.OUTPUT_THROUGHPUT]:.1f} tok/s · "
            f"TTFT p50 {ttft_text} · {row[R.COMPLETED_REQUESTS]} requests{slo} {position}"
        )
