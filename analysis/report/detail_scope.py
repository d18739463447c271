"""Which trials' detail files a report reads: so a sweep of 10,000 trials is never held at once.

The summary rows carry each trial's numbers; the report goes back to a trial's own files only
for what the summary cannot tell:
- its request records (`request_trials`): goodput under an SLO, the bootstrap interval of a
  configuration that a single trial stands for (`analysis.stats.noise`), TTFT by turn of a
  multi-turn trial, and a proxy's cache hits;
- its time series and time slices (`drawn_trials`): the timelines draw at most `DRAWN` trials,
  the heaviest of each series, as a plot of more lines reads as none.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import load_values, series_labels
from analysis.report.proxy_cache import NO_PROXY, PROXY_NAME
from analysis.stats.compare import (
    NOISE_METRICS,
    RATIO_COLUMNS,
    SLO_KEYS,
    Slo,
    configuration_names,
)
from analysis.stats.noise import single_valued
from sweep.core import records as rec

DRAWN = 12  # trials whose timelines the report draws
MULTI_TURN = "multi_turn"  # the dataset whose requests have turns (`sweep.datasets`)


def request_trials(summary: pd.DataFrame, slo: Slo | None = None) -> list[str]:
    """Ids of the trials whose request records the report needs (see the module docstring)."""
    ok = summary[rec.TRIAL_STATUS] == rec.STATUS_OK
    metrics = tuple(dict.fromkeys((*NOISE_METRICS, *RATIO_COLUMNS)))
    needed = single_valued(summary, configuration_names(summary), metrics)
    has_slo = slo is not None and any(v is not None for v in slo.values())
    if has_slo:
        needed |= ok
    for key in SLO_KEYS:  # a trial held to its own `slo.*` config
        column = f"{rec.SLO_PREFIX}{key}"
        if column in summary:
            needed |= ok & pd.to_numeric(summary[column], errors="coerce").notna()
    if rec.DATASET_NAME in summary:
        needed |= summary[rec.DATASET_NAME] == MULTI_TURN
    if PROXY_NAME in summary:
        needed |= summary[PROXY_NAME].fillna(NO_PROXY) != NO_PROXY
    return summary.loc[needed, rec.TRIAL_ID].tolist()


def drawn_trials(summary: pd.DataFrame) -> list[str]:
    """Ids of the trials the timelines draw: all of a small sweep, else one per series.

    Each series' trial at its highest load (its first repeat), successful ones first, up to
    `DRAWN`.
    """
    if len(summary) <= DRAWN:
        return summary[rec.TRIAL_ID].tolist()
    keys = pd.DataFrame(
        {
            "failed": summary[rec.TRIAL_STATUS] != rec.STATUS_OK,
            "series": series_labels(summary),
            "load": -load_values(summary).fillna(0),
            "repeat": summary[rec.REPEAT] if rec.REPEAT in summary else 0,
            "id": summary[rec.TRIAL_ID],
        }
    ).sort_values(["failed", "series", "load", "repeat", "id"])
    return keys.drop_duplicates("series")["id"].head(DRAWN).tolist()
