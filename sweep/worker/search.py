"""The capacity search: which loads to probe next, and what the probes found.

A capacity search looks for the highest offered load (`workload.request_rate` for open loops,
`workload.concurrency` for closed loops: `integer` loads) whose trial meets the SLO
(`sweep.core.slo.verdict`). It is stateless: each answer is a function of the settings and the
probes so far, in the order they ran, so a search resumed from its Parquet rows replays the same
choices. The worker asks `next_step` for the loads to run, runs them as trials, appends their
`Probe`s (`sweep.spec`, where a search's seed carries them) and asks again until none is left;
`capacity` reads the answer. `profile_loads` is GuideLLM's sweep profile: the rates between a
synchronous and a maximum-throughput run.

The rules, with k = `search.parallel` loads probed at once:

- Bracket: start at `search.start` (1.0 by default) and multiply by `search.growth` while
  every probe passes, k steps at a time, up to `search.max_load`; a pass there ends the search
  (capacity = max_load, perhaps more). If the first probes fail, divide by the growth down to
  `search.min_load` (start / growth**4 by default); a failure there ends it with capacity 0.
- Narrow: between lo, the highest passing load, and hi, the lowest failing load above it, until
  (hi - lo) / hi <= `search.tolerance` (for integer loads also when hi - lo <= 1). With k = 1
  the next load is where the SLO margin crosses 0, interpolated linearly in load between the
  margins of lo and hi (a margin below -1 reads as -1), and no higher than the request rate hi
  achieved; the midpoint without either, or when the last two narrowing probes did not halve
  the bracket between them (a one-sided interpolation that crawls). It is kept inside
  [lo + w/10, hi - w/10], w = hi - lo. With k > 1: k evenly spaced interior points (a k-ary
  search).
- Non-monotone histories (noise: a pass above a failure) are read by the same rule: lo is the
  highest pass and hi the lowest failure above it; failures below lo are ignored, and
  `capacity` names them. No load is probed twice and each step probes inside the open interval
  the rule leaves, so a search cannot loop.
- At most `search.max_probes` probes in all; a search cut there reports the best bracket so
  far, not converged.
- Stopped early: with `search.stop_below` (set by the tuner, `sweep.tune`: the best capacity
  found so far), a failure at or below it proves the configuration worse than the best, and the
  search ends there, `pruned`, whatever it has not probed yet.

Integer loads are rounded, kept >= 1 and deduplicated; a step up or down moves them by one at
least. Rates are written with as few significant digits as keep them within 1% of the bracket of the
chosen point (`5.25`, not `5.2487193`), which keeps trial labels short.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sweep.core.config import SearchConfig
from sweep.spec import Probe

BRACKET, NARROW, DONE = "bracket", "narrow", "done"
DEFAULT_START = 1.0
MIN_LOAD_STEPS = 4  # min_load defaults to start / growth**4
SAFEGUARD = 0.1  # a narrowing probe stays this share of the bracket away from its ends
_EPS = 1e-9
_ENDINGS = {
    "tolerance": "within tolerance",
    "adjacent": "adjacent loads",
    "max_probes": "max_probes reached before tolerance",
}


@dataclass(frozen=True)
class Step:
    """What to probe next: `phase` (bracket, narrow, or done with no loads) and the loads."""

    phase: str
    loads: tuple[float, ...]


@dataclass(frozen=True)
class Capacity:
    """The answer of a search.

    Attributes:
        load: the highest load that met the SLO (the capacity); 0.0 when none did.
        passed_load: that load, None when none passed.
        failed_load: the lowest failing load above it, None when none failed there.
        converged: the search ended by its own rule (within tolerance, a pass at max_load, a
            failure at min_load), not cut by max_probes nor still running.
        reason: how it ended, in words.
        pruned: it was stopped early, proven below `search.stop_below` (not converged).
    """

    load: float
    passed_load: float | None
    failed_load: float | None
    converged: bool
    reason: str
    pruned: bool = False


@dataclass(frozen=True)
class _Bounds:
    start: float
    min_load: float
    max_load: float
    growth: float
    integer: bool


@dataclass(frozen=True)
class _State:
    phase: str  # bracket (up from lo, or down from hi), narrow or done
    lo: Probe | None  # the highest pass
    hi: Probe | None  # the lowest failure above lo (the lowest failure when none passed)
    ended: str = ""  # for done: tolerance, adjacent, max_load, min_load or max_probes


def next_loads(search: SearchConfig, integer: bool, history: Sequence[Probe]) -> list[float]:
    """The loads to probe next (at most `search.parallel`, none probed before); [] when done."""
    return list(next_step(search, integer, history).loads)


def next_step(search: SearchConfig, integer: bool, history: Sequence[Probe]) -> Step:
    """The loads to probe next and the phase they belong to (`bracket`, `narrow`, `done`).

    Args:
        search: the search settings.
        integer: whether loads are whole numbers (concurrency).
        history: every probe so far, in the order they ran.

    Returns:
        The phase and at most `search.parallel` loads, none probed before; no loads when done.
    """
    bounds = _bounds(search, integer)
    state = _state(search, bounds, history)
    if state.phase == DONE:
        return Step(DONE, ())
    k = min(search.parallel, search.max_probes - len(history))
    if state.phase == NARROW:
        assert state.lo is not None and state.hi is not None
        stalled = k == 1 and _stalled(search, bounds, history)
        loads = _narrow(state.lo, state.hi, k, integer, stalled)
    elif state.lo is not None:
        loads = _steps(state.lo.load, bounds, k, up=True)
    elif state.hi is not None:
        loads = _steps(state.hi.load, bounds, k, up=False)
    else:
        loads = [bounds.start, *_steps(bounds.start, bounds, k - 1, up=True)]
    probed = [p.load for p in history]
    fresh: list[float] = []
    for load in loads:
        if not any(_same(load, other) for other in [*probed, *fresh]):
            fresh.append(load)
    return Step(state.phase, tuple(fresh))


def capacity(search: SearchConfig, history: Sequence[Probe], *, integer: bool = False) -> Capacity:
    """What the probes so far say: the capacity, its bracket, and how the search ended.

    Args:
        search: the search settings (the same as the probes were chosen with).
        history: every probe so far, in the order they ran.
        integer: whether loads are concurrency (whole numbers) rather than request rates.

    Returns:
        The capacity: the highest passing load under the bracketing rule, 0.0 when none passed.
    """
    bounds = _bounds(search, integer)
    state = _state(search, bounds, history)
    lo, hi = state.lo, state.hi
    converged = state.phase == DONE and state.ended != "max_probes"
    if not history:
        reason = "no probe yet"
    elif state.ended == "max_load":
        reason = f"max_load reached: passes at max_load ({_load(lo, integer)})"
    elif state.ended == "min_load":
        reason = f"fails the SLO at the lowest load probed ({_load(hi, integer)}): {_why(hi)}"
    elif state.ended == "pruned":
        reason = (
            f"pruned: fails at {_load(hi, integer)}, at or below the best capacity found so far "
            f"({_number(search.stop_below or 0.0)}): {_bracket_text(lo, hi, integer)}"
        )
    else:
        head = _ENDINGS.get(state.ended, "searching")
        reason = f"{head}: {_bracket_text(lo, hi, integer)}"
    ignored = [p.load for p in history if lo is not None and not p.passed and p.load < lo.load]
    if ignored:
        loads = ", ".join(_number(load) for load in sorted(ignored))
        reason += f" (non-monotone: failures at {loads} below the capacity ignored)"
    return Capacity(
        load=lo.load if lo is not None else 0.0,
        passed_load=lo.load if lo is not None else None,
        failed_load=hi.load if hi is not None else None,
        converged=converged and state.ended != "pruned",
        reason=reason,
        pruned=state.ended == "pruned",
    )


def profile_loads(search: SearchConfig, synchronous_rate: float, max_rate: float) -> list[float]:
    """GuideLLM's sweep profile: `search.points` rates strictly between the two measured rates.

    Linear spacing divides [synchronous_rate, max_rate] evenly; geometric spacing evenly in log
    (it needs synchronous_rate > 0). [] when max_rate is not above synchronous_rate.
    """
    n = search.points
    if not 0.0 <= synchronous_rate < max_rate:
        return []
    if search.spacing == "geometric":
        if synchronous_rate <= 0.0:
            return []
        ratio = max_rate / synchronous_rate
        return [synchronous_rate * ratio ** (i / (n + 1)) for i in range(1, n + 1)]
    width = max_rate - synchronous_rate
    return [synchronous_rate + width * i / (n + 1) for i in range(1, n + 1)]


def _bounds(search: SearchConfig, integer: bool) -> _Bounds:
    start = search.start or DEFAULT_START
    min_load = search.min_load or start / search.growth**MIN_LOAD_STEPS
    max_load = search.max_load or math.inf
    if integer:
        start, min_load = max(1.0, round(start)), max(1.0, round(min_load))
        max_load = max(start, math.floor(max_load)) if math.isfinite(max_load) else max_load
    return _Bounds(start, min(min_load, start), max(max_load, start), search.growth, integer)


def _state(search: SearchConfig, bounds: _Bounds, history: Sequence[Probe]) -> _State:
    passes = [p for p in history if p.passed]
    lo = max(passes, key=lambda p: p.load) if passes else None
    above = [p for p in history if not p.passed and (lo is None or p.load > lo.load)]
    hi = min(above, key=lambda p: p.load) if above else None
    if lo is not None and hi is not None:
        if (hi.load - lo.load) / hi.load <= search.tolerance + _EPS:
            return _State(DONE, lo, hi, "tolerance")
        if bounds.integer and hi.load - lo.load <= 1 + _EPS:
            return _State(DONE, lo, hi, "adjacent")
        phase = NARROW
    elif lo is not None and lo.load >= bounds.max_load * (1 - _EPS):
        return _State(DONE, lo, hi, "max_load")
    elif hi is not None and lo is None and hi.load <= bounds.min_load * (1 + _EPS):
        return _State(DONE, lo, hi, "min_load")
    else:
        phase = BRACKET
    bound = search.stop_below
    if bound is not None and hi is not None and hi.load <= bound * (1 + _EPS):
        return _State(DONE, lo, hi, "pruned")  # proven below the best found so far
    if len(history) >= search.max_probes:
        return _State(DONE, lo, hi, "max_probes")
    return _State(phase, lo, hi)


def _steps(load: float, bounds: _Bounds, k: int, *, up: bool) -> list[float]:
    """The k growth steps up from `load` (capped at max_load) or down (to min_load)."""
    loads: list[float] = []
    for _ in range(k):
        step = load * bounds.growth if up else load / bounds.growth
        if bounds.integer:  # a whole step at least, or a small growth would stand still
            step = max(round(step), load + 1) if up else min(round(step), load - 1)
        load = float(min(step, bounds.max_load) if up else max(step, bounds.min_load))
        loads.append(load)
    return loads


def _narrow(lo: Probe, hi: Probe, k: int, integer: bool, stalled: bool) -> list[float]:
    width = hi.load - lo.load
    guard = SAFEGUARD * width
    if k == 1:
        guess = None if stalled else _crossing(lo, hi, integer)
        x = lo.load + width / 2 if guess is None else guess
        points = [min(max(x, lo.load + guard), hi.load - guard)]
    else:
        points = [lo.load + width * i / (k + 1) for i in range(1, k + 1)]
    if not integer:
        return [_tidy(x, width / 100) for x in points]
    inside = range(math.floor(lo.load) + 1, math.ceil(hi.load))
    if len(inside) <= k:
        return [float(x) for x in inside]
    return [float(min(max(round(x), inside[0]), inside[-1])) for x in points]


def _crossing(lo: Probe, hi: Probe, integer: bool) -> float | None:
    """Where the SLO margin reaches 0, linear between lo and hi, but not above what hi achieved.

    A request rate the server achieved under more load than it could take is about its
    ceiling, and the capacity within an SLO lies below its ceiling (concurrency has no such
    bound: it is not a rate).
    """
    m_lo, m_hi, achieved = lo.margin, hi.margin, hi.achieved
    guess = None
    if m_lo is not None and m_hi is not None and math.isfinite(m_lo - m_hi) and m_lo >= 0 > m_hi:
        # Past twice its limit a trial says little about where the margin crosses 0 (latency
        # climbs steeply at the knee): read every such margin as -1, or each step would crawl
        # up from lo.
        m_lo, m_hi = min(m_lo, 1.0), max(m_hi, -1.0)
        guess = lo.load + (hi.load - lo.load) * m_lo / (m_lo - m_hi)
    if not integer and achieved is not None and lo.load < achieved < hi.load:
        guess = achieved if guess is None else min(guess, achieved)
    return guess


def _stalled(search: SearchConfig, bounds: _Bounds, history: Sequence[Probe]) -> bool:
    """Whether the last two narrowing probes left half or more of the bracket before them."""
    widths = []
    for n in range(len(history) + 1):
        state = _state(search, bounds, history[:n])
        if state.phase == NARROW:
            assert state.lo is not None and state.hi is not None
            widths.append(state.hi.load - state.lo.load)
    return len(widths) >= 3 and widths[-1] >= widths[-3] / 2


def _tidy(x: float, slack: float) -> float:
    """`x` with the fewest significant digits that move it by at most `slack`."""
    for digits in range(1, 16):
        rounded = float(f"{x:.{digits}g}")
        if abs(rounded - x) <= slack:
            return rounded
    return x


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _EPS * max(abs(a), abs(b), 1.0)


def _number(load: float) -> str:
    return f"{load:.0f}" if load >= 1000 else f"{load:.4g}"


def _load(probe: Probe | None, integer: bool) -> str:
    if probe is None:
        return "none"
    return f"concurrency {_number(probe.load)}" if integer else f"{_number(probe.load)} req/s"


def _why(probe: Probe | None) -> str:
    return probe.reason if probe is not None and probe.reason else "no reason recorded"


def _bracket_text(lo: Probe | None, hi: Probe | None, integer: bool) -> str:
    if lo is None:
        return f"fails at every load probed, down to {_load(hi, integer)}"
    if hi is None:
        return f"passes at every load probed, up to {_load(lo, integer)}"
    gap = (hi.load - lo.load) / hi.load
    return f"passes at {_load(lo, integer)}, fails at {_load(hi, integer)} ({gap:.1%} apart)"
