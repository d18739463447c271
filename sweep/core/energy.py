"""A trial's energy from its resource samples: joules per device and in all, and how measured.

`energy_columns` hands `sweep.core.summary` the energy columns of `sweep.core.records` over one
window (the throughputs' window: first send to last end of the measured requests). Each device
of the trial's timeseries is measured by the best reading it has:

- a cumulative counter (`records.ENERGY_COUNTER_J`: NVML's total-energy counter of a GPU, RAPL's
  counter of a CPU package) read at least twice: its difference over the window, linearly
  interpolated between readings; a window edge outside the readings (a stage's samples start
  inside it, `sweep.core.stage_summary`) is reached at the mean power of the readings;
- else a GPU's power samples (`records.GPU_POWER_W`), integrated over the window by the
  trapezoid rule (the first and last samples hold beyond the sampled span);
- else nothing: the device is not measured.

The total is the sum over the devices, and only when every device was measured: a GPU of the
task without a reading would make a sum too small that looks right. Without a total every energy
column is None and the method says `not_measured`, never 0.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from sweep.core import records as rec

Summary = dict[str, float | int | str | None]
GPU_PREFIX = "gpu"
RAPL_PREFIX = "rapl:"
J_PER_WH = 3600.0


def energy_columns(
    timeseries: pd.DataFrame | None,
    window: tuple[float, float] | None,
    output_tokens: int,
    requests: int,
) -> Summary:
    """The energy summary columns of one trial (or stage).

    Args:
        timeseries: the trial's samples in long format (`records.TIMESERIES_SCHEMA`), or None.
        window: start and end of the measured span on the trial's clock; None when nothing was
            measured (no completed request).
        output_tokens: output tokens of the measured requests.
        requests: completed measured requests.

    Returns:
        `records.ENERGY_*` and `records.MEAN_POWER_W`, None where not measured.
    """
    devices = device_energy(timeseries, window)
    values = [joules for joules, _ in devices.values()]
    measured = bool(devices) and all(j is not None for j in values)
    total = float(sum(j for j in values if j is not None)) if measured else None
    methods = sorted({method for _, method in devices.values()})
    start, end = window or (0.0, 0.0)
    return {
        rec.ENERGY_J: total,
        rec.ENERGY_J_PER_OUTPUT_TOKEN: _per(total, output_tokens),
        rec.ENERGY_J_PER_REQUEST: _per(total, requests),
        rec.ENERGY_WH_PER_1M_OUTPUT: _scaled(_per(total, output_tokens), 1e6 / J_PER_WH),
        rec.MEAN_POWER_W: _per(total, end - start),
        rec.ENERGY_METHOD: (
            rec.ENERGY_METHOD_SEPARATOR.join(methods) if measured else rec.ENERGY_NOT_MEASURED
        ),
        rec.ENERGY_DEVICES: (
            json.dumps({d: {"j": j, "method": m} for d, (j, m) in sorted(devices.items())})
            if devices
            else None
        ),
    }


def device_energy(
    timeseries: pd.DataFrame | None, window: tuple[float, float] | None
) -> dict[str, tuple[float | None, str]]:
    """Joules in the window (None: not measured) and method of each device (timeseries source).

    Devices are the GPUs and RAPL zones the timeseries has samples of; none without samples or
    without a window.
    """
    if timeseries is None or timeseries.empty or window is None or window[1] <= window[0]:
        return {}
    sources = timeseries[rec.SOURCE].astype(str)
    devices = sources[sources.str.startswith(GPU_PREFIX) | sources.str.startswith(RAPL_PREFIX)]
    return {
        source: _one_device(timeseries[sources == source], window)
        for source in sorted(devices.unique())
    }


def _one_device(samples: pd.DataFrame, window: tuple[float, float]) -> tuple[float | None, str]:
    start, end = window
    t, counter = _series(samples, rec.ENERGY_COUNTER_J)
    if t.size >= 2 and t[-1] > t[0]:
        joules = float(_cumulative(t, counter, end) - _cumulative(t, counter, start))
        gpu = str(samples[rec.SOURCE].iloc[0]).startswith(GPU_PREFIX)
        return joules, rec.ENERGY_NVML_COUNTER if gpu else rec.ENERGY_RAPL
    t, power = _series(samples, rec.GPU_POWER_W)
    if t.size:
        return integral(t, power, start, end), rec.ENERGY_POWER_INTEGRAL
    return None, rec.ENERGY_NOT_MEASURED


def integral(t: np.ndarray, watts: np.ndarray, start: float, end: float) -> float:
    """Joules of power samples (`t` ascending) over [start, end].

    The trapezoid rule between samples; the first and last sample hold before and after them.
    """
    inside = t[(t > start) & (t < end)]
    grid = np.concatenate(([start], inside, [end]))
    values = np.interp(grid, t, watts)
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid)))


def _cumulative(t: np.ndarray, counter: np.ndarray, at: float) -> float:
    """A counter's value at `at`: interpolated between readings, at their mean power outside."""
    watts = (counter[-1] - counter[0]) / (t[-1] - t[0])
    if at < t[0]:
        return float(counter[0] - watts * (t[0] - at))
    if at > t[-1]:
        return float(counter[-1] + watts * (at - t[-1]))
    return float(np.interp(at, t, counter))


def _series(samples: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Times and values of one metric, in time order, without missing values."""
    rows = samples[samples[rec.METRIC] == metric]
    t = pd.to_numeric(rows[rec.T_S], errors="coerce").to_numpy(dtype=float)
    v = pd.to_numeric(rows[rec.VALUE], errors="coerce").to_numpy(dtype=float)
    keep = ~(np.isnan(t) | np.isnan(v))
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], v[keep][order]


def _per(total: float | None, count: float) -> float | None:
    return None if total is None or count <= 0 else total / count


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor
