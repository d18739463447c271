"""The parity report's interval of the median TTFT difference resamples rounds, not requests."""

import numpy as np

from sweep.tools.parity_report import REF, Round, bootstrap_ci, print_server_side


def rounds(centres: list[float], seed: int) -> list[Round]:
    """Rounds of 200 requests each, tight around their own centre (ms)."""
    rng = np.random.default_rng(seed)
    return [Round(1000.0, list(rng.normal(c, 1.0, 200))) for c in centres]


def test_rounds_that_scatter_give_an_interval_as_wide_as_their_scatter():
    # a closed loop's rounds fall near one of two TTFTs, for both clients alike (five of eight
    # near 100 ms): the pooled medians agree to 0.1%, but another eight rounds could put either
    # client's majority near 140 ms
    ours = rounds([100, 140, 100, 100, 140, 100, 140, 100], seed=1)
    ref = rounds([140, 100, 100, 140, 100, 100, 100, 140], seed=2)
    low, high = bootstrap_ci(ours, ref)
    assert low < -0.15 and high > 0.15  # resampling requests gives -0.1% .. +0.2%


def test_rounds_that_agree_give_a_tight_interval_around_the_difference():
    ours = rounds([101, 121.2, 111.1, 106.05], seed=3)  # 1% above each round of the reference
    ref = rounds([100, 120, 110, 105], seed=4)
    low, high = bootstrap_ci(ours, ref)
    assert -0.02 < low <= 0.01 <= high < 0.04


def test_the_server_side_is_compared_paired_by_round(capsys):
    ours, ref = rounds([100, 110, 120], seed=5), rounds([100, 100, 100], seed=6)
    for o, r, (mine, theirs) in zip(ours, ref, [(110, 100), (99, 90), (120, 100)], strict=True):
        o.server_mean_ms, r.server_mean_ms = mine, theirs
        o.server_cpu_s, r.server_cpu_s = 20.0, 20.0
    print_server_side({REF: ref, "ours": ours}, [REF, "ours"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("server's own mean TTFT, ours against vllm bench, paired by round:")
    assert "+10.0% (95% interval +10.0% .. +20.0%), higher in 3 of 3" in lines[0]
    assert (
        "server's CPU seconds" in lines[1]
        and "+0.0%" in lines[1]
        and "higher in 0 of 3" in lines[1]
    )
    ours[0].server_cpu_s = None  # a round without the server's CPU: that line is left out
    print_server_side({REF: ref, "ours": ours}, [REF, "ours"])
    assert len(capsys.readouterr().out.splitlines()) == 1
