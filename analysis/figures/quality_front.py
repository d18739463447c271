"""The quality front: the configurations no other beats on both cost and drift from the baseline.

From `analysis.report.quality.quality_table` (one row per deployment: its best trial's USD per 1M
output tokens, its KL over the baseline's top-K with the interval over texts): a configuration is on
the front when no other costs no more and drifts no more, and one of the two strictly less. The
front is on the two values as measured; the KL intervals are drawn as error bars, not used to
thin it. `front_points` hands the points to the report's plot (`quality_front_figure`, written as
`quality_front.png`) and to W&B (`analysis.tracking.tracking`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.figures.canvas import new_figure
from sweep.core import records as rec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

QUALITY_FRONT_FILE = "quality_front.png"
COST = rec.COST_PER_1M_OUTPUT
KL, KL_LOW, KL_HIGH = "kl_topk", "kl_topk_low", "kl_topk_high"
ON_FRONT = "on_quality_front"
POINT_COLUMNS = ("configuration", COST, KL, KL_LOW, KL_HIGH, ON_FRONT)


def front_points(table: pd.DataFrame) -> pd.DataFrame:
    """The deployments with both a cost and a KL, and whether each is on the front.

    Columns `POINT_COLUMNS`; empty when fewer than two deployments have both.
    """
    if table.empty or KL not in table or COST not in table:
        return pd.DataFrame(columns=list(POINT_COLUMNS))
    cost = pd.to_numeric(table[COST], errors="coerce")
    kl = pd.to_numeric(table[KL], errors="coerce")
    points = table[np.isfinite(cost) & np.isfinite(kl)].copy()
    if len(points) < 2:
        return pd.DataFrame(columns=list(POINT_COLUMNS))
    points[COST], points[KL] = cost[points.index], kl[points.index]
    c, k = points[COST].to_numpy(float), points[KL].to_numpy(float)
    no_worse = (c[None, :] <= c[:, None]) & (k[None, :] <= k[:, None])
    better = (c[None, :] < c[:, None]) | (k[None, :] < k[:, None])
    points[ON_FRONT] = ~(no_worse & better).any(axis=1)
    return points[list(POINT_COLUMNS)].sort_values(COST).reset_index(drop=True)


def quality_front_figure(points: pd.DataFrame, baseline: str, sweep: str | None = None) -> Figure:
    """USD per 1M output tokens against KL from the baseline; the front joined and named."""
    fig = new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    x, y = points[COST], points[KL]
    low = np.clip(y - points[KL_LOW], 0, None)
    high = np.clip(points[KL_HIGH] - y, 0, None)
    ax.errorbar(
        x, y, yerr=np.vstack([low, high]), fmt="o", color="tab:gray", alpha=0.6,
        ecolor="tab:gray", elinewidth=1, label="configuration (95% interval over texts)",
    )  # fmt: skip
    front = points[points[ON_FRONT]]
    ax.plot(front[COST], front[KL], "o-", color="tab:red", drawstyle="steps-post", label="front")
    for _, point in points.iterrows():
        ax.annotate(
            point["configuration"],
            (point[COST], point[KL]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize="x-small",
        )
    if (y > 0).all() and y.max() / y.min() >= 8:
        ax.set_yscale("log")
    ax.set_xlabel("USD per 1M output tokens (best trial)")
    ax.set_ylabel(f"KL from {baseline} over its top-K (nats per token)")
    title = "Quality against cost"
    ax.set_title(f"{title}: {sweep}" if sweep else title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def write_quality_front(
    table: pd.DataFrame, out_dir: str | Path, sweep: str | None = None
) -> Path | None:
    """The front's plot in `out_dir` (`QUALITY_FRONT_FILE`); None when it has under two points."""
    points = front_points(table)
    if points.empty:
        return None
    path = Path(out_dir) / QUALITY_FRONT_FILE
    baseline = str(table["baseline"].dropna().iloc[0]) if table["baseline"].notna().any() else ""
    quality_front_figure(points, baseline, sweep).savefig(path)
    return path
