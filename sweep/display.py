"""What the sweep prints: the planned-trials table, the resume line and the closing summary."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from analysis.console import make_console
from analysis.flags import trial_checks
from sweep.plan import SweepPlan
from sweep.resume import ResumeState

console = make_console()


def print_plan(plan: SweepPlan) -> None:
    """The dry-run table: one row per trial, grouped by deployment."""
    table = Table(
        title=f"sweep '{plan.name}': {len(plan.trials)} trials in "
        f"{len(plan.deployments)} deployments (dry run, nothing runs)"
    )
    whole = ("trial_id", "label")  # what a user copies: never cut; the rest folds to fit
    for column in ("deployment", "trial_id", "label", "repeat", *plan.axes):
        table.add_column(column, overflow="fold", no_wrap=column in whole)
    for deployment in plan.deployments:
        for trial in deployment.trials:
            values = [_axis_value(trial.flat, axis) for axis in plan.axes]
            table.add_row(
                f"{deployment.deployment_id} {deployment.label}",
                trial.trial_id,
                trial.label,
                str(trial.repeat),
                *values,
            )
    console.print(table)


def _axis_value(flat: dict, axis: str) -> str:
    return str(flat.get(axis, flat.get(f"{axis}.name", "")))


def print_resume(state: ResumeState) -> None:
    """Say what is skipped and how to change that."""
    if state.skipped_ok:
        console.print(
            f"resume: skipping {state.skipped_ok} completed trials or searches "
            "(sweep.overwrite=true re-runs them)"
        )
    if state.skipped_failed:
        console.print(
            f"resume: skipping {state.skipped_failed} previously failed trials "
            "(sweep.retry_failed=true re-runs them)"
        )
    if not state.deployments:
        console.print("nothing to run: every trial of this sweep is already complete")


def print_trust_warnings(summary: pd.DataFrame) -> None:
    """Name the trials whose numbers need a second look, as the report's "Request checks" do.

    A saturated client, too short a trial, disagreeing token counts, failed requests.
    """
    checks = trial_checks(summary)
    if not checks:
        return
    console.print(f"warning: {len(checks)} trial(s) need a second look:", style="yellow")
    for line in checks:
        console.print(f"  - {line}", markup=False, highlight=False)
