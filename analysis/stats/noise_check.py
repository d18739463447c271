"""The A/A check: how much the same configuration's figures move from run to run on this machine.

`spread_table` takes a sweep that ran one configuration several times (`+experiment=aa_check`, or
any sweep with `sweep.repeats` >= 2) and gives, per configuration and metric, the runs, their
mean, the coefficient of variation, the largest difference between two runs and the half-width of
the 95% interval of the mean, all in percent of the mean. A difference between two
configurations smaller than these is not one this machine can show.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import numeric_column
from analysis.stats.compare import configuration_names
from analysis.stats.intervals import confidence_interval
from sweep.core import records as rec

SPREAD_METRICS = {
    rec.OUTPUT_THROUGHPUT: "Output tok/s",
    rec.latency_column("ttft", "median"): "TTFT p50 (ms)",
    rec.latency_column("tpot", "median"): "TPOT p50 (ms)",
    rec.latency_column("e2e", "median"): "E2E p50 (ms)",
}


def spread_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Run-to-run spread of each repeated configuration (display strings); empty without repeats."""
    ok = summary[summary[rec.TRIAL_STATUS] == rec.STATUS_OK]
    rows = []
    for name, group in ok.groupby(configuration_names(ok), sort=True):
        if len(group) < 2:
            continue
        for metric, label in SPREAD_METRICS.items():
            values = numeric_column(group, metric).dropna()
            if len(values) < 2 or values.mean() == 0:
                continue
            mean, low, high = confidence_interval(values)
            rows.append(
                {
                    "Configuration": name,
                    "Metric": label,
                    "Runs": str(len(values)),
                    "Mean": f"{mean:,.2f}",
                    "CV (%)": f"{values.std(ddof=1) / mean * 100:.1f}",
                    "Max - min (%)": f"{(values.max() - values.min()) / mean * 100:.1f}",
                    "95% CI ± (%)": f"{(high - low) / 2 / mean * 100:.1f}",
                }
            )
    return pd.DataFrame(rows)
