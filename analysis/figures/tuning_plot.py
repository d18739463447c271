"""The tuning study's figure: the best objective found so far against deployment-hours spent."""

from __future__ import annotations

from pathlib import Path

from analysis.figures.canvas import new_figure
from analysis.stats.tuning import COMPLETE, PRUNED, Tuning

TUNING_PLOT = "tuning_progress.png"
TUNING_TITLE = "Best configuration so far against deployment-hours"


def write_tuning_plot(tuning: Tuning, out: Path, sweep: str) -> Path:
    """Each configuration as a point at the hours spent when it ended, the best so far a step."""
    fig = new_figure(7.0, 4.0)
    ax = fig.add_subplot()
    progress = tuning.progress
    rows = tuning.rows.set_index("number").loc[progress["number"]]
    hours = progress["deployment_hours"].to_numpy()
    ax.step(hours, progress["best_so_far"], where="post", color="C0", label="best so far")
    complete = (rows["state"] == COMPLETE).to_numpy()
    pruned = (rows["state"] == PRUNED).to_numpy()
    ax.scatter(hours[complete], rows["value"].to_numpy()[complete], color="C0", s=18,
               label="complete")  # fmt: skip
    if pruned.any():
        ax.scatter(hours[pruned], rows["high"].to_numpy()[pruned], color="C3", marker="v", s=18,
                   label="pruned (its failing load)")  # fmt: skip
    ax.set_xlabel("deployment-hours spent")
    unit = "capacity (req/s)" if tuning.objective == "capacity" else tuning.objective
    ax.set_ylabel(unit)
    ax.set_title(f"{sweep}: {TUNING_TITLE.lower()}")
    ax.legend(loc="lower right", fontsize=8)
    path = out / TUNING_PLOT
    fig.savefig(path)
    return path
