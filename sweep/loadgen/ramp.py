"""An open loop's ramp up to its target rate (`workload.ramp`), as `vllm bench serve` ramps.

The rate rises from `ramp_start_rate` to `request_rate` over `ramp_s` seconds, linearly or
exponentially, then holds at the target. The seeded schedule (`sweep.loadgen.arrivals`) keeps
its gaps and only its clock is bent: the arrival due at `u` seconds at the target rate moves to
where the ramp's integrated rate reaches `u x request_rate` (the time-rescaling of a Poisson
process), so a ramped Poisson schedule is a Poisson process of the rising rate, and burstiness
is kept. vLLM's `--ramp-up-strategy` spreads its ramp over all requests; this one lasts `ramp_s`
seconds and the rest of the schedule runs at the target, which the steady-state window measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# An exponential ramp cannot start from 0: without `ramp_start_rate` it starts at this share of
# the target (a hundredth: the rate doubles about every seventh of the ramp).
EXPONENTIAL_START = 0.01


def start_rate(ramp: str, rate: float, start: float | None) -> float:
    """The rate a ramp starts from: `start`, else 0 (linear) or a hundredth (exponential)."""
    if start is not None:
        return start
    return 0.0 if ramp == "linear" else rate * EXPONENTIAL_START


def rate_at(t: float, ramp: str, rate: float, ramp_s: float, start: float | None = None) -> float:
    """The offered rate `t` seconds after the start (req/s)."""
    r0 = start_rate(ramp, rate, start)
    if ramp == "none" or t >= ramp_s:
        return rate
    if ramp == "linear":
        return r0 + (rate - r0) * t / ramp_s
    return r0 * (rate / r0) ** (t / ramp_s)


def ramped(
    offsets: Sequence[float], rate: float, ramp: str, ramp_s: float, start: float | None = None
) -> list[float]:
    """`offsets` drawn at the constant `rate`, moved onto the ramp's clock (seconds)."""
    if ramp == "none":
        return list(offsets)
    r0 = start_rate(ramp, rate, start)
    if ramp == "linear":
        half_slope = (rate - r0) / (2 * ramp_s)
        in_ramp = (r0 + rate) / 2 * ramp_s  # requests the ramp offers
    else:
        growth = math.log(rate / r0) / ramp_s
        in_ramp = (rate - r0) / growth
    times = []
    for offset in offsets:
        due = offset * rate  # requests offered before this one, at the target rate
        if due >= in_ramp:
            times.append(ramp_s + (due - in_ramp) / rate)
        elif due <= 0:
            times.append(0.0)
        elif ramp == "linear":  # r0 t + half_slope t^2 = due, the root written stably
            times.append(2 * due / (r0 + math.sqrt(r0 * r0 + 4 * half_slope * due)))
        else:  # r0 (e^(growth t) - 1) / growth = due
            times.append(math.log1p(growth * due / r0) / growth)
    return times
