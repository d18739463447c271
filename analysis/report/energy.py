"""The report's energy section: joules per trial, per output token and per request, and how.

Reads the energy columns the worker recorded (`sweep.core.energy`): one row per trial with its
method, energy, J per output token, J per request, Wh per 1M output tokens and mean power,
beside USD per 1M output tokens. A trial whose energy was not measured says so in each cell.
Results written before energy was recorded get no section.
"""

from __future__ import annotations

import pandas as pd

from analysis.read.columns import series_labels
from analysis.report.sections import MISSING, Section, formatted, measured
from sweep.core import records as rec

METHODS = {
    rec.ENERGY_NVML_COUNTER: "NVML energy counter",
    rec.ENERGY_POWER_INTEGRAL: "NVML power, integrated",
    rec.ENERGY_RAPL: "RAPL (CPU packages and DRAM)",
    rec.ENERGY_NOT_MEASURED: "not measured",
}
# Energy figures of the table: column, header, number format.
FIGURES = (
    (rec.ENERGY_J, "Energy (J)", ",.1f"),
    (rec.ENERGY_J_PER_OUTPUT_TOKEN, "J / output tok", ",.4g"),
    (rec.ENERGY_J_PER_REQUEST, "J / request", ",.4g"),
    (rec.ENERGY_WH_PER_1M_OUTPUT, "Wh / 1M output tok", ",.4g"),
    (rec.MEAN_POWER_W, "Mean power (W)", ",.1f"),
)


def energy_sections(trials: pd.DataFrame) -> list[Section]:
    """The "Energy" section of the successful trials; none for results without energy columns."""
    if rec.ENERGY_METHOD not in trials:
        return []
    ok = trials[trials[rec.TRIAL_STATUS] == rec.STATUS_OK]
    if ok.empty:
        return []
    methods = ok[rec.ENERGY_METHOD].fillna(rec.ENERGY_NOT_MEASURED)
    if methods.eq(rec.ENERGY_NOT_MEASURED).all():
        text = (
            "Not measured: where these trials ran, no GPU of theirs answered NVML and no RAPL "
            "counter was readable (`/sys/class/powercap`, often root only)."
        )
        return [Section("Energy", text)]
    table = pd.DataFrame(
        {
            "Trial": ok.get(rec.LABEL, ok[rec.TRIAL_ID]),
            "Series": series_labels(ok),
            "Method": methods.map(lambda m: " + ".join(_method_names(m))),
            **{
                header: measured(formatted(ok.get(column), fmt), ok)
                for column, header, fmt in FIGURES
            },
            "USD / 1M output tok": formatted(ok.get(rec.COST_PER_1M_OUTPUT), ",.2f"),
        }
    ).fillna(MISSING)
    text = (
        "Energy over each trial's measured span (first send to last end, as its throughput), "
        "summed over the devices of its task: a GPU trial's GPUs (their NVML energy counter, "
        "else their sampled power integrated), a CPU trial's packages and their DRAM (RAPL: "
        "everything on the node counts, the load generator too). Wh per 1M output tokens = J "
        "per output token / 3600 x 1e6; the per-device joules are in `energy_devices`."
    )
    return [Section("Energy", text, table=table.reset_index(drop=True))]


def _method_names(joined: str) -> list[str]:
    return [METHODS.get(m, m) for m in str(joined).split(rec.ENERGY_METHOD_SEPARATOR)]
