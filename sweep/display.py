"""What the sweep prints: the dry run's plan, the resume line and the closing summary.

The dry run prints a summary of any size of plan (axes, counts, deployments, the time known
before running), then the table of every trial for a plan of up to `TRIALS_LISTED` trials or
with `sweep.list_trials=true`.
"""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from analysis.report.console import make_console
from analysis.report.flags import grouped_checks, trial_checks
from analysis.report.sections import pooled
from sweep.core.tune_config import parse_space
from sweep.driver.placement import trial_seconds
from sweep.driver.resume import ResumeState
from sweep.plan.plan import SweepPlan

console = make_console()
TRIALS_LISTED = 60  # a plan this size lists its trials in the dry run unasked
DEPLOYMENTS_SHOWN = 30  # rows of the dry run's deployment table
VALUES_SHOWN = 8  # values of one axis named in the dry run's summary


def print_plan(plan: SweepPlan) -> None:
    """The dry run: the plan's summary, and every trial of a small plan or on request.

    A tuning sweep (`search=tune`) plans its base configuration only; its space comes first.
    """
    for line in tune_lines(plan):
        console.print(line, markup=False, highlight=False)
    for line in plan_lines(plan):
        console.print(line, markup=False, highlight=False)
    console.print(deployment_table(plan))
    if plan.base.sweep.list_trials or len(plan.trials) <= TRIALS_LISTED:
        print_trials(plan)
    else:
        console.print(f"{len(plan.trials):,} trials: sweep.list_trials=true lists them")


def tune_lines(plan: SweepPlan) -> list[str]:
    """A tuning sweep's budget, objective and space (nothing for any other sweep)."""
    search = plan.base.search
    if search.mode != "tune":
        return []
    tune = search.tune
    lines = [
        f"sweep '{plan.name}': an optimiser chooses {tune.budget} configurations "
        f"({tune.goal} {tune.objective}); each is a deployment like the one below"
    ]
    for spec in parse_space(tune.space):
        values = (
            f"one of {list(spec.choices)}"
            if spec.choices is not None
            else f"{spec.low} to {spec.high}" + (" (int)" if spec.integer else "")
            + (" (log)" if spec.log else "") + (f" step {spec.step}" if spec.step else "")
        )  # fmt: skip
        when = f" when {' '.join(map(str, spec.when))}" if spec.when else ""
        lines.append(f"  {spec.name}: {values}{when}")
    return lines


def plan_lines(plan: SweepPlan) -> list[str]:
    """What the plan is: counts, its axes and repeats, and the time known before it runs."""
    trials = plan.trials
    known = [s for s in map(trial_seconds, trials) if s is not None]
    estimate = f"{_duration(sum(known))} of trials with a set length, run one after another"
    if len(known) < len(trials):
        estimate += (
            f"; {len(trials) - len(known):,} trials whose length the server sets "
            "(closed loop or batch)"
        )
    return [
        f"sweep '{plan.name}': {len(trials):,} trials in {len(plan.deployments):,} deployments "
        "(dry run, nothing runs)",
        *(f"  axis {axis}: {_values(values)}" for axis, values in plan.axes.items()),
        f"  repeats: {plan.base.sweep.repeats}",
        f"  time: {estimate}",
    ]


def deployment_table(plan: SweepPlan) -> Table:
    """One row per deployment (the first `DEPLOYMENTS_SHOWN`): trials, GPUs, known time."""
    table = Table(title="deployments")
    for column in ("deployment", "label", "trials", "GPUs", "accelerator", "known time"):
        table.add_column(column, overflow="fold")
    for deployment in plan.deployments[:DEPLOYMENTS_SHOWN]:
        seconds = [trial_seconds(t) for t in deployment.trials]
        table.add_row(
            deployment.deployment_id,
            deployment.label,
            f"{len(deployment.trials):,}",
            f"{deployment.num_gpus:g}",
            deployment.accelerator_type or "any",
            _duration(sum(s for s in seconds if s is not None)) if any(seconds) else "?",
        )
    if len(plan.deployments) > DEPLOYMENTS_SHOWN:
        table.add_row(f"... {len(plan.deployments) - DEPLOYMENTS_SHOWN:,} more", "", "", "", "", "")
    return table


def print_trials(plan: SweepPlan) -> None:
    """One row per trial, grouped by deployment."""
    table = Table(title=f"sweep '{plan.name}': every trial")
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


def _values(values: list) -> str:
    """An axis's values, the first `VALUES_SHOWN` of a long one, and how many."""
    shown = ", ".join(map(str, values[:VALUES_SHOWN]))
    more = f", ... ({len(values)} values)" if len(values) > VALUES_SHOWN else ""
    return f"[{shown}{more}]"


def _duration(seconds: float) -> str:
    """`2 h 05 min`, `3 min 20 s` or `12 s`."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


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
    checks = grouped_checks(summary) if pooled(summary) else trial_checks(summary)
    if not checks:
        return
    console.print(f"warning: {len(checks)} trial(s) need a second look:", style="yellow")
    for line in checks:
        console.print(f"  - {line}", markup=False, highlight=False)
