"""Summary metrics against values worked out by hand.

Trial of 4 requests (times in s from the trial start; price 2 USD per GPU-hour):

    idx batch sched sent  first end  out itl_s                 note
    0   0     0.0   0.0   0.5   1.5  5   [.25, .25, .25, .25]  server says 6 tokens
    1   0     0.0   0.1   0.3   1.3  4   [.5, .25, .25]        last chunk carried 2 tokens;
                                                               asked for 5 -> short output
    2   1     0.2   0.2   2.0   2.0  1   []                    single token: no TPOT
    3   1     0.3   0.3   -     3.0  0   -                     failed (its end must not count)
"""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.stats.intervals import aggregate_repeats, confidence_interval
from sweep.core import records as rec
from sweep.core.records import latency_column as col
from sweep.core.summary import summarize

PRICE = 2.0


def make_requests() -> pd.DataFrame:
    rows = [
        (0, 0, 0.0, 0.0, 0.5, 1.5, 10, 5, 5, 6, [0.25, 0.25, 0.25, 0.25], rec.STATUS_OK),
        (1, 0, 0.0, 0.1, 0.3, 1.3, 20, 4, 5, 4, [0.5, 0.25, 0.25], rec.STATUS_OK),
        (2, 1, 0.2, 0.2, 2.0, 2.0, 30, 1, 1, None, [], rec.STATUS_OK),
        (3, 1, 0.3, 0.3, None, 3.0, 40, 0, 5, None, None, rec.STATUS_FAILED),
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            rec.REQUEST_IDX, rec.BATCH_IDX, rec.SCHEDULED_S, rec.SENT_S, rec.FIRST_TOKEN_S,
            rec.END_S, rec.INPUT_TOKENS, rec.OUTPUT_TOKENS, rec.REQUESTED_OUTPUT_TOKENS,
            rec.SERVER_OUTPUT_TOKENS, rec.ITL_S, rec.STATUS,
        ],
    )  # fmt: skip
    frame[rec.TRIAL_ID] = "t0"
    frame[rec.TTFT_S] = frame[rec.FIRST_TOKEN_S] - frame[rec.SENT_S]
    frame[rec.E2E_S] = frame[rec.END_S] - frame[rec.SENT_S]
    frame[rec.TPOT_S] = None
    frame[rec.ERROR] = frame[rec.STATUS].map({rec.STATUS_FAILED: "HTTP 500"})
    frame[rec.IN_WINDOW] = True
    return frame.reindex(columns=rec.REQUESTS_SCHEMA.names)  # columns added later: null


def make_timeseries() -> pd.DataFrame:
    rows = [
        (0.0, "process", rec.PROCESS_RSS_MB, 100.0),
        (1.0, "process", rec.PROCESS_RSS_MB, 300.0),
        (2.0, "process", rec.PROCESS_RSS_MB, 200.0),
        (0.0, "server", rec.KV_CACHE_USAGE_PERCENT, 10.0),
        (1.0, "server", rec.KV_CACHE_USAGE_PERCENT, 30.0),
    ]
    frame = pd.DataFrame(rows, columns=[rec.T_S, rec.SOURCE, rec.METRIC, rec.VALUE])
    frame[rec.TRIAL_ID] = "t0"
    return frame


@pytest.fixture
def summary():
    return summarize(
        make_requests(), num_gpus=1, price_per_hour=PRICE, timeseries=make_timeseries()
    )


def test_counts_duration_and_throughputs(summary):
    assert summary[rec.NUM_REQUESTS] == 4
    assert summary[rec.COMPLETED_REQUESTS] == 3
    assert summary[rec.FAILED_REQUESTS] == 1
    # First send 0.0 to last end of an OK request 2.0; the failed one ended at 3.0.
    assert summary[rec.DURATION_S] == pytest.approx(2.0)
    assert summary[rec.REQUEST_THROUGHPUT] == pytest.approx(3 / 2.0)
    assert summary[rec.OUTPUT_TOKENS_TOTAL] == 5 + 4 + 1
    assert summary[rec.INPUT_TOKENS_TOTAL] == 10 + 20 + 30  # failed request's 40 excluded
    assert summary[rec.OUTPUT_THROUGHPUT] == pytest.approx(10 / 2.0)
    assert summary[rec.TOTAL_THROUGHPUT] == pytest.approx((60 + 10) / 2.0)


def test_peak_output_throughput_uses_one_second_buckets(summary):
    # Token times: r0 0.5 .75 1.0 1.25 1.5; r1 0.3 .8 1.05 1.3; r2 2.0
    # -> bucket [0,1): 4 tokens, [1,2): 5 tokens, [2,3): 1 token.
    assert summary[rec.PEAK_OUTPUT_THROUGHPUT] == pytest.approx(5.0)


def test_ttft_and_e2e(summary):
    # TTFT 500, 200, 1800 ms; E2E 1500, 1200, 1800 ms (the failed request has none).
    assert summary[col("ttft", "mean")] == pytest.approx((500 + 200 + 1800) / 3)
    assert summary[col("ttft", "median")] == pytest.approx(500)
    assert summary[col("ttft", "p90")] == pytest.approx(500 + 0.8 * 1300)  # rank 1.8
    assert summary[col("ttft", "p99")] == pytest.approx(500 + 0.98 * 1300)  # rank 1.98
    assert summary[col("e2e", "mean")] == pytest.approx(1500)
    assert summary[col("e2e", "median")] == pytest.approx(1500)


def test_tpot_skips_single_token_requests(summary):
    # r0 (1.5 - 0.5) / 4 = 250 ms; r1 (1.2 - 0.2) / 3 = 333.3 ms; r2 has one token.
    assert summary[col("tpot", "mean")] == pytest.approx((250 + 1000 / 3) / 2)
    assert summary[col("tpot", "median")] == pytest.approx((250 + 1000 / 3) / 2)


def test_itl_flattens_gaps_of_every_request(summary):
    # 250 x 4 from r0, then 500, 250, 250 from r1 (its 2-token chunk is two 250 ms gaps).
    assert summary[col("itl", "mean")] == pytest.approx(2000 / 7)
    assert summary[col("itl", "median")] == pytest.approx(250)
    assert summary[col("itl", "p90")] == pytest.approx(250 + 0.4 * 250)  # rank 5.4 of 0..6
    assert summary[col("itl", "p99")] == pytest.approx(250 + 0.94 * 250)


def test_cost_client_lag_batches_and_token_checks(summary):
    assert summary[rec.COST_PER_1M_OUTPUT] == pytest.approx(1 * 2.0 / 3600 / 5.0 * 1e6)
    assert summary[rec.CLIENT_LAG_MS_MEAN] == pytest.approx(100 / 4)  # r1 sent 0.1 s late
    assert summary[rec.CLIENT_LAG_MS_MAX] == pytest.approx(100)
    # Batch 0: 1.5 - 0.0; batch 1 (OK requests only): 2.0 - 0.2.
    assert summary[rec.BATCH_LATENCY_S_MEAN] == pytest.approx((1.5 + 1.8) / 2)
    assert summary[rec.TOKEN_MISMATCH_REQUESTS] == 1
    assert summary[rec.SHORT_OUTPUT_REQUESTS] == 1


def test_cost_counts_gpus_and_prices_cpu_as_one():
    two = summarize(make_requests(), num_gpus=2, price_per_hour=PRICE)
    cpu = summarize(make_requests(), num_gpus=0, price_per_hour=PRICE)
    assert two[rec.COST_PER_1M_OUTPUT] == pytest.approx(2 * 2.0 / 3600 / 5.0 * 1e6)
    assert cpu[rec.COST_PER_1M_OUTPUT] == pytest.approx(2.0 / 3600 / 5.0 * 1e6)


def test_resources_from_timeseries(summary):
    assert summary[rec.PEAK_RSS_MB] == 300.0
    assert summary[rec.PEAK_GPU_MEMORY_MB] is None
    assert summary[rec.MEAN_KV_CACHE_USAGE] == pytest.approx(20.0)
    assert summary[rec.PEAK_KV_CACHE_USAGE] == 30.0
    bare = summarize(make_requests(), num_gpus=1, price_per_hour=PRICE)
    assert bare[rec.PEAK_RSS_MB] is None and bare[rec.MEAN_KV_CACHE_USAGE] is None


@pytest.mark.parametrize(
    ("slo", "expected"),
    [
        (None, None),
        ({"ttft_ms": None, "tpot_ms": None, "e2e_ms": None}, None),
        ({"ttft_ms": 1000.0}, 2 / 2.0),  # r2 (TTFT 1800 ms) misses
        ({"ttft_ms": 1000.0, "tpot_ms": 300.0, "e2e_ms": None}, 1 / 2.0),  # and r1 (333 ms)
        ({"tpot_ms": 300.0}, 2 / 2.0),  # r2 has no TPOT and so meets it, as in vLLM
    ],
)
def test_goodput(slo, expected):
    summary = summarize(make_requests(), num_gpus=1, price_per_hour=PRICE, slo=slo)
    if expected is None:
        assert summary[rec.GOODPUT] is None
    else:
        assert summary[rec.GOODPUT] == pytest.approx(expected)


@pytest.mark.parametrize("requests", ["all_failed", "empty"])
def test_no_completed_requests(requests):
    frame = make_requests()
    if requests == "all_failed":
        frame[rec.STATUS] = rec.STATUS_FAILED
    else:
        frame = frame.iloc[0:0]
    summary = summarize(frame, num_gpus=1, price_per_hour=PRICE, slo={"ttft_ms": 100.0})
    assert summary[rec.COMPLETED_REQUESTS] == 0
    assert summary[rec.DURATION_S] == 0.0
    for key in (rec.REQUEST_THROUGHPUT, rec.OUTPUT_THROUGHPUT, rec.TOTAL_THROUGHPUT,
                rec.PEAK_OUTPUT_THROUGHPUT, rec.GOODPUT):  # fmt: skip
        assert summary[key] == 0.0
    assert summary[rec.COST_PER_1M_OUTPUT] is None
    assert summary[rec.BATCH_LATENCY_S_MEAN] is None
    for metric in rec.LATENCY_METRICS:
        for stat in rec.LATENCY_STATS:
            assert summary[col(metric, stat)] is None


def test_cache_hit_percent_counts_the_requests_a_proxy_marked():
    frame = make_requests()
    assert summarize(frame, num_gpus=1, price_per_hour=PRICE)[rec.CACHE_HIT_PERCENT] is None
    frame[rec.CACHE_HIT] = [True, False, None, True]  # one unmarked: a request the cache skipped
    frame.loc[3, rec.IN_WINDOW] = False  # out of the window: not counted
    hit = summarize(frame, num_gpus=1, price_per_hour=PRICE)[rec.CACHE_HIT_PERCENT]
    assert hit == pytest.approx(50.0) and type(hit) is float


def test_every_summary_value_is_a_plain_python_scalar(summary):
    expected_keys = {col(m, s) for m in rec.LATENCY_METRICS for s in rec.LATENCY_STATS}
    assert expected_keys <= set(summary)
    assert all(v is None or type(v) in (int, float, str) for v in summary.values())


def test_confidence_interval_on_known_values():
    # mean 3, sample sd sqrt(2.5), t(0.975, 4 df) = 2.776 -> half width 2.776 * sqrt(2.5 / 5).
    mean, low, high = confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5 / 5)
    assert mean == pytest.approx(3.0)
    assert low == pytest.approx(3.0 - half, rel=1e-3)
    assert high == pytest.approx(3.0 + half, rel=1e-3)


def test_confidence_interval_large_sample_uses_normal_quantile():
    values = [0.0, 1.0] * 50  # n = 100, sd = sqrt(100 / 4 / 99)
    mean, low, high = confidence_interval(values)
    assert mean == pytest.approx(0.5)
    assert high - mean == pytest.approx(1.96 * math.sqrt(25 / 99) / 10, rel=2e-2)


def test_confidence_interval_degenerate_inputs():
    mean, low, high = confidence_interval([4.0, None, float("nan")])
    assert mean == 4.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in confidence_interval([]))


def test_aggregate_repeats():
    summary = pd.DataFrame(
        {
            rec.BACKEND_NAME: ["hf", "hf", "hf", "vllm"],
            rec.REPEAT: [0, 1, 2, 0],
            rec.OUTPUT_THROUGHPUT: [1.0, 2.0, 3.0, 10.0],
        }
    )
    agg = aggregate_repeats(summary, [rec.BACKEND_NAME], [rec.OUTPUT_THROUGHPUT])
    mean, low, high = (rec.ci_column(rec.OUTPUT_THROUGHPUT, s) for s in rec.CI_STATS)
    hf = agg[agg[rec.BACKEND_NAME] == "hf"].iloc[0]
    assert hf[rec.NUM_REPEATS] == 3
    assert hf[mean] == pytest.approx(2.0)
    assert hf[high] - hf[mean] == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert hf[mean] - hf[low] == pytest.approx(hf[high] - hf[mean])
    vllm = agg[agg[rec.BACKEND_NAME] == "vllm"].iloc[0]
    assert vllm[mean] == 10.0 and np.isnan(vllm[low])


def test_reasoning_totals_answer_latencies_and_an_answer_bound():
    frame = make_requests()
    # none of it recorded (records written before reasoning was): no totals, no answer times
    old = summarize(frame, num_gpus=1, price_per_hour=PRICE)
    assert old[rec.REASONING_TOKENS_TOTAL] is None and old[col(rec.ANSWER, "p99")] is None
    frame[rec.REASONING_TOKENS] = [3, 4, 0, 2]  # request 1 only thought; 3 failed: not counted
    frame[rec.ANSWER_TOKENS] = [2, 0, 1, 0]
    frame[rec.ANSWER_S] = [0.9, None, 1.8, None]
    summary = summarize(frame, num_gpus=1, price_per_hour=PRICE, slo={"answer_ms": 1000.0})
    assert (summary[rec.REASONING_TOKENS_TOTAL], summary[rec.ANSWER_TOKENS_TOTAL]) == (7, 3)
    assert summary[col(rec.ANSWER, "mean")] == pytest.approx(1350.0)
    assert summary[col(rec.ANSWER, "median")] == pytest.approx(1350.0)
    # only request 0 saw its answer within 1 s: request 1 never did, request 2 at 1.8 s
    assert summary[rec.SLO_ATTAINED_FRACTION] == pytest.approx(1 / 4)
    assert summary[rec.GOODPUT] == pytest.approx(1 / 2.0)


def test_streams_read_in_one_read_are_counted(summary):
    """None of the trial's streams came at one instant: r2's single token has no gap at all."""
    assert summary[rec.ONE_READ_REQUESTS] == 0
    requests = make_requests()
    # r0's five tokens all stamped at 1.5 s: four gaps of 0, one read carried the whole stream.
    requests.at[0, rec.ITL_S] = [0.0, 0.0, 0.0, 0.0]
    requests.at[1, rec.ITL_S] = [0.5, 0.0, 0.0]  # two reads: not a one-read stream
    one = summarize(requests, num_gpus=1, price_per_hour=PRICE)
    assert one[rec.ONE_READ_REQUESTS] == 1


def test_output_length_against_the_dataset(summary):
    # Completed: outputs 5 + 4 + 1 = 10 against 5 + 5 + 1 = 11 asked: -9.09%.
    assert summary[rec.OUTPUT_LENGTH_OFF_PERCENT] == pytest.approx(100 * (10 / 11 - 1))
    requests = make_requests()
    requests[rec.REQUESTED_OUTPUT_TOKENS] = None
    assert (
        summarize(requests, num_gpus=1, price_per_hour=PRICE)[rec.OUTPUT_LENGTH_OFF_PERCENT] is None
    )
