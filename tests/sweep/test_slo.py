"""A trial against its SLO: the verdict, its margin and reason, the names a limit may use, and
the attained fraction the summary computes for goodput SLOs."""

import math

import pandas as pd
import pytest

from sweep.core import records as rec
from sweep.core.config import SLOConfig
from sweep.core.errors import ConfigError
from sweep.core.slo import Verdict, check_names, known_limit_columns, verdict
from sweep.core.summary import summarize

OK = {rec.TRIAL_STATUS: rec.STATUS_OK}


def test_a_trial_inside_every_limit_passes_with_its_tightest_margin():
    slo = SLOConfig(ttft_ms_p99=500, tpot_ms_p99=50)
    result = verdict(slo, {**OK, "ttft_ms_p99": 400.0, "tpot_ms_p99": 45.0})
    assert result == Verdict(True, pytest.approx(0.1), "tpot_ms_p99 45 <= 50")


def test_a_value_on_its_limit_passes_with_margin_zero():
    result = verdict(SLOConfig(ttft_ms_p99=500), {**OK, "ttft_ms_p99": 500.0})
    assert result.passed and result.margin == 0.0


def test_the_reason_names_the_bound_missed_by_most():
    slo = SLOConfig(ttft_ms_p99=500, tpot_ms_p99=50)
    result = verdict(slo, {**OK, "ttft_ms_p99": 812.4, "tpot_ms_p99": 55.0})
    assert not result.passed
    assert result.margin == pytest.approx((500 - 812.4) / 500)
    assert result.reason == "ttft_ms_p99 812.4 > 500"


def test_limits_bound_any_named_column():
    slo = SLOConfig(limits={rec.latency_column(rec.SERVER_QUEUE, "p99"): 100})
    result = verdict(slo, {**OK, "server_queue_ms_p99": 150.0})
    assert result == Verdict(False, pytest.approx(-0.5), "server_queue_ms_p99 150 > 100")


def test_the_goodput_fraction_is_a_lower_bound():
    slo = SLOConfig(ttft_ms=500, goodput_fraction=0.95)
    missed = verdict(slo, {**OK, rec.SLO_ATTAINED_FRACTION: 0.91})
    assert missed == Verdict(
        False, pytest.approx((0.91 - 0.95) / 0.95), "slo_attained_fraction 0.91 < 0.95"
    )
    met = verdict(slo, {**OK, rec.SLO_ATTAINED_FRACTION: 0.99})
    assert met.passed and met.margin == pytest.approx(0.04 / 0.95)


def test_large_values_read_as_whole_numbers():
    result = verdict(SLOConfig(e2e_ms_p99=10000), {**OK, "e2e_ms_p99": 12345.67})
    assert result.reason == "e2e_ms_p99 12346 > 10000"


@pytest.mark.parametrize("value", ["missing", None, math.nan])
def test_an_unmeasured_value_fails_its_bound(value):
    slo = SLOConfig(ttft_ms_p99=500, tpot_ms_p99=50)
    row = {**OK, "tpot_ms_p99": 500.0}  # far over, but the unmeasured bound is named first
    if value != "missing":
        row["ttft_ms_p99"] = value
    assert verdict(slo, row) == Verdict(False, None, "ttft_ms_p99 not measured")


def test_a_failed_trial_fails_with_its_error():
    row = {
        rec.TRIAL_STATUS: rec.STATUS_FAILED,
        rec.ERROR_KIND: rec.ERROR_TIMEOUT,
        rec.ERROR_MESSAGE: "no token in 60 s\nTraceback ...",
        "ttft_ms_p99": 1.0,
    }
    result = verdict(SLOConfig(ttft_ms_p99=500), row)
    assert result == Verdict(False, None, "trial failed (timeout): no token in 60 s")
    from_parquet = {rec.TRIAL_STATUS: rec.STATUS_FAILED, rec.ERROR_KIND: math.nan}
    assert verdict(SLOConfig(ttft_ms_p99=500), from_parquet).reason == "trial failed"


def test_without_bounds_every_trial_passes():
    assert verdict(SLOConfig(), OK) == Verdict(True, None, "no SLO bound set")


def test_check_names_accepts_every_known_column():
    limits = {column: 1.0 for column in known_limit_columns()}
    check_names(SLOConfig(ttft_ms_p99=500, tpot_ms_p90=20, limits=limits))


def test_check_names_suggests_the_column_meant():
    with pytest.raises(ConfigError) as error:
        check_names(SLOConfig(limits={"server_queue_ms_p999": 100}))
    message = str(error.value)
    assert message.startswith("slo.limits.server_queue_ms_p999: ")
    assert "did you mean server_queue_ms_p99" in message and "\n" not in message


def test_check_names_without_a_close_match_gives_examples():
    with pytest.raises(ConfigError, match=r"slo.limits.joules: .* e\.g\. ttft_ms_mean"):
        check_names(SLOConfig(limits={"joules": 5}))


def test_check_names_reads_the_columns_it_is_given():
    check_names(SLOConfig(limits={"joules": 5}), known_columns=["joules"])
    with pytest.raises(ConfigError, match="slo.ttft_ms_p99"):
        check_names(SLOConfig(ttft_ms_p99=500), known_columns=["joules"])


def test_every_limit_column_is_a_summary_column():
    empty = pd.DataFrame(columns=rec.REQUESTS_SCHEMA.names)
    summary = summarize(empty, num_gpus=1, price_per_hour=1.0)
    known = set(known_limit_columns())
    assert known <= set(summary)
    latencies = {rec.latency_column(m, s) for m in rec.LATENCY_METRICS for s in rec.LATENCY_STATS}
    server = {
        rec.latency_column(r, s) for r in rec.SERVER_LATENCIES for s in rec.SERVER_LATENCY_STATS
    }
    assert latencies | server <= known
    assert set(SLOConfig(**{c: 1.0 for c in latencies}).trial_limits()) == latencies


# --- the attained fraction (sweep.core.summary) ---


def make_requests() -> pd.DataFrame:
    """Five requests; the last is outside the steady-state window.

    idx ttft_s e2e_s out  tpot_ms  status
    0   0.1    1.0   10   100      ok
    1   0.6    1.5   10   100      ok      TTFT 600 ms
    2   0.2    0.2   1    -        ok      single token: no TPOT
    3   -      2.0   0    -        failed  counts as a miss
    4   0.05   0.5   10   50       ok      out of window: not counted
    """
    rows = [
        (0, 0.1, 1.0, 10, rec.STATUS_OK, True),
        (1, 0.6, 1.5, 10, rec.STATUS_OK, True),
        (2, 0.2, 0.2, 1, rec.STATUS_OK, True),
        (3, None, 2.0, 0, rec.STATUS_FAILED, True),
        (4, 0.05, 0.5, 10, rec.STATUS_OK, False),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[rec.REQUEST_IDX, rec.TTFT_S, rec.E2E_S, rec.OUTPUT_TOKENS, rec.STATUS,
                 rec.IN_WINDOW],
    )  # fmt: skip
    frame[rec.TRIAL_ID] = "t0"
    frame[rec.BATCH_IDX] = None
    frame[rec.SCHEDULED_S] = frame[rec.SENT_S] = 0.0
    frame[rec.FIRST_TOKEN_S] = frame[rec.TTFT_S]
    frame[rec.END_S] = frame[rec.E2E_S]
    frame[rec.TPOT_S] = None
    frame[rec.ITL_S] = None
    frame[rec.INPUT_TOKENS] = 8
    frame[rec.REQUESTED_OUTPUT_TOKENS] = frame[rec.SERVER_OUTPUT_TOKENS] = None
    frame[rec.ERROR] = None
    return frame.reindex(columns=rec.REQUESTS_SCHEMA.names)  # columns added later: null


def fraction(slo):
    return summarize(make_requests(), num_gpus=1, price_per_hour=1.0, slo=slo)[
        rec.SLO_ATTAINED_FRACTION
    ]


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"ttft_ms": 500.0}, 2 / 4),  # r1 misses, the failed r3 misses
        ({"ttft_ms": 500.0, "tpot_ms": 50.0}, 1 / 4),  # and r0's TPOT
        ({"e2e_ms": 1000.0}, 2 / 4),
        ({"ttft_ms": None}, None),
        ({}, None),
        (None, None),
    ],
)
def test_attained_fraction_counts_failed_requests_as_misses(bounds, expected):
    if expected is None:
        assert fraction(bounds) is None
    else:
        assert fraction(bounds) == pytest.approx(expected)


def test_attained_fraction_of_no_request_is_none():
    empty = make_requests().iloc[0:0]
    summary = summarize(empty, num_gpus=1, price_per_hour=1.0, slo={"ttft_ms": 500.0})
    assert summary[rec.SLO_ATTAINED_FRACTION] is None


def test_the_per_request_bounds_of_a_full_slo_feed_the_summary():
    """The trial passes `request_bounds()`: the trial-level keys never reach `meets_slo`."""
    slo = SLOConfig(
        ttft_ms=500, goodput_fraction=0.9, ttft_ms_p99=800, limits={"server_queue_ms_p99": 10}
    )
    assert fraction(slo.request_bounds()) == pytest.approx(2 / 4)
    summary = summarize(make_requests(), num_gpus=1, price_per_hour=1.0, slo=slo.request_bounds())
    assert verdict(slo, {**OK, **summary}).reason == "server_queue_ms_p99 not measured"
    row = {**OK, **summary, "ttft_ms_p99": 700.0, "server_queue_ms_p99": 5.0}
    assert verdict(slo, row) == Verdict(
        False, pytest.approx((0.5 - 0.9) / 0.9), "slo_attained_fraction 0.5 < 0.9"
    )
