"""The report's "Tuning" section and finding: what the tuner found, in words and a picture.

The best configuration with its interval, the runners-up the probes cannot rank below it, each
argument's importance, the configurations tried (complete, pruned, failed, repeated), the
deployment-hours spent and those pruning saved, and the best so far against deployment-hours
(`analysis.figures.tuning_plot`). Read from `tune.parquet` (`analysis.stats.tuning`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.figures.tuning_plot import TUNING_TITLE
from analysis.report.sections import Image, Section
from analysis.stats.tuning import COMPLETE, Tuning, describe, params_of


def tuning_findings(tuning: Tuning | None) -> tuple[str, ...]:
    """The sentence naming the best configuration (none without a complete one)."""
    if tuning is None or tuning.best is None:
        return ()
    best = tuning.best
    counts = tuning.rows["state"].value_counts()
    tried = int(len(tuning.rows) - counts.get("duplicate", 0))
    text = (
        f"Tuning: the best of {tried} configurations is {describe(params_of(best))}, with "
        f"{tuning.objective} {_value(best['value'])}{_interval(tuning, best)}"
    )
    runners = len(tuning.runners_up)
    if runners:
        text += f"; {runners} other{'s' if runners > 1 else ''} within its interval"
    text += (
        f" ({tuning.deployment_hours:.3g} deployment-hours, {tuning.saved_hours:.2g} saved by "
        "stopping losers early)."
    )
    return (text,)


def tuning_sections(tuning: Tuning | None, plot: Path | None) -> list[Section]:
    """The "Tuning" section; nothing when the sweep did not tune."""
    if tuning is None:
        return []
    items = [*tuning_findings(tuning)]
    if tuning.best is None:
        items.append("No configuration completed: see the table for why each ended.")
    for _, row in tuning.runners_up.iterrows():
        items.append(
            f"Within noise of the best: {describe(params_of(row))}, {_value(row['value'])}"
            f"{_interval(tuning, row)}"
        )
    for imp in tuning.importances:
        where = (
            f" (over the {imp.judged_on} configurations it applied to)" if imp.conditional else ""
        )
        items.append(f"Importance of {imp.param}: {imp.importance:.2f}{where}")
    if tuning.importance_note:
        items.append(f"Importance: {tuning.importance_note}.")
    text = (
        "An optimiser (Optuna's TPE, asked and told by the sweep's driver) chose each "
        f"configuration; the objective is the {_objective(tuning)} "
        f"({tuning.direction}). A configuration's interval is its capacity search's bracket: the "
        "highest load that met the SLO and the lowest that failed. Pruned: a probe failed at or "
        "below the best capacity found before it started, so it stopped there. Importance: "
        "Optuna's PED-ANOVA evaluator, how much each argument matters for reaching the best "
        "quarter of the configurations that ended (a pruned one at the middle of its interval), "
        "normalised to sum 1; a conditional argument is judged where it applied."
    )
    images = (Image(TUNING_TITLE, plot),) if plot is not None else ()
    return [Section("Tuning", text, items=tuple(items), table=_table(tuning), images=images)]


def _table(tuning: Tuning) -> pd.DataFrame:
    rows = tuning.rows
    return pd.DataFrame(
        {
            "#": rows["number"].astype(int).astype(str),
            "Configuration": [describe(params_of(r)) for _, r in rows.iterrows()],
            "State": rows["state"],
            tuning.objective: [_value(v) for v in rows["value"]],
            "Interval": [
                _interval(tuning, r).strip(" ()").removeprefix("interval ") or "—"
                for _, r in rows.iterrows()
            ],  # fmt: skip
            "Probes": rows["probes"].astype(int).astype(str),
            "Deployment s": rows["deployment_s"].map(lambda s: f"{s:.1f}"),
            "Saved s": rows["saved_s"].map(lambda s: f"{s:.1f}"),
        }
    )


def _objective(tuning: Tuning) -> str:
    return {"capacity": "capacity (req/s or concurrency at the SLO)",
            "cost_per_mtok": "cost per 1M output tokens at capacity (USD)"}.get(
        tuning.objective, tuning.objective)  # fmt: skip


def _value(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    return f"{float(value):.4g}"


def _interval(tuning: Tuning, row: pd.Series) -> str:
    if tuning.objective not in ("capacity", "cost_per_mtok") or row["state"] not in (
        COMPLETE, "pruned"):  # fmt: skip
        return ""
    low = "0" if pd.isna(row["low"]) else _value(row["low"])
    high = "none failed" if pd.isna(row["high"]) else _value(row["high"])
    return f" (interval {low} to {high})"
