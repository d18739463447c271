"""The capacity search against servers whose capacity is known.

Each synthetic server answers a probe with a p99 latency, held to the SLO by
`sweep.core.slo.verdict` as a real trial's summary row would be. The queue server's latency
grows as a / (c - load), the way a queue's does near saturation, and past 0.98 c it grows with
the excess load, as a queue that fills for the whole trial does; its capacity under a limit L is
c - a / L. The search must land within the tolerance below the truth, in far fewer probes than a
grid fine enough to find the same answer.
"""

import math
import random

import pytest

from sweep.core import records as rec
from sweep.core.config import SearchConfig, SLOConfig
from sweep.core.slo import verdict
from sweep.spec import Probe
from sweep.worker.search import capacity, next_loads, next_step, profile_loads

TOLERANCE = 0.05
LIMIT_MS = 500.0
SLO = SLOConfig(ttft_ms_p99=LIMIT_MS)


def search(**settings) -> SearchConfig:
    return SearchConfig(**{"mode": "capacity", "max_probes": 40, **settings})


def probe(load: float, latency_ms: float, achieved: float | None = None) -> Probe:
    result = verdict(SLO, {rec.TRIAL_STATUS: rec.STATUS_OK, "ttft_ms_p99": latency_ms})
    return Probe(load, result.passed, result.margin, achieved, result.reason)


def queue_latency_ms(c: float, a: float):
    """The p99 latency of a server that saturates at rate c."""

    def latency_ms(load: float) -> float:
        if load < 0.98 * c:
            return a / (c - load)
        return a / (0.02 * c) + (load - 0.98 * c) / c * 30_000.0

    return latency_ms


def queue_server(c: float, a: float):
    """Returns (judge, the true capacity under LIMIT_MS)."""
    latency_ms = queue_latency_ms(c, a)
    return (lambda load: probe(load, latency_ms(load))), c - a / LIMIT_MS


def step_server(truth: float):
    """Passes up to `truth`, fails above it, and says nothing of its margin."""
    return lambda load: Probe(load, load <= truth)


def run(config: SearchConfig, judge, integer: bool = False):
    history: list[Probe] = []
    rounds = 0
    while loads := next_loads(config, integer, history):
        assert len(loads) <= config.parallel
        assert not {p.load for p in history} & set(loads), "a load probed twice"
        history += [judge(load) for load in loads]
        rounds += 1
        assert rounds < 100, "the search loops"
    return history, rounds, capacity(config, history, integer=integer)


def grid_size(truth: float, tolerance: float = TOLERANCE) -> int:
    """Points of a grid that finds the truth to `tolerance` without knowing its scale.

    Geometric at the tolerance's spacing, from the search's lowest load (start / 2**4) to twice
    the truth: the issue's dense grid, in the range the search itself covers.
    """
    return math.ceil(math.log(2 * truth * 16) / -math.log(1 - tolerance))


QUEUES = [(10, 100), (10, 1000), (37, 50), (3.3, 1), (200, 5000), (0.5, 10), (64, 30), (7, 200)]


@pytest.mark.parametrize(("c", "a"), QUEUES)
def test_finds_the_capacity_of_a_queue_within_the_tolerance(c, a):
    judge, truth = queue_server(c, a)
    history, _, found = run(search(tolerance=TOLERANCE), judge)
    assert truth * (1 - TOLERANCE) <= found.load <= truth
    assert found.converged and found.reason.startswith("within tolerance: passes at")
    assert found.failed_load is not None and found.failed_load >= truth
    assert len(history) <= 15
    assert 3 * len(history) <= grid_size(truth)


@pytest.mark.parametrize("truth", [0.3, 1.0, 2.7, 9.99, 40.0, 333.0])
def test_finds_a_step_by_bisection(truth):
    history, _, found = run(search(), step_server(truth))
    assert truth * (1 - TOLERANCE) <= found.load <= truth
    assert found.converged
    assert 3 * len(history) <= grid_size(truth)


@pytest.mark.parametrize(("c", "a"), QUEUES)
def test_three_probes_at_a_time_take_fewer_rounds(c, a):
    judge, truth = queue_server(c, a)
    _, one_at_a_time, _ = run(search(), judge)
    history, rounds, found = run(search(parallel=3), judge)
    assert truth * (1 - TOLERANCE) <= found.load <= truth and found.converged
    assert rounds < one_at_a_time
    assert len(history) <= 3 * rounds


def test_three_probes_at_a_time_bracket_and_narrow_evenly():
    config = search(parallel=3)
    assert next_loads(config, False, []) == [1.0, 2.0, 4.0]
    assert next_loads(search(parallel=3, max_load=3.0), False, []) == [1.0, 2.0, 3.0]
    passing = [Probe(x, True) for x in (1.0, 2.0, 4.0)]
    assert next_loads(config, False, passing) == [8.0, 16.0, 32.0]
    bracket = [*passing, Probe(8.0, False)]
    assert next_loads(config, False, bracket) == [5.0, 6.0, 7.0]
    failing = [Probe(x, False) for x in (1.0, 2.0, 4.0)]
    assert next_loads(config, False, failing) == [0.5, 0.25, 0.125]


def concurrency_server(truth: int):
    """Closed loop: TTFT p99 grows as the cube of the concurrency, to the limit at truth + 0.5."""
    return lambda n: probe(n, LIMIT_MS * (n / (truth + 0.5)) ** 3)


@pytest.mark.parametrize("truth", [1, 2, 9, 20, 57, 300])
@pytest.mark.parametrize("parallel", [1, 3])
def test_finds_a_concurrency_as_a_whole_number(truth, parallel):
    history, _, found = run(search(parallel=parallel), concurrency_server(truth), integer=True)
    assert all(p.load == int(p.load) and p.load >= 1 for p in history)
    assert len({p.load for p in history}) == len(history)
    assert truth * (1 - TOLERANCE) <= found.load <= truth and found.converged
    if found.load < truth:
        assert (found.failed_load - found.load) / found.failed_load <= TOLERANCE


def test_adjacent_concurrencies_end_the_search():
    history, _, found = run(search(), concurrency_server(2), integer=True)
    assert [p.load for p in history] == [1.0, 2.0, 4.0, 3.0]
    assert found.load == 2.0 and found.failed_load == 3.0
    assert found.reason.startswith("adjacent loads: passes at concurrency 2, fails at")


def test_a_small_growth_still_moves_a_concurrency():
    history, _, found = run(search(growth=1.2), concurrency_server(9), integer=True)
    assert [p.load for p in history][:5] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert found.load == 9.0


@pytest.mark.parametrize("parallel", [1, 3])
def test_noise_does_not_loop_and_stays_near_the_truth(parallel):
    """The server's speed varies +-15% from probe to probe.

    Probes in parallel then see passes above failures; one at a time they cannot (each lands
    inside the bracket the others left).
    """
    latency_ms, truth = queue_latency_ms(20, 1000), 20 - 1000 / LIMIT_MS
    non_monotone = 0
    for seed in range(40):
        rng = random.Random(seed)

        def noisy(load, rng=rng):
            return probe(load, latency_ms(load * rng.uniform(0.85, 1.15)))

        history, _, found = run(search(max_probes=20, parallel=parallel), noisy)
        assert len(history) <= 20
        assert 0.8 * truth <= found.load <= truth / 0.85  # a pass is at most 15% lucky
        non_monotone += "non-monotone" in found.reason
    assert non_monotone > 0 if parallel > 1 else non_monotone == 0


def test_a_pass_above_a_failure_is_read_by_the_highest_pass():
    history = [Probe(1.0, True), Probe(2.0, False), Probe(4.0, True), Probe(8.0, False)]
    found = capacity(search(), history)
    assert (found.load, found.failed_load) == (4.0, 8.0)
    assert "non-monotone: failures at 2 below the capacity ignored" in found.reason
    assert 4.0 < next_loads(search(), False, history)[0] < 8.0


def test_max_probes_cuts_the_search_with_the_best_bracket():
    judge, truth = queue_server(200, 5000)
    history, _, found = run(search(max_probes=5), judge)
    assert [p.load for p in history] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert found.load == 16.0 and found.failed_load is None and not found.converged
    assert found.reason == (
        "max_probes reached before tolerance: passes at every load probed, up to 16 req/s"
    )
    history, _, found = run(search(max_probes=10), judge)
    assert len(history) == 10 and not found.converged
    assert found.reason.startswith("max_probes reached before tolerance: passes at")
    assert found.load <= truth < found.failed_load


def test_failing_at_the_lowest_load_is_capacity_zero():
    judge = lambda load: probe(load, 900.0)  # noqa: E731
    history, _, found = run(search(), judge)
    assert [p.load for p in history] == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert (found.load, found.passed_load, found.failed_load) == (0.0, None, 0.0625)
    assert found.converged
    assert found.reason == (
        "fails the SLO at the lowest load probed (0.0625 req/s): ttft_ms_p99 900 > 500"
    )
    _, _, found = run(search(min_load=0.3, start=2.0), judge)
    assert found.failed_load == 0.3 and found.load == 0.0


def test_passing_at_max_load_ends_the_search_there():
    history, _, found = run(search(max_load=10.0), lambda load: probe(load, 100.0))
    assert [p.load for p in history] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert found.load == 10.0 and found.converged
    assert found.reason == "max_load reached: passes at max_load (10 req/s)"


def test_a_resumed_search_replays_the_same_choices():
    judge, _ = queue_server(37, 50)
    config = search(parallel=2)
    history, _, _ = run(config, judge)
    n = 0
    while n < len(history):
        loads = next_loads(config, False, history[:n])
        assert loads == [p.load for p in history[n : n + len(loads)]]
        n += len(loads)
    assert next_step(config, False, history).phase == "done"


def narrow(lo_margin, hi_margin, achieved=None, integer=False):
    history = [Probe(8.0, True, lo_margin), Probe(16.0, False, hi_margin, achieved)]
    step = next_step(search(), integer, history)
    assert step.phase == "narrow"
    return step.loads[0]


def test_narrowing_interpolates_the_margin_inside_a_safeguard():
    assert narrow(0.5, -0.5) == 12.0  # where the margin crosses 0
    assert narrow(0.3, -0.1) == 14.0
    assert narrow(0.99, -0.01) == 15.2  # no nearer hi than a tenth of the bracket
    assert narrow(0.01, -0.5) == 8.8  # nor nearer lo
    assert narrow(0.5, -40.0) == 10.7  # a margin past -1 reads as -1 (10.67, tidied)
    assert narrow(None, -0.5) == 12.0  # no margin: bisection
    assert narrow(0.5, math.inf * -1) == 12.0


def test_narrowing_stays_below_the_rate_a_saturated_probe_achieved():
    assert narrow(None, None, achieved=10.0) == 10.0
    assert narrow(0.5, -0.5, achieved=11.0) == 11.0
    assert narrow(0.5, -0.5, achieved=20.0) == 12.0
    assert narrow(0.5, -0.5, achieved=11.0, integer=True) == 12.0  # not a rate


def test_narrowing_bisects_when_interpolation_crawls():
    history = [
        Probe(8.0, True, 0.9),
        Probe(16.0, False, -50.0),
        Probe(8.8, True, 0.88),
        Probe(9.6, True, 0.86),
    ]
    assert next_loads(search(), False, history) == [12.8]


def test_profile_loads_lie_strictly_between_the_two_rates():
    assert profile_loads(search(points=4), 1.0, 11.0) == pytest.approx([3.0, 5.0, 7.0, 9.0])
    geometric = search(points=3, spacing="geometric")
    assert profile_loads(geometric, 1.0, 16.0) == pytest.approx([2.0, 4.0, 8.0])
    assert profile_loads(search(), 5.0, 5.0) == []
    assert profile_loads(geometric, 0.0, 5.0) == []
    assert profile_loads(search(points=1), 0.0, 5.0) == [2.5]
